"""A local copy of the cloud wiring: `python -m deploy.local_stack up|down|status`.

`up` starts the Pub/Sub emulator, the Firestore emulator, the simulated IB Gateway and
functions-framework serving `run_intent` with its environment pointing at all three; a local webhook sink
(deploy/local_sink.py) and functions-framework serving `notify_result`, which sends it every result; creates
the `intents` topic with a push subscription to the function (path /projects/P/topics/intents, from which
functions-framework builds the CloudEvent source), `results` with a pull subscription and a push subscription
to the notify function, and dead-letter topics; writes a gcloud configuration that sends `gcloud pubsub` to the emulator; and
records every process group and port in .local/stack/state.json. `down` stops those process groups.

Everything listens on 127.0.0.1 and needs no Google credentials.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from deploy.config import REPO
from deploy.local_sink import received

STACK_DIR = REPO / '.local' / 'stack'
PROJECT = 'local-project'
INTENTS, RESULTS, DEAD_LETTER = 'intents', 'results', 'intents-dead-letter'
PUSH_SUBSCRIPTION, RESULTS_SUBSCRIPTION = 'intents-push', 'results-pull'
NOTIFY_SUBSCRIPTION, RESULTS_DEAD_LETTER = 'results-notify', 'results-dead-letter'
DEAD_LETTER_SUBSCRIPTION = 'intents-dead-letter-pull'
ACK_DEADLINE_SECONDS = 120          # above the function's INTENT_DEADLINE_SECONDS, as in the cloud
FUNCTION_ENV = {'THREADS': '4', 'INTENT_DEADLINE_SECONDS': '60', 'TRADING_MODE': 'paper',
                'STORE_BACKEND': 'firestore', 'RESULTS_TOPIC': RESULTS}
# Locally every result is worth seeing: every status and tag passes the notify filter.
NOTIFY_ENV = {'THREADS': '2', 'STORE_BACKEND': 'firestore', 'NOTIFY_MAX_ATTEMPTS': '5',
              'NOTIFY_STATUSES': 'ok,skipped,rejected,duplicate,error,planned,orders'}


class StackError(RuntimeError):
    """The stack could not be started or stopped; the message says which part and why."""


@dataclass
class StackState:
    """What `up` started: process group ids, addresses, and where the logs are."""

    project: str
    pids: dict[str, int]
    pubsub_host: str
    firestore_host: str
    gateway_host: str
    gateway_port: int
    function_url: str
    cloudsdk_config: str
    log_dir: str
    notify_url: str = ''
    sink_url: str = ''
    sink_record: str = ''

    @property
    def push_endpoint(self) -> str:
        return f'{self.function_url}/projects/{self.project}/topics/{INTENTS}'

    @property
    def notify_endpoint(self) -> str:
        return f'{self.notify_url}/projects/{self.project}/topics/{RESULTS}'


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def up(stack_dir: Path = STACK_DIR, project: str = PROJECT, timeout: float = 90.0) -> StackState:
    """Start everything, wire the topics, write the state file; stop what started if anything fails."""
    state_file = stack_dir / 'state.json'
    if state_file.exists():
        if any(_group_alive(pid) for pid in read_state(state_file).pids.values()):
            raise StackError(f'the stack is already up ({state_file}); run `python -m deploy.local_stack down`')
        state_file.unlink()
    gcloud = shutil.which('gcloud')
    if gcloud is None:
        raise StackError('gcloud is not on PATH: the Pub/Sub and Firestore emulators come with the Google Cloud CLI')
    log_dir = stack_dir / 'logs'
    shutil.rmtree(stack_dir / 'pubsub-data', ignore_errors=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    (stack_dir / 'pubsub-data').mkdir()
    started: dict[str, int] = {}
    try:
        pubsub_host, firestore_host = f'127.0.0.1:{free_port()}', f'127.0.0.1:{free_port()}'
        started['pubsub-emulator'] = _spawn(
            [gcloud, 'beta', 'emulators', 'pubsub', 'start', f'--host-port={pubsub_host}', f'--project={project}',
             f'--data-dir={stack_dir / "pubsub-data"}', '--quiet'], log_dir, 'pubsub-emulator')
        started['firestore-emulator'] = _spawn(
            [gcloud, 'emulators', 'firestore', 'start', f'--host-port={firestore_host}', '--quiet'],
            log_dir, 'firestore-emulator')
        started['simulator'] = _spawn([sys.executable, '-m', 'simulator', '--port', '0'], log_dir, 'simulator')
        sink_record = stack_dir / 'webhook-sink.jsonl'
        sink_record.unlink(missing_ok=True)
        started['webhook-sink'] = _spawn([sys.executable, '-u', '-m', 'deploy.local_sink', '--port', '0',
                                          '--record', str(sink_record)], log_dir, 'webhook-sink')
        deadline = time.monotonic() + timeout
        gateway_host, gateway_port = _wait_for_simulator(log_dir / 'simulator.log', started['simulator'], deadline)
        sink_url = _wait_for_line(log_dir / 'webhook-sink.log', r'listening on (http://[0-9.:]+)',
                                  started['webhook-sink'], deadline)
        for name, host in (('pubsub-emulator', pubsub_host), ('firestore-emulator', firestore_host)):
            _wait_http(f'http://{host}/', lambda status, body: status == 200 and body.strip() == 'Ok',
                       started[name], log_dir / f'{name}.log', deadline)
        function_port = free_port()
        env = {**os.environ, **FUNCTION_ENV, 'PYTHONUNBUFFERED': '1', 'GOOGLE_CLOUD_PROJECT': project,
               'PUBSUB_EMULATOR_HOST': pubsub_host, 'FIRESTORE_EMULATOR_HOST': firestore_host,
               'IB_GATEWAY_HOST': gateway_host, 'IB_GATEWAY_PORT': str(gateway_port)}
        started['function'] = _spawn(
            [str(Path(sys.executable).parent / 'functions-framework'), '--target', 'run_intent', '--source', 'main.py',
             '--host', '127.0.0.1', '--port', str(function_port)], log_dir, 'function', env=env)
        function_url = f'http://127.0.0.1:{function_port}'
        notify_port = free_port()
        notify_env = {**os.environ, **NOTIFY_ENV, 'PYTHONUNBUFFERED': '1', 'GOOGLE_CLOUD_PROJECT': project,
                      'FIRESTORE_EMULATOR_HOST': firestore_host, 'NOTIFY_WEBHOOK_URL': f'{sink_url}/hook'}
        started['notify'] = _spawn(
            [str(Path(sys.executable).parent / 'functions-framework'), '--target', 'notify_result', '--source',
             'main.py', '--host', '127.0.0.1', '--port', str(notify_port)], log_dir, 'notify', env=notify_env)
        notify_url = f'http://127.0.0.1:{notify_port}'
        for name, url in (('function', function_url), ('notify', notify_url)):
            _wait_http(url + '/', lambda status, body: status == 405, started[name], log_dir / f'{name}.log',
                       deadline)
        state = StackState(project, started, pubsub_host, firestore_host, gateway_host, gateway_port, function_url,
                           str(stack_dir / 'gcloud'), str(log_dir), notify_url, sink_url, str(sink_record))
        _create_topics(state)
        write_gcloud_config(Path(state.cloudsdk_config), project, pubsub_host)
    except BaseException:
        for pid in started.values():
            _stop_group(pid)
        raise
    state_file.write_text(json.dumps(asdict(state), indent=2) + '\n')
    return state


def down(stack_dir: Path = STACK_DIR, timeout: float = 15.0) -> list[str]:
    """Stop every process group the state file names; returns the names stopped."""
    state_file = stack_dir / 'state.json'
    if not state_file.exists():
        return []
    state = read_state(state_file)
    for pid in state.pids.values():
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_group_alive(pid) for pid in state.pids.values()):
        time.sleep(0.1)
    for pid in state.pids.values():
        if _group_alive(pid):
            _signal_group(pid, signal.SIGKILL)
    survivors = [name for name, pid in state.pids.items() if _alive_after(pid, 5.0)]
    if survivors:
        raise StackError(f'still running after SIGKILL: {", ".join(survivors)}')
    state_file.unlink()
    return list(state.pids)


def read_state(state_file: Path) -> StackState:
    """The state `up` wrote."""
    return StackState(**json.loads(state_file.read_text()))


def write_gcloud_config(directory: Path, project: str, pubsub_host: str) -> None:
    """A throwaway gcloud configuration: `gcloud pubsub` talks to the emulator, with no credentials."""
    (directory / 'configurations').mkdir(parents=True, exist_ok=True)
    (directory / 'active_config').write_text('default')
    (directory / 'configurations' / 'config_default').write_text(
        f'[core]\nproject = {project}\ndisable_usage_reporting = true\n'
        '[auth]\ndisable_credentials = true\n'
        '[component_manager]\ndisable_update_check = true\n'
        f'[api_endpoint_overrides]\npubsub = http://{pubsub_host}/\n')


def instructions(state: StackState) -> str:
    """How to publish an intent and read its result with gcloud, and how to stop the stack."""
    config = shlex.quote(state.cloudsdk_config)
    event = json.dumps({'specversion': '1.0', 'id': 'manual-1', 'type': 'google.cloud.pubsub.topic.v1.messagePublished',
                        'source': f'//pubsub.googleapis.com/projects/{state.project}/topics/{INTENTS}',
                        'data': {'message': {'data': 'eyJpbnRlbnQiOiJoZWFsdGgifQ==', 'messageId': 'manual-1'}}})
    return '\n'.join([
        f'local stack is up (project {state.project}); state: {Path(state.log_dir).parent / "state.json"}',
        f'  Pub/Sub emulator    {state.pubsub_host}',
        f'  Firestore emulator  {state.firestore_host}',
        f'  IB Gateway (sim)    {state.gateway_host}:{state.gateway_port}',
        f'  function            {state.function_url}  <- push from {PUSH_SUBSCRIPTION} to {state.push_endpoint}',
        f'  notify function     {state.notify_url}  <- push from {NOTIFY_SUBSCRIPTION} (every result)',
        f'  webhook sink        {state.sink_url}/hook  (what it receives: python -m deploy.local_stack received)',
        f'  logs                {state.log_dir}',
        '',
        'Publish an intent and read its result (gcloud pointed at the emulator, no credentials):',
        f'  export CLOUDSDK_CONFIG={config}',
        f"  gcloud pubsub topics publish {INTENTS} --message='{{\"intent\":\"health\"}}'",
        f'  gcloud pubsub subscriptions pull {RESULTS_SUBSCRIPTION} --auto-ack --limit=10 '
        "--format='value(message.data)'",
        '',
        'Or post a CloudEvent to the function directly, as Eventarc would:',
        f"  curl -sS {state.function_url}/ -H 'Content-Type: application/cloudevents+json' -d '{event}'",
        '',
        'Stop everything:  python -m deploy.local_stack down',
    ])


def _create_topics(state: StackState) -> None:
    from google.cloud import pubsub_v1

    with _emulator_env(state.pubsub_host):
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        try:
            for topic in (INTENTS, RESULTS, DEAD_LETTER, RESULTS_DEAD_LETTER):
                publisher.create_topic(name=publisher.topic_path(state.project, topic))
            subscriber.create_subscription(request={
                'name': subscriber.subscription_path(state.project, PUSH_SUBSCRIPTION),
                'topic': publisher.topic_path(state.project, INTENTS),
                'push_config': {'push_endpoint': state.push_endpoint},
                'ack_deadline_seconds': ACK_DEADLINE_SECONDS,
                'dead_letter_policy': {'dead_letter_topic': publisher.topic_path(state.project, DEAD_LETTER),
                                       'max_delivery_attempts': 10},
            })
            subscriber.create_subscription(request={
                'name': subscriber.subscription_path(state.project, NOTIFY_SUBSCRIPTION),
                'topic': publisher.topic_path(state.project, RESULTS),
                'push_config': {'push_endpoint': state.notify_endpoint},
                'ack_deadline_seconds': ACK_DEADLINE_SECONDS,
                'dead_letter_policy': {'dead_letter_topic': publisher.topic_path(state.project, RESULTS_DEAD_LETTER),
                                       'max_delivery_attempts': 5},
            })
            for name, topic in ((RESULTS_SUBSCRIPTION, RESULTS), (DEAD_LETTER_SUBSCRIPTION, DEAD_LETTER)):
                subscriber.create_subscription(request={'name': subscriber.subscription_path(state.project, name),
                                                        'topic': publisher.topic_path(state.project, topic)})
        finally:
            publisher.transport.close()
            subscriber.close()


@contextlib.contextmanager
def _emulator_env(host: str) -> Iterator[None]:
    # The Pub/Sub clients find the emulator through this variable only.
    previous = os.environ.get('PUBSUB_EMULATOR_HOST')
    os.environ['PUBSUB_EMULATOR_HOST'] = host
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop('PUBSUB_EMULATOR_HOST', None)
        else:
            os.environ['PUBSUB_EMULATOR_HOST'] = previous


def _spawn(command: list[str], log_dir: Path, name: str, env: dict[str, str] | None = None) -> int:
    with open(log_dir / f'{name}.log', 'wb') as log_file:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    return process.pid


def _wait_for_line(log_path: Path, pattern: str, pid: int, deadline: float) -> str:
    """The first group of `pattern` once the process prints it."""
    while time.monotonic() < deadline:
        match = re.search(pattern, log_path.read_text(errors='replace'))
        if match:
            return match[1]
        _check_running(pid, log_path.stem, log_path)
        time.sleep(0.05)
    raise StackError(f'{log_path.stem} did not print {pattern!r}:\n{_tail(log_path)}')


def _wait_for_simulator(log_path: Path, pid: int, deadline: float) -> tuple[str, int]:
    while time.monotonic() < deadline:
        match = re.search(r'listening on ([0-9.]+):([0-9]+)', log_path.read_text(errors='replace'))
        if match:
            return match[1], int(match[2])
        _check_running(pid, 'simulator', log_path)
        time.sleep(0.05)
    raise StackError(f'the simulator did not start listening:\n{_tail(log_path)}')


def _wait_http(url: str, ready: Callable[[int, str], bool], pid: int, log_path: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                status, body = response.status, response.read().decode(errors='replace')
        except urllib.error.HTTPError as exc:
            status, body = exc.code, ''
        except (urllib.error.URLError, ConnectionError, socket.timeout):
            status, body = 0, ''
        if status and ready(status, body):
            return
        _check_running(pid, log_path.stem, log_path)
        time.sleep(0.1)
    raise StackError(f'{log_path.stem} did not become ready at {url}:\n{_tail(log_path)}')


def _check_running(pid: int, name: str, log_path: Path) -> None:
    if not _process_alive(pid):
        raise StackError(f'{name} exited:\n{_tail(log_path)}')


def _tail(log_path: Path) -> str:
    return log_path.read_text(errors='replace')[-3000:] if log_path.exists() else '(no output)'


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is pgid."""
    members = []
    for entry in Path('/proc').iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / 'stat').read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(')') + 2:].split()     # after "pid (comm) "
        state, group = fields[0], int(fields[2])
        if group == pgid and state != 'Z':
            members.append(int(entry.name))
    return members


