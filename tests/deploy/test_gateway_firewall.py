"""Who can reach the gateway's unauthenticated API port, from what the deploy really sends and runs.

VPC firewall rules are evaluated as Google documents them (https://cloud.google.com/firewall/docs/firewalls,
"priority order" and the implied rules): of the rules whose direction, target, source range, protocol and
port match, the one with the lowest priority number decides, a deny beating an allow of equal priority;
without a match the implied deny-ingress applies. The rules are the firewall bodies gcloud sent in the
contract run, together with the rules an auto-mode `default` network already has (which the deploy never
creates, so never sends). Then the VM's own iptables rule, from the startup script run as the VM runs it.
"""
from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from tests.deploy.test_gateway_startup import google, run_script  # noqa: F401  (google is a fixture)

GATEWAY_TAGS = ['ib-jobs-gateway']
CONNECTOR_ADDRESS = '10.8.0.5'          # inside CONNECTOR_RANGE 10.8.0.0/28
OTHER_VM = '10.128.0.7'                 # another VM in the default network's us-central1 subnet
# https://cloud.google.com/vpc/docs/firewall-rules-overview#default_firewall_rules (auto-mode `default`)
DEFAULT_NETWORK_RULES: list[dict[str, Any]] = [
    {'name': 'default-allow-internal', 'direction': 'INGRESS', 'priority': 65534, 'sourceRanges': ['10.128.0.0/9'],
     'allowed': [{'IPProtocol': 'tcp', 'ports': ['0-65535']}, {'IPProtocol': 'udp', 'ports': ['0-65535']},
                 {'IPProtocol': 'icmp'}]},
    {'name': 'default-allow-ssh', 'direction': 'INGRESS', 'priority': 65534, 'sourceRanges': ['0.0.0.0/0'],
     'allowed': [{'IPProtocol': 'tcp', 'ports': ['22']}]},
    {'name': 'default-allow-rdp', 'direction': 'INGRESS', 'priority': 65534, 'sourceRanges': ['0.0.0.0/0'],
     'allowed': [{'IPProtocol': 'tcp', 'ports': ['3389']}]},
    {'name': 'default-allow-icmp', 'direction': 'INGRESS', 'priority': 65534, 'sourceRanges': ['0.0.0.0/0'],
     'allowed': [{'IPProtocol': 'icmp'}]},
]


def _port_matches(entries: list[dict[str, Any]], protocol: str, port: int) -> bool:
    for entry in entries:
        if entry['IPProtocol'] not in (protocol, 'all'):
            continue
        if 'ports' not in entry:
            return True
        for spec in entry['ports']:
            low, _, high = spec.partition('-')
            if int(low) <= port <= int(high or low):
                return True
    return False


def vpc_admits(rules: list[dict[str, Any]], source: str, port: int, tags: list[str]) -> tuple[bool, str]:
    """(admitted, name of the deciding rule) for a TCP connection from `source` to an instance with `tags`."""
    matching = []
    for rule in rules:
        if rule.get('direction', 'INGRESS') != 'INGRESS' or rule.get('disabled'):
            continue
        if rule.get('targetTags') and not set(rule['targetTags']) & set(tags):
            continue
        if not any(ipaddress.ip_address(source) in ipaddress.ip_network(r) for r in rule.get('sourceRanges', [])):
            continue
        allow = _port_matches(rule.get('allowed', []), 'tcp', port)
        deny = _port_matches(rule.get('denied', []), 'tcp', port)
        if allow or deny:
            matching.append((rule.get('priority', 1000), 0 if deny else 1, rule['name'], allow and not deny))
    if not matching:
        return False, 'implied deny ingress'
    _, _, name, admitted = min(matching)
    return admitted, name


def iptables_admits(tool_calls: list[str], source: str, port: int) -> bool:
    """Whether the INPUT rules the script appended accept `source` on `port` (COS drops everything else)."""
    for line in tool_calls:
        words = line.split()
        if words[:4] != ['iptables', '-w', '-A', 'INPUT'] or words[-2:] != ['-j', 'ACCEPT']:
            continue
        if '--dport' in words and int(words[words.index('--dport') + 1]) != port:
            continue
        allowed = words[words.index('-s') + 1] if '-s' in words else '0.0.0.0/0'
        if ipaddress.ip_address(source) in ipaddress.ip_network(allowed):
            return True
    return False


@pytest.fixture(scope='module')
def deployed_rules(gcloud_contract) -> list[dict[str, Any]]:
    sent = [r.body for r in gcloud_contract.created.stub.sent('compute', 'POST', r'/global/firewalls$')]
    assert sent, 'the deploy created no firewall rule'
    return sent + DEFAULT_NETWORK_RULES


def test_only_the_connector_reaches_the_api_port_through_the_vpc_firewall(deployed_rules):
    for port in (4004, 4002):    # the relayed paper API, and the gateway's own port behind it
        admitted, rule = vpc_admits(deployed_rules, OTHER_VM, port, GATEWAY_TAGS)
        assert not admitted, f'a VM at {OTHER_VM} reaches tcp:{port} of the gateway through {rule}'
        admitted, rule = vpc_admits(deployed_rules, '203.0.113.9', port, GATEWAY_TAGS)
        assert not admitted, f'the internet reaches tcp:{port} through {rule}'
    assert vpc_admits(deployed_rules, CONNECTOR_ADDRESS, 4004, GATEWAY_TAGS) == (True, 'ib-jobs-gateway-api')
    # the deny is limited to the gateway's API ports: other VMs keep their default-network traffic
    assert vpc_admits(deployed_rules, OTHER_VM, 4004, ['some-other-vm'])[0]


def test_the_vm_itself_accepts_the_api_port_from_the_connector_range_only(google, tmp_path):  # noqa: F811
    result, _, log = run_script(google, tmp_path)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert iptables_admits(calls, CONNECTOR_ADDRESS, 4004)
    assert not iptables_admits(calls, OTHER_VM, 4004)
    assert not iptables_admits(calls, '203.0.113.9', 4004)
