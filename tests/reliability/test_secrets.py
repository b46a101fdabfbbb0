"""With credentials and tokens in the environment, none of them shows up in logs, results or argv.

In process: every example request, on a healthy gateway and with the gateway refusing connections (so
failures are logged with their tracebacks), plus a message that carries a secret itself. As deployed:
the simulator and functions-framework run as their own processes with the secrets in their environment;
their command lines (every process of the tree) and everything they write are searched.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from intents.registry import intent_names
from simulator import Simulator
from tests.emulators import PROJECT
from tests.pubsub_events import b64, pubsub_event, pubsub_message, push_body, request_event
from tests.reliability.examples import examples_for
from tests.reliability.harness import (
    MARKET_OPEN, REPO, deliver, log_lines, printed_results, settings_for,
)


def secret_env() -> dict[str, str]:
    """Credentials as a deployment would have them, with values that occur nowhere else.

    Some hold what encoders escape (non-ASCII letters, a quote, a backslash, a line break), so a
    search of the encoded text alone would miss them.
    """
    def value(kind: str) -> str:
        return f'{kind}-{uuid.uuid4().hex}'

    return {
        'IB_PASSWORD': value('PÄSSWORT-ΩMEGA'),
        'TWS_PASSWORD': value('TWS"QUOTE\\BACK'),
        'IB_LOGIN_SECRET': value('zwei\nzeilen-€'),
        'GOOGLE_API_TOKEN': value('ya29'),
        'IB_API_KEY': value('apikey'),
        'WEBHOOK_SECRET': value('whsec'),
        'PUBSUB_ACCESS_TOKEN': value('token'),
        'GOOGLE_APPLICATION_CREDENTIALS': f'/secrets/{uuid.uuid4().hex}/service-account.json',
    }


def decoded_strings(text: str) -> str:
    """Every string (keys included) of every JSON document on a line of `text`, decoded, one per line."""
    strings: list[str] = []

    def walk(value) -> None:
        if isinstance(value, str):
            strings.append(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                strings.append(key)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for line in text.split('\n'):
        if line.startswith('{'):
            walk(json.loads(line))
    return '\n'.join(strings)


def assert_clean(text: str, secrets: dict[str, str], where: str) -> None:
    """No secret in `text` as written, nor in the decoded strings of its JSON lines."""
    for form, searched in (('text', text), ('decoded JSON', decoded_strings(text))):
        found = [name for name, value in secrets.items() if value in searched]
        assert not found, f'the values of {found} appear in {where} ({form})'


def test_no_secret_in_logs_or_results_in_process(monkeypatch, capsys):
    secrets = secret_env()
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    results = []
    for name in intent_names():
        for example in examples_for(name):
            for refused in (False, True):
                with Simulator(time=MARKET_OPEN, seed=7) as sim:
                    if example.prepare:
                        example.prepare(sim)
                    sim.faults.refuse_connections = refused
                    results.append(deliver(request_event(example.request), settings_for(sim)).doc)
    with Simulator(time=MARKET_OPEN, seed=7) as sim:
        carried = deliver(request_event({'intent': 'summary', 'params': {'account': secrets['IB_PASSWORD']}}),
                          settings_for(sim))
    out = capsys.readouterr().out
    assert carried.doc['status'] == 'rejected'
    assert len(printed_results(out)) == len(results) + 1
    assert any(line['severity'] in ('ERROR', 'WARNING') for line in log_lines(out))
    assert_clean(out, secrets, 'stdout (log lines and printed results)')
    assert_clean('\n'.join(json.dumps(r) for r in results), secrets, 'result documents')
    assert {r['status'] for r in results} >= {'ok', 'error'}


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat') as stat:
                parent = int(stat.read().rsplit(')', 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, []))
    return tree


def command_lines(root: int) -> str:
    lines = []
    for pid in process_tree(root):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as cmdline:
                lines.append(cmdline.read().replace(b'\0', b' ').decode(errors='replace'))
        except OSError:
            continue
    return '\n'.join(lines)


@pytest.fixture
def simulator_process(tmp_path: Path, monkeypatch):
    """`python -m simulator` in its own process, with the secrets in its environment."""
    secrets = secret_env()
    log = open(tmp_path / 'simulator.log', 'w+')
    process = subprocess.Popen([sys.executable, '-m', 'simulator', '--port', '0', '--time', MARKET_OPEN.isoformat()],
                               cwd=REPO, env={**os.environ, **secrets, 'PYTHONUNBUFFERED': '1'},
                               stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith('listening on '), line
        host, port = line.split()[-1].rsplit(':', 1)
        yield process, host, int(port), secrets, log
    finally:
        process.terminate()
        process.wait(10)
        process.stdout.close()
        log.close()


def test_no_secret_in_argv_logs_or_results_of_the_deployed_processes(simulator_process, start_function_server,
                                                                     tmp_path):
    simulator, host, port, secrets, simulator_log = simulator_process
    server = start_function_server(IB_GATEWAY_HOST=host, IB_GATEWAY_PORT=port, INTENT_DEADLINE_SECONDS=10,
                                   STORE_BACKEND='sqlite', SQLITE_PATH=tmp_path / 'state.sqlite3',
                                   SYMBOL_ALLOWLIST='SPY,VIXY,MNQ,AAPL,EUR.USD', LOG_LEVEL='DEBUG', **secrets)
    endpoint = server.push_endpoint(PROJECT, 'intents')

    def body(data: str, message_id: str) -> dict:
        return push_body(pubsub_message(data, message_id=message_id, snake_case=True))

    bodies = [body(b64(example.request), f'secret-{name}-{i}')
              for name in intent_names() for i, example in enumerate(examples_for(name))]
    bodies.append(body(b64({'intent': secrets['TWS_PASSWORD']}), 'secret-carried'))
    bodies.append(body(b64({'intent': 'summary', 'params': {'account': secrets['IB_PASSWORD']}}), 'secret-account'))
    bodies.append(body(b64({'intent': 'health', 'params': {secrets['IB_LOGIN_SECRET']: 1}}), 'secret-param-key'))
    bodies.append(body('%%not-base64', 'secret-garbage'))
    statuses = [requests.post(endpoint, json=body, timeout=30).status_code for body in bodies]
    assert set(statuses) <= {200, 500}, statuses

    deadline = time.monotonic() + 10
    while len([d for d in printed_results(server.process.output()) if d['messageId'].startswith('secret-')]) \
            < len(bodies) and time.monotonic() < deadline:
        time.sleep(0.05)
    output = server.process.output()
    assert len(printed_results(output)) == len(bodies)
    assert {'ok', 'rejected'} <= {doc['status'] for doc in printed_results(output)}
    assert_clean(output, secrets, "the function's output (log lines and results)")
    simulator_log.seek(0)
    assert_clean(simulator_log.read(), secrets, "the simulator's log")
    assert_clean(command_lines(server.process.process.pid), secrets, "functions-framework's argv")
    assert_clean(command_lines(simulator.pid), secrets, "the simulator's argv")
    assert 'functions-framework' in command_lines(server.process.process.pid)


def test_no_secret_in_published_results_or_their_attributes(monkeypatch, pubsub):
    """Results published to a topic (the Pub/Sub emulator): the document and its attributes, decoded."""
    secrets = secret_env()
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    results = pubsub.topic('results')
    inbox = pubsub.pull_subscription(results)
    events = [request_event({'intent': 'summary', 'params': {'account': secrets['IB_PASSWORD']}}),
              request_event({'intent': secrets['TWS_PASSWORD']}),
              pubsub_event(None, attributes={'intent': secrets['IB_LOGIN_SECRET']}),
              request_event({'intent': 'health'}, message_id=secrets['IB_PASSWORD'])]
    with Simulator(time=MARKET_OPEN, seed=7) as sim:
        settings = settings_for(sim, results_topic=results, project=pubsub.project)
        statuses = [deliver(event, settings).result.status for event in events]
    assert statuses.count('rejected') >= 3
    published = pubsub.pull(inbox, len(events))
    assert len(published) == len(events)
    for message in published:
        assert_clean(message.data.decode('utf-8'), secrets, 'a published result')
        assert_clean(json.dumps(message.attributes, ensure_ascii=False), secrets, 'the attributes of a result')
        assert_clean('\n'.join(message.attributes.values()), secrets, 'the attributes of a result')
