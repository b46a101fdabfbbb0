"""A fake cloud behind `gcloud`/`bq` shims, and a runner of `python -m deploy` against it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
FAKE = Path(__file__).resolve().parent / 'fake_gcloud.py'
EXAMPLE_CONFIG = REPO / 'deploy' / 'config.env.example'


def write_config(path: Path, **settings: Any) -> Path:
    """The example config with PROJECT set and `settings` replacing (or adding) keys."""
    values = {'PROJECT': 'demo-proj-123', **{key: str(value) for key, value in settings.items()}}
    lines = []
    for line in EXAMPLE_CONFIG.read_text().splitlines():
        key = line.split('=', 1)[0]
        if not line.startswith('#') and '=' in line and key in values:
            line = f'{key}={values.pop(key)}'
        lines.append(line)
    lines += [f'{key}={value}' for key, value in values.items()]
    path.write_text('\n'.join(lines) + '\n')
    return path


@dataclass
class FakeCloud:
    """The fake project: its state, the calls made to it, and `python -m deploy` wired to it."""

    root: Path
    bin_dir: Path
    work_dir: Path

    def deploy(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `python -m deploy ARGS` with the fake tools first on PATH."""
        inherited = {key: value for key, value in os.environ.items() if key not in ('IB_USERNAME', 'IB_PASSWORD')}
        full_env = {**inherited, 'PATH': f'{self.bin_dir}{os.pathsep}{os.environ["PATH"]}',
                    'FAKE_CLOUD_DIR': str(self.root), **(env or {})}
        command = [sys.executable, '-m', 'deploy', *args]
        if args and args[0] in ('apply', 'teardown'):
            command += ['--work-dir', str(self.work_dir)]
        return subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)

    def calls(self) -> list[dict[str, Any]]:
        path = self.root / 'calls.jsonl'
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def state(self) -> dict[str, Any]:
        path = self.root / 'state.json'
        return json.loads(path.read_text()) if path.exists() else {'resources': {}, 'bindings': []}

    def commands(self, *prefix: str) -> list[list[str]]:
        """Recorded gcloud argvs that start with `prefix`."""
        return [call['argv'] for call in self.calls()
                if call['program'] == 'gcloud' and call['argv'][:len(prefix)] == list(prefix)]


def make_fake_cloud(base: Path) -> FakeCloud:
    """An empty fake project under `base`, with `gcloud` and `bq` shims in base/bin."""
    bin_dir = base / 'bin'
    bin_dir.mkdir()
    for program in ('gcloud', 'bq'):
        shim = bin_dir / program
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "{FAKE}" {program} "$@"\n')
        shim.chmod(0o755)
    root = base / 'cloud'
    root.mkdir()
    return FakeCloud(root, bin_dir, base / 'work')


@pytest.fixture
def fake_cloud(tmp_path: Path) -> FakeCloud:
    return make_fake_cloud(tmp_path)


# --- the real gcloud against a recording stand-in for Google's APIs (tests/deploy/google_stub.py) ---

@dataclass
class GcloudRun:
    """One `python -m deploy ...` through the real gcloud: what the stub received, and what it printed."""

    stub: Any            # google_stub.Recorded
    work_dir: Path
    output: str


@dataclass
class GcloudContract:
    """The deploy run three ways through the real gcloud, each against its own stub:
    `created` applies into an empty project (every create branch), then `torn_down` removes it all
    again from that project's state (`teardown --delete-data`); `updated` applies into a project where
    everything exists (every update branch).
    """

    created: GcloudRun
    torn_down: GcloudRun
    updated: GcloudRun
    config: Path


CONTRACT_PROJECT = 'demo-proj-123'
CONTRACT_TABLE = 'trading.results'     # so the BigQuery steps (bq and gcloud) run too
# so the notify function's steps run too, with every sink
CONTRACT_NOTIFY = {'NOTIFY_SINKS': 'webhook,slack,telegram', 'NOTIFY_TELEGRAM_CHAT_ID': '-1001234567',
                   'NOTIFY_STATUSES': 'error,rejected,orders',
                   'NOTIFY_WEBHOOK_URL': 'https://hooks.example.com/in/wh-7Qx2',
                   'NOTIFY_SLACK_WEBHOOK_URL': 'https://hooks.slack.com/services/T0/B0/sl4ck-9zz',
                   'NOTIFY_TELEGRAM_BOT_TOKEN': '123456:AAH-tg-token-77'}


def _existing_listings() -> dict[tuple[str, str], list[dict[str, Any]]]:
    """What listings show in a project the deploy already made: its alert policies, and one scheduler job
    whose entry left schedules.yaml (so the update pass deletes it)."""
    from deploy.alerts import POLICY_FILES, render_policy
    from deploy.config import config_from_values

    cfg = config_from_values({'PROJECT': CONTRACT_PROJECT}, environ={})
    policies = [{'name': f'projects/{CONTRACT_PROJECT}/alertPolicies/{number}',
                 'displayName': render_policy(cfg, name)['displayName']}
                for number, name in enumerate(POLICY_FILES, start=1)]
    jobs = [{'name': f'projects/{CONTRACT_PROJECT}/locations/us-central1/jobs/ib-jobs-retired-job'}]
    return {('monitoring', '/alertPolicies'): policies, ('cloudscheduler', '/jobs'): jobs}


EVENTARC_NOT_READY = ('Validation failed for trigger projects/demo-proj-123/locations/us-central1/triggers/'
                      'ib-jobs-intents-000: Invalid resource state for "": Permission denied while using the '
                      'Eventarc Service Agent. If you recently started to use Eventarc, it may take a few minutes '
                      'before all necessary permissions are propagated to the Service Agent. Otherwise, verify '
                      'that it has Eventarc Service Agent role.')


def _first_deploy_errors() -> dict[str, tuple[int, dict[str, Any]]]:
    """What a fresh project answers once, until Google's set-up propagates (see deploy.runner.PROPAGATION):
    the function's operation fails on the Eventarc agent, and the Pub/Sub agent does not exist yet."""
    from tests.deploy.google_stub import PROJECT_NUMBER

    location = f'projects/{CONTRACT_PROJECT}/locations/us-central1'
    agent = f'service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com'
    return {
        f'cloudfunctions POST /v2/{location}/functions': (200, {
            'name': f'{location}/operations/op-eventarc-not-ready', 'done': True,
            'error': {'code': 9, 'message': EVENTARC_NOT_READY}}),
        f'pubsub POST /v1/projects/{CONTRACT_PROJECT}/topics/ib-jobs-intents-dead-letter:setIamPolicy': (400, {
            'error': {'code': 400, 'status': 'INVALID_ARGUMENT',
                      'message': f'Service account {agent} does not exist.'}}),
    }


def _deploy(stub: Any, base: Path, config: Path, *args: str) -> subprocess.Popen[str]:
    """Start `python -m deploy ARGS` with the real gcloud pointed at `stub`; output goes to base/<command>.txt."""
    env = stub.gcloud_env(base / 'gcloud-config')
    env = {key: value for key, value in env.items() if key not in ('IB_USERNAME', 'IB_PASSWORD')}
    if not (base / 'gcloud-config' / 'fake-key.json').exists():
        stub.activate_fake_account(env)      # bq runs only with an active account
    env['DEPLOY_RETRY_DELAYS'] = '0.2,0.2'
    argv = [sys.executable, '-m', 'deploy', *args, '--config', str(config), '--work-dir', str(base / 'work')]
    with open(base / f'{args[0]}.txt', 'w') as out:
        return subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen[str], base: Path, command: str) -> str:
    code = process.wait(timeout=1200)
    output = (base / f'{command}.txt').read_text()
    assert code == 0, f'python -m deploy {command} failed (exit {code}):\n{output[-5000:]}'
    return output


@pytest.fixture(scope='session')
def gcloud_contract(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcloudContract]:
    """Run apply (create branch) + teardown, and apply (update branch), concurrently, through the real gcloud."""
    from tests.deploy.google_stub import GoogleStub
    from tests.emulators import require_tool

    require_tool('gcloud', 'the deploy cannot be checked against the real gcloud')
    base = tmp_path_factory.mktemp('gcloud-contract')
    config = write_config(base / 'config.env', PROJECT=CONTRACT_PROJECT, IB_USERNAME='ib-user-8f3k',
                          IB_PASSWORD='pw-Zq9!x7#secret', BIGQUERY_TABLE=CONTRACT_TABLE, **CONTRACT_NOTIFY)
    empty = GoogleStub(mode='create', fail_once=_first_deploy_errors()).start()
    deployed = GoogleStub(mode='exists', listings=_existing_listings()).start()
    try:
        first, second = base / 'create', base / 'update'
        first.mkdir(), second.mkdir()
        update = _deploy(deployed, second, config, 'apply')
        created_output = _finish(_deploy(empty, first, config, 'apply'), first, 'apply')
        applied = len(empty.requests)
        torn_down_output = _finish(_deploy(empty, first, config, 'teardown', '--yes', '--delete-data'), first,
                                   'teardown')
        updated_output = _finish(update, second, 'apply')
        for name, stub in (('empty', empty), ('deployed', deployed)):
            assert not stub.unserved, f'gcloud called hosts the stub does not serve ({name} project): {stub.unserved}'
            assert not stub.errors, f'the stub failed ({name} project):\n' + '\n'.join(stub.errors)
        yield GcloudContract(GcloudRun(empty.recorded(0, applied), first / 'work', created_output),
                             GcloudRun(empty.recorded(applied), first / 'work', torn_down_output),
                             GcloudRun(deployed.recorded(0), second / 'work', updated_output), config)
    finally:
        empty.stop()
        deployed.stop()
