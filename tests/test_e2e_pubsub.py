"""End to end: Pub/Sub emulator → push → functions-framework (subprocess) → simulated gateway → results topic."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Iterator

import jsonschema
import pytest
import requests

from functions.contract import result_schema
from tests.emulators import PROJECT, FunctionServer, PubSub
from tests.pubsub_events import TOPIC, b64, eventarc_headers, pubsub_message, push_body

SCHEMA_VALIDATOR = jsonschema.Draft202012Validator(result_schema(), format_checker=jsonschema.FormatChecker())
ACCOUNT = 'DU1234567'


class Inbox:
    """Results pulled from the results topic, by the messageId of the request they answer."""

    def __init__(self, pubsub: PubSub, subscription: str) -> None:
        self.pubsub, self.subscription = pubsub, subscription
        self.by_message: dict[str, list[dict]] = {}

    def wait(self, message_ids: list[str], timeout: float = 30.0, count: int = 1) -> dict[str, list[dict]]:
        """Pull until each id has `count` results; fail listing what is missing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._have(message_ids, count):
            self._pull()
        missing = [i for i in message_ids if len(self.by_message.get(i, [])) < count]
        assert not missing, f'no result for messages {missing}'
        return {i: self.by_message[i] for i in message_ids}

    def drain(self, seconds: float) -> None:
        """Keep pulling for `seconds`, collecting whatever arrives."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._pull()

    def _have(self, message_ids: list[str], count: int) -> bool:
        return all(len(self.by_message.get(i, [])) >= count for i in message_ids)

    def _pull(self) -> None:
        batch = self.pubsub.pull_once(self.subscription)
        for message in batch:
            doc = message.json()
            assert message.attributes['runId'] == doc['runId']
            self.by_message.setdefault(doc['messageId'], []).append(doc)
        if not batch:
            time.sleep(0.05)


@pytest.fixture(scope='module')
def gateway() -> Iterator[object]:
    from simulator import Simulator

    with Simulator(accounts=[ACCOUNT]) as sim:
        yield sim


@pytest.fixture(scope='module')
def deployment(module_pubsub: PubSub, gateway, tmp_path_factory) -> Iterator[tuple[FunctionServer, str, Inbox]]:
    """The function served with THREADS=20, a push subscription on `intents`, and a results inbox."""
    intents = module_pubsub.topic('intents')
    results = module_pubsub.topic('results')
    inbox = Inbox(module_pubsub, module_pubsub.pull_subscription(results))
    server = FunctionServer.start({
        'THREADS': '20', 'RESULTS_TOPIC': results, 'GOOGLE_CLOUD_PROJECT': module_pubsub.project,
        'PUBSUB_EMULATOR_HOST': module_pubsub.emulator.host, 'IB_GATEWAY_HOST': gateway.host,
        'IB_GATEWAY_PORT': str(gateway.port), 'IB_CONNECT_TIMEOUT': '3', 'INTENT_DEADLINE_SECONDS': '20',
    }, tmp_path_factory.mktemp('function'))
    module_pubsub.push_subscription(intents, server.push_endpoint(module_pubsub.project, intents))
    try:
        yield server, intents, inbox
    finally:
        server.stop()


def post_binary(server: FunctionServer, request: dict | None = None, *, raw_b64: str | None = None,
                published: datetime | None = None, message_id: str | None = None) -> tuple[int, str]:
    """POST a binary-mode CloudEvent, as Eventarc delivers it; returns (HTTP status, messageId)."""
    message = pubsub_message(raw_b64 if raw_b64 is not None else b64(request), message_id=message_id,
                             published=published)
    response = requests.post(server.url + '/', data=json.dumps(push_body(message)),
                             headers=eventarc_headers(message['messageId'], message['publishTime']), timeout=60)
    return response.status_code, message['messageId']


def post_push(server: FunctionServer, raw_b64: str, *, published: datetime | None = None) -> tuple[int, str]:
    """POST the emulator's legacy push body straight to the function; returns (HTTP status, messageId)."""
    message = pubsub_message(raw_b64, published=published, snake_case=True)
    response = requests.post(server.push_endpoint(PROJECT, TOPIC), json=push_body(message), timeout=60)
    return response.status_code, message['messageId']


def test_summary_and_health_through_pubsub(deployment, module_pubsub, gateway):
    server, intents, inbox = deployment
    gateway.broker.set_position(ACCOUNT, gateway.universe.resolve(symbol='AAPL', secType='STK')[0], 25, 180.0)
    summary_id = module_pubsub.publish(intents, {'intent': 'summary'})
    health_id = module_pubsub.publish(intents, {'intent': 'health'}, source='scheduler')
    results = inbox.wait([summary_id, health_id])
    summary, health = results[summary_id][0], results[health_id][0]
    for doc in (summary, health):
        SCHEMA_VALIDATOR.validate(doc)
        assert doc['status'] == 'ok', doc['error']
        assert doc['account'] == ACCOUNT
        assert doc['timings']['queueMs'] >= 0
    positions = {p['contract']['symbol']: p for p in summary['result']['positions']}
    assert positions['AAPL']['position'] == 25 and positions['AAPL']['avgCost'] == pytest.approx(180.0)
    assert 'NetLiquidation' in summary['result']['summary']
    assert health['result']['managedAccounts'] == [ACCOUNT] and health['result']['apiReady'] is True
    assert health['gateway']['port'] == gateway.port


