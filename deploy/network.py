"""Networking: the function reaches the gateway's private address and nothing reaches it from outside.

- a Serverless VPC Access connector, through which the function sends private-range traffic only;
- a firewall rule admitting the connector's /28 range to the gateway's API port, and one below it
  denying every other source the gateway's API ports: a network's own broad rules (the `default`
  network's `default-allow-internal` admits 10.128.0.0/9 on all ports at priority 65534) rank
  below the deny, so no other VM reaches the unauthenticated API (the VM's iptables admit the
  connector's range only, too);
- a reserved internal address for the gateway (the function's IB_GATEWAY_HOST);
- Cloud Router + Cloud NAT, so the gateway (which has no external IP) can reach IB and pull its image.
"""
from __future__ import annotations

from deploy.config import GATEWAY_PORTS, DeployConfig
from deploy.steps import Ensure, Query, Remove, Step, gcloud

# Lower numbers win. The connector's allow outranks the deny, which outranks any rule at 2001-65535,
# such as the default network's default-allow-internal (65534).
ALLOW_PRIORITY = 1000
DENY_PRIORITY = 2000
# IB Gateway's own API ports (4001 live, 4002 paper) and the image's socat relays (4003, 4004).
API_PORTS = f'tcp:{min(GATEWAY_PORTS.values()) - 2}-{max(GATEWAY_PORTS.values())}'


def network_steps(cfg: DeployConfig) -> list[Step]:
    """Connector, firewall rule, reserved address (GATEWAY_IP), router and NAT."""
    region = f'--region={cfg.region}'
    reserve = ['compute', 'addresses', 'create', cfg.gateway_address, region, f'--subnet={cfg.subnet}']
    if cfg.gateway_internal_ip:
        reserve.append(f'--addresses={cfg.gateway_internal_ip}')
    firewall = (f'--source-ranges={cfg.connector_range}', f'--rules=tcp:{cfg.gateway_port}',
                f'--target-tags={cfg.gateway_tag}', f'--priority={ALLOW_PRIORITY}')
    deny = ('--source-ranges=0.0.0.0/0', f'--rules={API_PORTS}', f'--target-tags={cfg.gateway_tag}',
            f'--priority={DENY_PRIORITY}')
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
                              f'--network={cfg.network}', '--direction=INGRESS', '--action=ALLOW',
                              *firewall, '--description=IB API from the function connector only'),),
               update=(gcloud(cfg.project, 'compute', 'firewall-rules', 'update', cfg.firewall_rule, *firewall),)),
        Ensure(f'firewall rule {cfg.firewall_deny_rule}',
               probe=gcloud(cfg.project, 'compute', 'firewall-rules', 'describe', cfg.firewall_deny_rule),
               create=(gcloud(cfg.project, 'compute', 'firewall-rules', 'create', cfg.firewall_deny_rule,
                              f'--network={cfg.network}', '--direction=INGRESS', '--action=DENY', *deny,
                              '--description=IB API ports closed to everything but the connector rule above'),),
               update=(gcloud(cfg.project, 'compute', 'firewall-rules', 'update', cfg.firewall_deny_rule, *deny),)),
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
        *(Remove(f'firewall rule {rule}',
                 probe=gcloud(cfg.project, 'compute', 'firewall-rules', 'describe', rule),
                 delete=(gcloud(cfg.project, 'compute', 'firewall-rules', 'delete', rule),))
          for rule in (cfg.firewall_rule, cfg.firewall_deny_rule)),
        Remove(f'VPC connector {cfg.connector}',
               probe=gcloud(cfg.project, 'compute', 'networks', 'vpc-access', 'connectors', 'describe',
                            cfg.connector, region),
               delete=(gcloud(cfg.project, 'compute', 'networks', 'vpc-access', 'connectors', 'delete',
                              cfg.connector, region),)),
    ]
