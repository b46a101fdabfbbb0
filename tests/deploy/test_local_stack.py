"""The local stack end to end: `up`, publish with the real `gcloud pubsub topics publish`, pull the
result from `results`, see the notify function's message for it at the local webhook sink, `down`, and no
process left behind.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jsonschema

from deploy.local_sink import received as sink_received
from deploy.local_stack import RESULTS_SUBSCRIPTION, read_state
from functions.contract import result_schema
from tests.deploy.conftest import REPO
from tests.emulators import require_tool


def stack(command: str, stack_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, '-m', 'deploy.local_stack', command, '--dir', str(stack_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)


def gcloud(args: list[str], config: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, 'CLOUDSDK_CONFIG': config}
    env.pop('PUBSUB_EMULATOR_HOST', None)        # gcloud must find the emulator through its own config
    return subprocess.run(['gcloud', *args], env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def live_processes() -> list[tuple[int, str]]:
    """(process group, command line) of every live, non-zombie process."""
    found = []
    for entry in Path('/proc').iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / 'stat').read_text()
            command = (entry / 'cmdline').read_bytes().replace(b'\0', b' ').decode(errors='replace')
        except OSError:
            continue
        state, _, group = stat[stat.rindex(')') + 2:].split()[:3]
        if state != 'Z':
            found.append((int(group), command))
    return found


def test_publish_with_gcloud_and_read_the_result_then_stop_everything(tmp_path):
    require_tool('gcloud')
    require_tool('java')
    stack_dir = tmp_path / 'stack'
    started = stack('up', stack_dir)
    try:
        assert started.returncode == 0, started.stderr
        state = read_state(stack_dir / 'state.json')
        assert set(state.pids) == {'pubsub-emulator', 'firestore-emulator', 'simulator', 'function', 'notify',
                                   'webhook-sink'}
        assert f'export CLOUDSDK_CONFIG={state.cloudsdk_config}' in started.stdout
        assert 'gcloud pubsub topics publish intents' in started.stdout

        published = gcloud(['pubsub', 'topics', 'publish', 'intents', '--message={"intent":"health"}',
                            '--attribute=source=manual'], state.cloudsdk_config)
        assert published.returncode == 0, published.stderr
        message_id = published.stdout.split("'")[1]

        result = None
        deadline = time.monotonic() + 60
        while result is None and time.monotonic() < deadline:
            pulled = gcloud(['pubsub', 'subscriptions', 'pull', RESULTS_SUBSCRIPTION, '--auto-ack', '--limit=10',
                             '--format=json'], state.cloudsdk_config)
            assert pulled.returncode == 0, pulled.stderr
            for received in json.loads(pulled.stdout or '[]'):
                document = json.loads(base64.b64decode(received['message']['data']))
                if document['messageId'] == message_id:
                    result = (document, received['message']['attributes'])
        assert result is not None, 'no result for the published intent'
        document, attributes = result
        jsonschema.validate(document, result_schema())
        assert (document['intent'], document['status']) == ('health', 'ok'), document['error']
        assert document['gateway']['port'] == state.gateway_port
        assert attributes['status'] == 'ok' and attributes['intent'] == 'health'

        # the notify function got the same result from `results` and sent it to the local webhook sink
        deadline = time.monotonic() + 60
        sent = []
        while not sent and time.monotonic() < deadline:
            sent = [r for r in sink_received(Path(state.sink_record)) if r['body']['result']['runId'] == document['runId']]
            time.sleep(0.2)
        assert len(sent) == 1 and sent[0]['path'] == '/hook'
        assert sent[0]['body']['text'].startswith('health: OK') and sent[0]['body']['result'] == document
        printed = stack('received', stack_dir)
        assert printed.returncode == 0 and sent[0]['body']['text'] in printed.stdout
    finally:
        stopped = stack('down', stack_dir)
    assert stopped.returncode == 0, stopped.stderr
    assert not (stack_dir / 'state.json').exists()
    left = [(group, command) for group, command in live_processes()
            if group in state.pids.values() or str(stack_dir) in command
            or state.firestore_host in command or f'--port {state.function_url.rsplit(":", 1)[1]}' in command]
    assert left == []