def _group_alive(pgid: int) -> bool:
    return bool(_group_members(pgid))


def _process_alive(pid: int) -> bool:
    try:
        stat = Path(f'/proc/{pid}/stat').read_text()
    except OSError:
        return False
    return stat[stat.rindex(')') + 2:].split()[0] != 'Z'


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _stop_group(pgid: int) -> None:
    _signal_group(pgid, signal.SIGTERM)
    if _alive_after(pgid, 10.0):
        _signal_group(pgid, signal.SIGKILL)
        _alive_after(pgid, 5.0)


def _alive_after(pgid: int, timeout: float) -> bool:
    """Wait up to timeout for the group to empty; True if it is still alive then."""
    deadline = time.monotonic() + timeout
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _group_alive(pgid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m deploy.local_stack', description=__doc__.split('\n')[0])
    parser.add_argument('command', choices=('up', 'down', 'status', 'received'))
    parser.add_argument('--dir', type=Path, default=STACK_DIR, help='where state, logs and gcloud config go')
    args = parser.parse_args(argv)
    try:
        if args.command == 'up':
            print(instructions(up(args.dir)))
        elif args.command == 'down':
            stopped = down(args.dir)
            print(f'stopped: {", ".join(stopped)}' if stopped else 'the local stack is not up')
        elif args.command == 'received':
            requests = received(args.dir / 'webhook-sink.jsonl')
            for request in requests:
                body = request['body']
                print(f'--- {request["path"]}\n{body.get("text") if isinstance(body, dict) else body}')
            if not requests:
                print('the webhook sink has received nothing yet')
        else:
            state_file = args.dir / 'state.json'
            if not state_file.exists():
                print('the local stack is not up')
                return 1
            state = read_state(state_file)
            for name, pid in state.pids.items():
                print(f'{name:20} pgid {pid:<8} {"running" if _group_alive(pid) else "stopped"}')
            print(instructions(state))
    except StackError as exc:
        print(f'local stack: {exc}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
