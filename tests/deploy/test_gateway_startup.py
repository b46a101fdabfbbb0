"""deploy/gateway/start-gateway.sh against a local metadata server and Secret Manager, with a fake docker.

The script must hand IB credentials to the container through files only: never on a command line,
never in its output.
"""
from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from deploy.config import config_from_values
from deploy.gateway import SCRIPT_PATH, UNIT_PATH, cloud_init, metadata
from tests.deploy.conftest import REPO
from tests.emulators import require_tool

SCRIPT = REPO / 'deploy' / 'gateway' / 'start-gateway.sh'
USERNAME, PASSWORD, TOKEN = 'ib-user-77', 'S3cr3t pass,word"!', 'ya29.token-Xq81'
PROJECT = 'demo-proj-123'


class FakeGoogle(ThreadingHTTPServer):
    """The metadata server and Secret Manager's versions.access, as the VM sees them."""

    def __init__(self, attributes: dict[str, str], secrets: dict[str, str]) -> None:
        super().__init__(('127.0.0.1', 0), _Handler)
        self.attributes, self.secrets = attributes, secrets
        self.secret_requests: list[tuple[str, str | None]] = []

    @property
    def url(self) -> str:
        return f'http://127.0.0.1:{self.server_address[1]}'


class _Handler(BaseHTTPRequestHandler):
    server: FakeGoogle

    def do_GET(self) -> None:
        path = self.path
        if path.startswith('/computeMetadata/v1/'):
            if self.headers.get('Metadata-Flavor') != 'Google':
                return self._send(403, 'missing Metadata-Flavor')
            item = path.removeprefix('/computeMetadata/v1/')
            if item == 'project/project-id':
                return self._send(200, PROJECT)
            if item == 'instance/service-accounts/default/token':
                return self._send(200, json.dumps({'access_token': TOKEN, 'expires_in': 3599, 'token_type': 'Bearer'}))
            attribute = item.removeprefix('instance/attributes/')
            if attribute in self.server.attributes:
                return self._send(200, self.server.attributes[attribute])
            return self._send(404, 'not found')
        prefix = f'/v1/projects/{PROJECT}/secrets/'
        if path.startswith(prefix) and path.endswith('/versions/latest:access'):
            name = path[len(prefix):].split('/')[0]
            self.server.secret_requests.append((name, self.headers.get('Authorization')))
            if self.headers.get('Authorization') != f'Bearer {TOKEN}':
                return self._send(401, 'unauthenticated')
            data = base64.b64encode(self.server.secrets[name].encode()).decode()
            return self._send(200, json.dumps({'name': f'projects/1/secrets/{name}/versions/3',
                                               'payload': {'data': data, 'dataCrc32c': '42'}}, indent=2))
        return self._send(404, 'not found')

    def _send(self, status: int, body: str) -> None:
        payload = body.encode()
        self.send_response(status)
        self.send_header('Content-Length', str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def google(request) -> Iterator[FakeGoogle]:
    cfg = config_from_values({'PROJECT': PROJECT}, environ={})
    secrets = getattr(request, 'param', {'ib-jobs-ib-username': USERNAME, 'ib-jobs-ib-password': PASSWORD})
    server = FakeGoogle(metadata(cfg), secrets)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def fake_tool(path: Path, log: Path, extra: str = '') -> None:
    path.write_text(f'#!/bin/bash\nprintf "%s\\n" "$(basename "$0") $*" >> "{log}"\n{extra}exit 0\n')
    path.chmod(0o755)


def run_script(google: FakeGoogle, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    require_tool('curl')
    tools, run_dir, log = tmp_path / 'tools', tmp_path / 'run', tmp_path / 'tools.log'
    tools.mkdir()
    # At `docker run`, keep what the container would receive: the env file and the mounted password file.
    fake_tool(tools / 'docker', log, extra=(
        'if [ "$1" = run ]; then cp "$RUN_DIR/gateway.env" "$RUN_DIR/seen.env"; '
        'stat -c %a "$RUN_DIR/tws_password" > "$RUN_DIR/seen.mode"; fi\n'))
    fake_tool(tools / 'iptables', log, extra='[ "$2" = -C ] && exit 1\n')
    env = {'PATH': os.environ['PATH'], 'METADATA_URL': f'{google.url}/computeMetadata/v1',
           'SECRETMANAGER_URL': f'{google.url}/v1', 'RUN_DIR': str(run_dir), 'DOCKER': str(tools / 'docker'),
           'IPTABLES': str(tools / 'iptables'), 'GATEWAY_UID': str(os.getuid())}
    result = subprocess.run(['bash', str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    return result, run_dir, log


def test_credentials_reach_the_container_through_files_only(google, tmp_path):
    result, run_dir, log = run_script(google, tmp_path)
    assert result.returncode == 0, result.stderr
    tool_calls = log.read_text().splitlines()
    [docker_run] = [line for line in tool_calls if line.startswith('docker run')]
    assert docker_run.endswith(' ghcr.io/gnzsnz/ib-gateway:10.37.1n')
    assert f'--env-file {run_dir}/gateway.env' in docker_run
    assert f'--volume {run_dir}/tws_password:/run/secrets/tws_password:ro' in docker_run
    assert '--network host' in docker_run
    assert 'iptables -w -A INPUT -p tcp -s 10.8.0.0/28 --dport 4004 -j ACCEPT' in tool_calls
    env = dict(line.split('=', 1) for line in (run_dir / 'seen.env').read_text().splitlines())
    assert env['TWS_USERID'] == USERNAME
    assert env['TWS_PASSWORD_FILE'] == '/run/secrets/tws_password'
    assert env['TRADING_MODE'] == 'paper'
    assert (env['AUTO_RESTART_TIME'], env['TWOFA_TIMEOUT_ACTION']) == ('11:59 PM', 'restart')
    assert (env['EXISTING_SESSION_DETECTED_ACTION'], env['RELOGIN_AFTER_TWOFA_TIMEOUT']) == ('primary', 'yes')
    assert env['TIME_ZONE'] == 'America/New_York' and env['READ_ONLY_API'] == 'no'
    assert 'TWS_PASSWORD' not in env
    assert (run_dir / 'tws_password').read_text() == PASSWORD
    assert (run_dir / 'seen.mode').read_text().strip() == '400'
    assert stat.S_IMODE((run_dir / 'gateway.env').stat().st_mode) == 0o600
    assert google.secret_requests == [('ib-jobs-ib-password', f'Bearer {TOKEN}'),
                                      ('ib-jobs-ib-username', f'Bearer {TOKEN}')]
    for secret in (USERNAME, PASSWORD, TOKEN):
        assert secret not in result.stdout + result.stderr
        assert secret not in log.read_text()


@pytest.mark.parametrize('google', [{'ib-jobs-ib-username': USERNAME, 'ib-jobs-ib-password': ''}], indirect=True)
def test_an_empty_credential_stops_before_the_container_starts(google, tmp_path):
    result, _, log = run_script(google, tmp_path)
    assert result.returncode == 1
    assert 'a credential secret is empty' in result.stderr
    assert not log.exists() or 'docker run' not in log.read_text()


def test_cloud_init_installs_the_unit_and_the_script_and_starts_the_unit():
    document = yaml.safe_load(cloud_init())
    files = {entry['path']: entry for entry in document['write_files']}
    assert files[SCRIPT_PATH]['content'] == SCRIPT.read_text()
    assert files[SCRIPT_PATH]['permissions'] == '0700'
    assert f'ExecStart=/bin/bash {SCRIPT_PATH}' in files[UNIT_PATH]['content']
    assert 'Restart=always' in files[UNIT_PATH]['content']
    assert document['runcmd'] == [['systemctl', 'daemon-reload'], ['systemctl', 'start', 'ib-gateway.service']]
    assert cloud_init().startswith('#cloud-config\n')
