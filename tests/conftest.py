"""Shared fixtures: the Pub/Sub and Firestore emulators, functions-framework servers, and a simulated gateway."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.emulators import FirestoreEmulator, FunctionServer, PubSub, PubSubEmulator, session_emulator

# Hypothesis profiles. `ci` (chosen when CI=true): derandomized, so a CI run is reproducible and a
# failure there fails again on a developer's machine. `dev` (the default elsewhere): random, as
# hypothesis normally is. `explore`: random and long, for hunting (HYPOTHESIS_PROFILE=explore); a
# failure found by exploring becomes an @example of the test, with the seed noted in docs/reliability.md.
# Tests set only max_examples themselves; everything else comes from the profile.
_COMMON = dict(database=None, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
settings.register_profile('ci', derandomize=True, **_COMMON)
settings.register_profile('dev', **_COMMON)
settings.register_profile('explore', **_COMMON, max_examples=5_000)
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE') or ('ci' if os.environ.get('CI') == 'true' else 'dev'))


@pytest.fixture(scope='session', autouse=True)
def local_state_outside_the_repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Runs that keep state (the run history, claims) write to a session folder, not the repo's .local/,
    unless a test or the caller chose a SQLite file."""
    if os.environ.get('SQLITE_PATH'):
        yield
        return
    os.environ['SQLITE_PATH'] = str(tmp_path_factory.mktemp('state') / 'state.sqlite3')
    try:
        yield
    finally:
        os.environ.pop('SQLITE_PATH', None)


@pytest.fixture(scope='session')
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PubSubEmulator]:
    """The Pub/Sub emulator: the one PUBSUB_EMULATOR_HOST names, else one started for the session."""
    yield from session_emulator(PubSubEmulator, lambda: tmp_path_factory.mktemp('pubsub'))


@pytest.fixture(scope='session')
def firestore_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirestoreEmulator]:
    """The Firestore emulator: the one FIRESTORE_EMULATOR_HOST names, else one started for the session."""
    yield from session_emulator(FirestoreEmulator, lambda: tmp_path_factory.mktemp('firestore'))


@pytest.fixture
def pubsub(pubsub_emulator: PubSubEmulator, request: pytest.FixtureRequest) -> Iterator[PubSub]:
    """Topics and subscriptions with names unique to this test, deleted afterwards."""
    helper = PubSub(pubsub_emulator, prefix=_unique_prefix(request.node.name))
    try:
        yield helper
    finally:
        helper.cleanup()


@pytest.fixture(scope='module')
def module_pubsub(pubsub_emulator: PubSubEmulator, request: pytest.FixtureRequest) -> Iterator[PubSub]:
    """Like `pubsub`, shared by the tests of one module."""
    helper = PubSub(pubsub_emulator, prefix=_unique_prefix(request.module.__name__.rsplit('.', 1)[-1]))
    try:
        yield helper
    finally:
        helper.cleanup()


@pytest.fixture
def simulator() -> Iterator[object]:
    """A simulated IB Gateway serving on 127.0.0.1 for one test."""
    from simulator import Simulator

    with Simulator() as sim:
        yield sim


@pytest.fixture(scope='module')
def module_gateway() -> Iterator[object]:
    """One simulated gateway (account DU1234567, seed 1) for a whole module; `gateway` hands it out healthy."""
    from simulator import Simulator

    with Simulator(accounts=['DU1234567'], seed=1) as sim:
        yield sim


@pytest.fixture
def gateway(module_gateway) -> object:
    """The module's gateway with every fault switched off and a real gateway's limits, with no request history
    (earlier tests' historical requests do not count toward this one's pacing)."""
    module_gateway.faults.clear()
    module_gateway.limits.reset()
    return module_gateway


@pytest.fixture
def start_function_server(tmp_path: Path) -> Iterator[Callable[..., FunctionServer]]:
    """Start functions-framework servers for the test (env as keyword args); all stopped afterwards."""
    servers: list[FunctionServer] = []

    def start(**env: str) -> FunctionServer:
        server = FunctionServer.start({k: str(v) for k, v in env.items()}, tmp_path)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


def _unique_prefix(name: str) -> str:
    cleaned = ''.join(ch if ch.isalnum() else '-' for ch in name.lower()).strip('-')[:30]
    return f't-{cleaned}-{uuid.uuid4().hex[:6]}'