def test_binary_mode_cloud_event_as_eventarc_sends(deployment):
    server, _, inbox = deployment
    status, message_id = post_binary(server, {'intent': 'health'})
    assert status == 200
    doc = inbox.wait([message_id])[message_id][0]
    SCHEMA_VALIDATOR.validate(doc)
    assert doc['status'] == 'ok'


def test_empty_data_with_intent_attribute_through_pubsub(deployment, module_pubsub):
    _, intents, inbox = deployment
    message_id = module_pubsub.publish(intents, b'', intent='health')
    doc = inbox.wait([message_id])[message_id][0]
    assert (doc['intent'], doc['status']) == ('health', 'ok')


def test_twenty_concurrent_invocations_use_distinct_client_ids(deployment, gateway):
    server, _, inbox = deployment
    gateway.faults.latency_ms = 100    # make the runs long enough to overlap for certain (a lean health is 3 round trips)
    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            posted = list(pool.map(lambda _: post_binary(server, {'intent': 'health'}), range(20)))
    finally:
        gateway.faults.latency_ms = 0
    assert [status for status, _ in posted] == [200] * 20
    results = inbox.wait([message_id for _, message_id in posted])
    docs = [found[0] for found in results.values()]
    assert [doc['status'] for doc in docs] == ['ok'] * 20
    assert len({doc['gateway']['clientId'] for doc in docs}) == 20
    assert _max_overlap(docs) >= 15, 'the invocations did not run concurrently'


def test_gateway_down_gives_retryable_error_500_then_redelivery_succeeds(deployment, module_pubsub, gateway):
    server, intents, inbox = deployment
    gateway.faults.refuse_connections = True
    try:
        status, direct_id = post_binary(server, {'intent': 'health'})
        assert status == 500
        direct = inbox.wait([direct_id])[direct_id][0]
        assert direct['status'] == 'error' and direct['error']['retryable'] is True
        assert direct['error']['type'] == 'GatewayUnavailable'
        pushed_id = module_pubsub.publish(intents, {'intent': 'health'})
        first = inbox.wait([pushed_id])[pushed_id][0]
        assert first['status'] == 'error' and first['error']['retryable'] is True
    finally:
        gateway.faults.refuse_connections = False
    # Pub/Sub redelivers after the 500; once the gateway is back a redelivery succeeds.
    attempts = inbox.by_message[pushed_id]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and attempts[-1]['status'] != 'ok':
        inbox.drain(0.5)
    assert attempts[-1]['status'] == 'ok'
    assert len({doc['runId'] for doc in attempts}) == len(attempts)


STALE = datetime.now(timezone.utc) - timedelta(minutes=10)


@pytest.mark.parametrize(('raw_b64', 'published', 'error_type'), [
    ('@@not base64@@', None, 'InvalidMessage'),
    (b64(b'{"intent": "summary"'), None, 'InvalidMessage'),
    (b64({'intent': 'rebalance_everything'}), None, 'UnknownIntent'),
    (b64({'intent': 'summary', 'params': {'account': 12345}}), None, 'InvalidParams'),
    (b64({'intent': 'health', 'maxAgeSeconds': 60}), STALE, 'StaleMessage'),
], ids=['bad-base64', 'bad-json', 'unknown-intent', 'wrong-param-type', 'stale'])
def test_permanent_failures_publish_a_rejection_and_ack(deployment, raw_b64, published, error_type):
    server, _, inbox = deployment
    status, message_id = post_push(server, raw_b64, published=published)
    assert status == 200
    doc = inbox.wait([message_id])[message_id][0]
    SCHEMA_VALIDATOR.validate(doc)
    assert doc['status'] == 'rejected'
    assert doc['error']['type'] == error_type and doc['error']['retryable'] is False


def test_rejected_pubsub_message_is_acked_not_redelivered(deployment, module_pubsub):
    _, intents, inbox = deployment
    message_id = module_pubsub.publish(intents, b'{"intent": "summary", "params": {"account": 1}}')
    assert inbox.wait([message_id])[message_id][0]['status'] == 'rejected'
    inbox.drain(3)            # the emulator redelivers a nacked message about every second
    assert len(inbox.by_message[message_id]) == 1


def _max_overlap(docs: list[dict]) -> int:
    """The largest number of runs in progress at the same moment."""
    events = sorted([(datetime.fromisoformat(doc['startedAt']), 1) for doc in docs]
                    + [(datetime.fromisoformat(doc['finishedAt']), -1) for doc in docs])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak
