"""The archive `gcloud functions deploy` really uploads (captured by the stub in the gcloud contract run)
holds the function and nothing else, and runs on its own: unzipped into a fresh folder, its own
requirements.txt installed into a fresh virtual environment, served by functions-framework.

Installing the requirements takes a while (pip's cache makes it ~30-60 s on a warm machine); the
environment is built once per session.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest
import requests

from tests.emulators import PubSub, free_port, spawn
from tests.pubsub_events import b64, eventarc_headers, pubsub_message, push_body

ACCOUNT = 'DU1234567'
# A weekday during US market hours, so the allocation plans orders instead of reporting the market closed.
MARKET_OPEN = datetime(2026, 11, 24, 15, 0, tzinfo=timezone.utc)


@pytest.fixture(scope='session')
def archive(gcloud_contract) -> zipfile.ZipFile:
    [data] = gcloud_contract.created.stub.uploads.values()
    return zipfile.ZipFile(io.BytesIO(data))


def test_the_archive_holds_the_function_and_nothing_else(archive):
    names = set(archive.namelist())
    for needed in ('main.py', 'requirements.txt', 'functions/main.py', 'functions/handler.py', 'intents/health.py',
                   'trading/orders.py', 'lib/store/firestore.py', 'strategies/registry.py', 'config/trading.toml',
                   'schemas/intent-request.schema.json'):
        assert needed in names
    top_level = {name.split('/', 1)[0] for name in names}
    assert top_level == {'main.py', 'requirements.txt', 'functions', 'intents', 'trading', 'lib', 'strategies',
                         'config', 'schemas'}
    parts = {part for name in names for part in name.split('/')[:-1]}
    assert not parts & {'tests', 'simulator', 'bench', 'deploy', 'docs', '__pycache__'}
    assert not [name for name in names if any(part.startswith('.') for part in name.split('/'))]
    assert not [name for name in names if name.endswith('.pyc')]


@pytest.fixture(scope='session')
def unpacked_function(archive, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(folder with the archive's files, a fresh virtual environment with the archive's requirements)."""
    root = tmp_path_factory.mktemp('uploaded-function')
    source, venv = root / 'source', root / 'venv'
    archive.extractall(source)
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True, timeout=120)
    started = time.monotonic()
    install = subprocess.run([str(venv / 'bin' / 'python'), '-m', 'pip', 'install', '--quiet',
                              '--disable-pip-version-check', '-r', str(source / 'requirements.txt')],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    print(f'installed the archive requirements in {time.monotonic() - started:.0f} s', file=sys.stderr)
    return source, venv


@pytest.fixture
def served(unpacked_function, pubsub: PubSub, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """functions-framework from the unpacked archive and its venv: (URL, results pull subscription)."""
    from simulator import Simulator

    source, venv = unpacked_function
    results = pubsub.topic('results')
    inbox = pubsub.pull_subscription(results)
    with Simulator(accounts=[ACCOUNT], time=MARKET_OPEN) as sim:
        port = free_port()
        env = {'PATH': os.environ['PATH'], 'HOME': str(tmp_path), 'PYTHONUNBUFFERED': '1',
               'IB_GATEWAY_HOST': sim.host, 'IB_GATEWAY_PORT': str(sim.port), 'IB_ACCOUNT': ACCOUNT,
               'RESULTS_TOPIC': results, 'GOOGLE_CLOUD_PROJECT': pubsub.project,
               'PUBSUB_EMULATOR_HOST': pubsub.emulator.host, 'STORE_BACKEND': 'sqlite',
               'SQLITE_PATH': str(tmp_path / 'state.sqlite3'), 'INTENT_DEADLINE_SECONDS': '30', 'THREADS': '2'}
        process = spawn([str(venv / 'bin' / 'functions-framework'), '--target', 'run_intent', '--source', 'main.py',
                         '--host', '127.0.0.1', '--port', str(port)],
                        env=env, log_dir=tmp_path, name='uploaded-function', cwd=source)
        url = f'http://127.0.0.1:{port}'
        try:
            process.wait_until(url + '/', lambda status, body: status == 405, 60, 'the uploaded function')
            yield url, inbox
        finally:
            process.stop()


def post_event(url: str, request: dict) -> str:
    """A binary-mode CloudEvent as Eventarc delivers it; returns its message id."""
    message = pubsub_message(b64(request), message_id=f'archive-{uuid.uuid4().hex[:10]}')
    response = requests.post(url + '/', data=json.dumps(push_body(message)),
                             headers=eventarc_headers(message['messageId'], message['publishTime']), timeout=90)
    assert response.status_code == 200, response.text[-2000:]
    return message['messageId']


def test_the_uploaded_archive_serves_health_and_a_dry_run_allocation(served, pubsub):
    url, inbox = served
    health_id = post_event(url, {'intent': 'health'})
    allocation_id = post_event(url, {'intent': 'allocation', 'dryRun': True})
    results: dict[str, dict] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(results) < 2:
        for message in pubsub.pull_once(inbox):
            results[message.json()['messageId']] = message.json()
    health, allocation = results[health_id], results[allocation_id]
    assert health['status'] == 'ok', health['error']
    assert allocation['status'] == 'ok', allocation['error']
    assert allocation['dryRun'] is True and allocation['account'] == ACCOUNT
    # the strategies configured in the archive's config/trading.toml planned orders
    assert allocation['result']['orders'], allocation['result']
