"""Real local services for tests: the Pub/Sub and Firestore emulators and a functions-framework server process.

All run as subprocesses in their own process group, listen on 127.0.0.1 only, and are stopped
by process group so no Java or gunicorn child outlives the test session.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

from google.api_core import exceptions as gexc

REPO = Path(__file__).resolve().parent.parent
PROJECT = 'test-project'


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def require_tool(name: str, consequence: str = '') -> str:
    """The path of a tool a test needs: skip without it, except under CI=true where that fails."""
    path = shutil.which(name)
    if path is None:
        import pytest
        reason = f'{name} is not installed' + (f', so {consequence}' if consequence else '')
        if os.environ.get('CI') == 'true':
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def _http_status(url: str, timeout: float = 1.0) -> tuple[int, str] | None:
    """Status and body of GET url, or None while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode(errors='replace')
    except urllib.error.HTTPError as exc:
        return exc.code, ''
    except (urllib.error.URLError, ConnectionError, socket.timeout):
        return None


def _stop_group(process: subprocess.Popen, timeout: float = 10.0) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)


def _emulator_ok(status: int, body: str) -> bool:
    return status == 200 and body.strip() == 'Ok'


class ServiceFailed(RuntimeError):
    """A service process did not come up; the message holds the tail of its output."""


