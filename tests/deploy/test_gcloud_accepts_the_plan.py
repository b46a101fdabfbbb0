"""The real gcloud parses the plan's most demanding commands (flags, enums, the alert policy files).

gcloud's API endpoints are pointed at a local server that refuses every request, with credentials
disabled: a command whose arguments parse reaches that server (and gets its refusal), a command that
does not parse never does, and nothing leaves the machine.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from deploy.config import config_from_values
from deploy.plan import apply_plan
from deploy.schedules import load_jobs
from deploy.steps import Always, Command, Ensure, Ref, WriteFile
from tests.emulators import require_tool

SERVICES = ('cloudfunctions', 'compute', 'pubsub', 'cloudscheduler', 'secretmanager', 'iam', 'firestore', 'logging',
            'monitoring', 'eventarc', 'serviceusage', 'cloudresourcemanager', 'vpcaccess', 'run')
REF_VALUES = {'PROJECT_NUMBER': '123456789012', 'GATEWAY_IP': '10.128.0.9', 'POLICY': 'projects/p/alertPolicies/1',
              'TRIGGER_SUBSCRIPTION': 'projects/demo-proj-123/subscriptions/eventarc-us-central1-x-sub-001'}
CHECKED = (('functions', 'deploy'), ('compute', 'instances', 'create'), ('scheduler', 'jobs', 'create', 'http'),
           ('scheduler', 'jobs', 'update', 'http'), ('pubsub', 'subscriptions', 'update'),
           ('projects', 'add-iam-policy-binding'), ('firestore', 'databases', 'create'),
           ('alpha', 'monitoring', 'policies', 'create'))


REFUSAL = 'refused-by-the-local-test-endpoint'


class _Refuse(BaseHTTPRequestHandler):
    def _refuse(self) -> None:
        body = json.dumps({'error': {'code': 403, 'message': REFUSAL, 'status': 'PERMISSION_DENIED'}}).encode()
        self.send_response(403)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _refuse

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope='module')
def gcloud_env(tmp_path_factory) -> Iterator[dict[str, str]]:
    require_tool('gcloud')
    server = ThreadingHTTPServer(('127.0.0.1', 0), _Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = tmp_path_factory.mktemp('gcloud-config')
    (config / 'configurations').mkdir()
    (config / 'active_config').write_text('default')
    overrides = ''.join(f'{service} = http://127.0.0.1:{server.server_address[1]}/\n' for service in SERVICES)
    (config / 'configurations' / 'config_default').write_text(
        '[auth]\ndisable_credentials = true\n[core]\ndisable_usage_reporting = true\n'
        f'[component_manager]\ndisable_update_check = true\n[api_endpoint_overrides]\n{overrides}')
    try:
        yield {**os.environ, 'CLOUDSDK_CONFIG': str(config)}
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope='module')
def plan_commands(tmp_path_factory) -> list[list[str]]:
    """The first command of each CHECKED kind in the plan, refs filled in, rendered files written."""
    cfg = config_from_values({'PROJECT': 'demo-proj-123'}, environ={})
    work_dir = tmp_path_factory.mktemp('work')
    commands: list[Command] = []
    for step in apply_plan(cfg, load_jobs(cfg.schedules_file), work_dir):
        if isinstance(step, WriteFile):
            step.path.write_text(step.content)
        elif isinstance(step, Ensure):
            commands += [*step.create, *step.update]
        elif isinstance(step, Always):
            commands += step.commands
    chosen = {}
    for command in commands:
        args = [REF_VALUES[a.name].join((a.prefix, a.suffix)) if isinstance(a, Ref) else a for a in command.args]
        kind = next((kind for kind in CHECKED if tuple(args[:len(kind)]) == kind), None)
        if kind and kind not in chosen and (kind != ('projects', 'add-iam-policy-binding')
                                            or any(a.startswith('--condition=expression') for a in args)):
            chosen[kind] = args
    assert set(chosen) == set(CHECKED)
    return list(chosen.values())


def gcloud(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(['gcloud', *args], env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def reached_the_api(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode != 2 and REFUSAL in result.stderr


def test_gcloud_parses_every_checked_command(plan_commands, gcloud_env):
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda args: gcloud(args, gcloud_env), plan_commands))
    for args, result in zip(plan_commands, results, strict=True):
        assert reached_the_api(result), f'gcloud {" ".join(args[:4])}: {result.stderr[-1500:]}'


def test_a_wrong_flag_is_caught_before_the_api(plan_commands, gcloud_env):
    args = plan_commands[0] + ['--egress-settings=everything']
    result = gcloud(args, gcloud_env)
    assert not reached_the_api(result)
    assert 'egress' in result.stderr
