"""Networking: the function reaches the gateway's private address and nothing reaches it from outside.

- a Serverless VPC Access connector, through which the function sends private-range traffic only;
- a firewall rule admitting the connector's /28 range, and nothing else, to the gateway's API port;
- a reserved internal address for the gateway (the function's IB_GATEWAY_HOST);
- Cloud Router + Cloud NAT, so the gateway (which has no external IP) can reach IB and pull its image.
"""
from __future__ import annotations

from deploy.config import DeployConfig
from deploy.steps import Ensure, Query, Remove, Step, gcloud


def network_steps(cfg: DeployConfig) -> list[Step]:
    """Connector, firewall rule, reserved address (GATEWAY_IP), router and NAT."""
    region = f'--region={cfg.region}'
    reserve = ['compute', 'addresses', 'create', cfg.gateway_address, region, f'--subnet={cfg.subnet}']
    if cfg.gateway_internal_ip:
        reserve.append(f'--addresses={cfg.gateway_internal_ip}')
    firewall = (f'--source-ranges={cfg.connector_range}', f'--rules=tcp:{cfg.gateway_port}',
                f'--target-tags={cfg.gateway_tag}')
    return [
        Ensure(f'VPC connector {cfg.connector}',
               probe=gcloud(cfg.project, 'compute', 'networks', 'vpc-access', 'connectors', 'describe',
                            cfg.connector, region),
               create=(gcloud(cfg.project, 'compute', 'networks', 'vpc-access', 'connectors', 'create',
                              cfg.connector, region, f'--network={cfg.network}', f'--range={cfg.connector_range}',
                              '--min-instances=2', '--max-instances=3', '--machine-type=e2-micro'),)),
        Ensure(f'firewall rule {cfg.firewall_rule}',
               probe=gcloud(cfg.project, 'compute', 'firewall-rules', 'describe', cfg.firewall_rule),
               create=(gcloud(cfg.project, 'compute', 'firewall-rules', 'create', cfg.firewall_rule,
                              f'--network={cfg.network}', '--direction=INGRESS', '--action=ALLOW', '--priority=1000',
                              *firewall, '--description=IB API from the function connector only'),),
               update=(gcloud(cfg.project, 'compute', 'firewall-rules', 'update', cfg.firewall_rule, *firewall),)),
        Ensure(f'internal address {cfg.gateway_address}',
               probe=gcloud(cfg.project, 'compute', 'addresses', 'describe', cfg.gateway_address, region),
               create=(gcloud(cfg.project, *reserve),)),
        Query('GATEWAY_IP', gcloud(cfg.project, 'compute', 'addresses', 'describe', cfg.gateway_address, region,
                                   '--format=value(address)')),
        Ensure(f'router {cfg.router}',
               probe=gcloud(cfg.project, 'compute', 'routers', 'describe', cfg.router, region),
               create=(gcloud(cfg.project, 'compute', 'routers', 'create', cfg.router, region,
                              f'--network={cfg.network}'),)),
        Ensure(f'NAT {cfg.nat}',
               probe=gcloud(cfg.project, 'compute', 'routers', 'nats', 'describe', cfg.nat, f'--router={cfg.router}',
                            region),
               create=(gcloud(cfg.project, 'compute', 'routers', 'nats', 'create', cfg.nat, f'--router={cfg.router}',
                              region, '--auto-allocate-nat-external-ips', '--nat-all-subnet-ip-ranges'),)),
    ]


def remove_network(cfg: DeployConfig) -> list[Step]:
    """Delete NAT, router, address, firewall rule and connector (after the VM and the function)."""
    region = f'--region={cfg.region}'
    return [
        Remove(f'NAT {cfg.nat}',
               probe=gcloud(cfg.project, 'compute', 'routers', 'nats', 'describe', cfg.nat, f'--router={cfg.router}',
                            region),
               delete=(gcloud(cfg.project, 'compute', 'routers', 'nats', 'delete', cfg.nat, f'--router={cfg.router}',
                              region),)),
        Remove(f'router {cfg.router}',
               probe=gcloud(cfg.project, 'compute', 'routers', 'describe', cfg.router, region),
               delete=(gcloud(cfg.project, 'compute', 'routers', 'delete', cfg.router, region),)),
        Remove(f'internal address {cfg.gateway_address}',
               probe=gcloud(cfg.project, 'compute', 'addresses', 'describe', cfg.gateway_address, region),
               delete=(gcloud(cfg.project, 'compute', 'addresses', 'delete', cfg.gateway_address, region),)),
        Remove(f'firewall rule {cfg.firewall_rule}',
               probe=gcloud(cfg.project, 'compute', 'firewall-rules', 'describe', cfg.firewall_rule),
               delete=(gcloud(cfg.project, 'compute', 'firewall-rules', 'delete', cfg.firewall_rule),)),
        Remove(f'VPC connector {cfg.connector}',
               probe=gcloud(cfg.project, 'compute', 'networks', 'vpc-access', 'connectors', 'describe',
                            cfg.connector, region),
               delete=(gcloud(cfg.project, 'compute', 'networks', 'vpc-access', 'connectors', 'delete',
                              cfg.connector, region),)),
    ]