@dataclass
class Process:
    """A service subprocess in its own process group, its output in a log file."""

    process: subprocess.Popen
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors='replace') if self.log_path.exists() else ''

    def stop(self) -> None:
        _stop_group(self.process)

    def wait_until(self, url: str, ready: Callable[[int, str], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceFailed(f'{what} exited with {self.process.returncode}:\n{self.output()[-3000:]}')
            answer = _http_status(url)
            if answer is not None and ready(*answer):
                return
            time.sleep(0.1)
        self.stop()
        raise ServiceFailed(f'{what} not ready after {timeout:.0f} s:\n{self.output()[-3000:]}')


def spawn(command: list[str], *, env: dict[str, str], log_dir: Path, name: str, cwd: Path = REPO) -> Process:
    """Start command in a new process group with its output going to log_dir/name.log."""
    log_path = log_dir / f'{name}.log'
    with open(log_path, 'wb') as log_file:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    return Process(process, log_path)


@dataclass
class Emulator:
    """A gcloud emulator on 127.0.0.1; `process` is None when an already running one is reused.

    The subclasses say which: the variable its clients read (`env`) and how gcloud starts it.
    """

    host: str                 # host:port
    project: str = PROJECT
    process: Process | None = None

    name: ClassVar[str]
    env: ClassVar[str]

    @classmethod
    def start(cls, log_dir: Path, project: str = PROJECT, timeout: float = 60.0) -> Emulator:
        """Start the emulator on a free port and wait until GET / says Ok."""
        host = f'127.0.0.1:{free_port()}'
        command = [shutil.which('gcloud') or 'gcloud', *cls._arguments(host, project, log_dir), '--quiet']
        process = spawn(command, env=dict(os.environ), log_dir=log_dir,
                        name=f'{cls.env.split("_")[0].lower()}-emulator')
        emulator = cls(host, project, process)
        emulator.wait_ready(timeout)
        return emulator

    @classmethod
    def _arguments(cls, host: str, project: str, log_dir: Path) -> list[str]:
        raise NotImplementedError

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until GET / answers Ok (an emulator started elsewhere may still be booting)."""
        url = f'http://{self.host}/'
        if self.process is not None:
            self.process.wait_until(url, _emulator_ok, timeout, self.name)
            return
        deadline = time.monotonic() + timeout
        while not _emulator_ok(*(_http_status(url) or (0, ''))):
            if time.monotonic() > deadline:
                raise ServiceFailed(f'no {self.name} answers at {url} ({self.env})')
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


class PubSubEmulator(Emulator):
    """`gcloud beta emulators pubsub start`, its data in a folder of its own."""

    name = 'Pub/Sub emulator'
    env = 'PUBSUB_EMULATOR_HOST'

    @classmethod
    def _arguments(cls, host: str, project: str, log_dir: Path) -> list[str]:
        data_dir = Path(tempfile.mkdtemp(prefix='pubsub-data-', dir=log_dir))
        return ['beta', 'emulators', 'pubsub', 'start', f'--host-port={host}', f'--project={project}',
                f'--data-dir={data_dir}']


class FirestoreEmulator(Emulator):
    """`gcloud emulators firestore start` (each test uses a project of its own, so data never mixes)."""

    name = 'Firestore emulator'
    env = 'FIRESTORE_EMULATOR_HOST'

    @classmethod
    def _arguments(cls, host: str, project: str, log_dir: Path) -> list[str]:
        return ['emulators', 'firestore', 'start', f'--host-port={host}']


def session_emulator(kind: type[Emulator], log_dir: Callable[[], Path]) -> Iterator[Emulator]:
    """The emulator `kind.env` names, else one started (in `log_dir()`) with `kind.env` set while it runs.

    Without gcloud the tests that need it are skipped, except under CI=true where that is a failure.
    """
    given = os.environ.get(kind.env)
    if given:
        emulator = kind(given)
        emulator.wait_ready()
        yield emulator
        return
    require_tool('gcloud', f'the {kind.name} cannot start (and {kind.env} is unset)')
    emulator = kind.start(log_dir())
    os.environ[kind.env] = emulator.host
    try:
        yield emulator
    finally:
        emulator.stop()
        os.environ.pop(kind.env, None)


@dataclass
class FunctionServer:
    """`functions-framework --target run_intent --source main.py` serving on 127.0.0.1."""

    port: int
    process: Process

    @classmethod
    def start(cls, env: dict[str, str], log_dir: Path, timeout: float = 30.0) -> FunctionServer:
        """Start the server with `env` added to this process's environment; wait until it answers."""
        port = free_port()
        executable = str(Path(sys.executable).parent / 'functions-framework')
        command = [executable, '--target', 'run_intent', '--source', 'main.py',
                   '--host', '127.0.0.1', '--port', str(port)]
        full_env = {**os.environ, 'PYTHONUNBUFFERED': '1', **env}
        process = spawn(command, env=full_env, log_dir=log_dir, name=f'functions-framework-{port}')
        server = cls(port, process)
        process.wait_until(server.url + '/', lambda status, body: status == 405, timeout, 'functions-framework')
        return server

    @property
    def url(self) -> str:
        return f'http://127.0.0.1:{self.port}'

    def push_endpoint(self, project: str, topic: str) -> str:
        """The push URL from which functions-framework derives the CloudEvent source."""
        return f'{self.url}/projects/{project}/topics/{topic}'

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON log lines the function wrote so far."""
        lines = []
        for line in self.process.output().splitlines():
            if line.startswith('{'):
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return lines

    def stop(self) -> None:
        self.process.stop()


@dataclass
class PubSub:
    """Topics and subscriptions on the emulator, created with unique names and deleted on cleanup."""

    emulator: PubSubEmulator
    prefix: str
    _subscriptions: list[str] = field(default_factory=list)
    _topics: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from google.cloud import pubsub_v1

        # The clients read PUBSUB_EMULATOR_HOST, which the emulator fixture has set.
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()

    @property
    def project(self) -> str:
        return self.emulator.project

    def topic(self, name: str) -> str:
        """Create topic `<prefix>-<name>` and return its id."""
        topic_id = f'{self.prefix}-{name}'
        self.publisher.create_topic(name=self.publisher.topic_path(self.project, topic_id))
        self._topics.append(topic_id)
        return topic_id

    def pull_subscription(self, topic_id: str) -> str:
        """A pull subscription on topic_id; returns its full path."""
        return self._subscribe(topic_id, f'{topic_id}-pull', push_endpoint=None)

    def push_subscription(self, topic_id: str, endpoint: str, ack_deadline: int = 60) -> str:
        """A push subscription delivering topic_id to endpoint; returns its full path."""
        return self._subscribe(topic_id, f'{topic_id}-push', push_endpoint=endpoint, ack_deadline=ack_deadline)

    def _subscribe(self, topic_id: str, name: str, push_endpoint: str | None, ack_deadline: int = 60) -> str:
        path = self.subscriber.subscription_path(self.project, name)
        request = {'name': path, 'topic': self.publisher.topic_path(self.project, topic_id),
                   'ack_deadline_seconds': ack_deadline}
        if push_endpoint:
            request['push_config'] = {'push_endpoint': push_endpoint}
        self.subscriber.create_subscription(request=request)
        self._subscriptions.append(path)
        return path

    def delete_subscription(self, path: str) -> None:
        """Delete a subscription now (stops a push subscription's redeliveries)."""
        self.subscriber.delete_subscription(subscription=path)
        self._subscriptions.remove(path)

    def publish(self, topic_id: str, data: bytes | dict[str, Any], **attributes: str) -> str:
        """Publish and wait for the ack; dicts are sent as JSON. Returns the messageId."""
        payload = json.dumps(data).encode() if isinstance(data, dict) else data
        return self.publisher.publish(self.publisher.topic_path(self.project, topic_id), payload,
                                      **attributes).result(timeout=10)

    def pull(self, subscription: str, count: int, timeout: float = 15.0) -> list[Message]:
        """Pull and ack until `count` messages arrived or timeout passed; returns what arrived."""
        received: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(received) < count and time.monotonic() < deadline:
            batch = self.pull_once(subscription, count - len(received))
            received.extend(batch)
            if not batch:
                time.sleep(0.05)
        return received

    def pull_once(self, subscription: str, max_messages: int = 100) -> list[Message]:
        """One pull request: the messages available now (acked), possibly none."""
        try:
            response = self.subscriber.pull(request={'subscription': subscription, 'max_messages': max_messages},
                                            timeout=2)
        except gexc.DeadlineExceeded:
            return []
        if response.received_messages:
            self.subscriber.acknowledge(request={'subscription': subscription,
                                                 'ack_ids': [m.ack_id for m in response.received_messages]})
        return [Message(m.message.data, dict(m.message.attributes), m.message.message_id)
                for m in response.received_messages]

    def cleanup(self) -> None:
        for path in list(self._subscriptions):
            try:
                self.subscriber.delete_subscription(subscription=path)
            except gexc.NotFound:
                pass
        for topic_id in self._topics:
            try:
                self.publisher.delete_topic(topic=self.publisher.topic_path(self.project, topic_id))
            except gexc.NotFound:
                pass
        self.publisher.transport.close()
        self.subscriber.close()


@dataclass(frozen=True)
class Message:
    """A pulled message."""

    data: bytes
    attributes: dict[str, str]
    message_id: str

    def json(self) -> dict[str, Any]:
        return json.loads(self.data)
