"""The handler in process: CloudEvents in, results out, against a real simulated gateway."""
from __future__ import annotations

import asyncio
import base64
import gc
import json
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import jsonschema
import pytest
from cloudevents.http import CloudEvent

from functions.contract import result_schema
from functions.handler import TransientFailure, handle
from functions.publisher import PublishFailed
from lib.config import Settings
from tests.pubsub_events import b64, pubsub_event

SCHEMA_VALIDATOR = jsonschema.Draft202012Validator(result_schema(), format_checker=jsonschema.FormatChecker())
REQ_CURRENT_TIME = 49


def event(payload: dict | None = None, *, raw: str | None = None, published: datetime | None = None,
          attributes: dict | None = None, message_id: str = '1001') -> CloudEvent:
    """The CloudEvent Eventarc delivers for one Pub/Sub message carrying `payload` (or `raw` data)."""
    data = raw if raw is not None else b64(payload) if payload is not None else None
    return pubsub_event(data, message_id=message_id, published=published, attributes=attributes)


def settings_for(sim, **overrides) -> Settings:
    base = Settings.from_env({'IB_GATEWAY_HOST': sim.host, 'IB_GATEWAY_PORT': str(sim.port),
                              'IB_CONNECT_TIMEOUT': '2', 'INTENT_DEADLINE_SECONDS': '10'})
    return replace(base, **overrides)


def printed_results(out: str) -> list[dict]:
    """The result documents among the JSON lines written to stdout (log lines are there too)."""
    docs = [json.loads(line) for line in out.splitlines() if line.startswith('{')]
    return [doc for doc in docs if doc.get('schema') == 'intent-result/v1']


def test_summary_runs_against_the_gateway_and_prints_the_result(simulator, capsys):
    result = handle(event({'intent': 'summary'}), settings_for(simulator))
    printed = printed_results(capsys.readouterr().out)
    assert printed == [result.to_wire()]
    doc = printed[0]
    SCHEMA_VALIDATOR.validate(doc)
    assert doc['status'] == 'ok', doc['error']
    assert doc['account'] == 'DU1234567'
    assert doc['messageId'] == '1001' and doc['intent'] == 'summary' and doc['tradingMode'] == 'paper'
    assert doc['gateway']['port'] == simulator.port and 100 <= doc['gateway']['clientId'] <= 999
    assert doc['gateway']['serverVersion'] >= 157
    assert doc['timings']['connectMs'] > 0 and doc['timings']['intentMs'] > 0
    assert 0 <= doc['timings']['queueMs'] < 5000
    assert doc['durationMs'] >= doc['timings']['connectMs'] + doc['timings']['intentMs']


def test_health_reports_the_gateway(simulator, capsys):
    result = handle(event({'intent': 'health'}), settings_for(simulator))
    assert result.status == 'ok'
    assert result.result['managedAccounts'] == ['DU1234567']
    assert result.result['apiReady'] is True
    assert printed_results(capsys.readouterr().out)[0]['runId'] == result.run_id


def test_results_go_to_the_topic_with_attributes(simulator, pubsub):
    results = pubsub.topic('results')
    pulled = pubsub.pull_subscription(results)
    by_id = settings_for(simulator, results_topic=results, project=pubsub.project)
    by_path = settings_for(simulator, results_topic=f'projects/{pubsub.project}/topics/{results}', project=None)
    first = handle(event({'intent': 'health'}, message_id='m-1'), by_id)
    second = handle(event({'intent': 'nope'}, message_id='m-2'), by_path)
    messages = {m.attributes['messageId']: m for m in pubsub.pull(pulled, 2)}
    assert messages['m-1'].json() == first.to_wire()
    assert messages['m-1'].attributes == {'intent': 'health', 'status': 'ok', 'runId': first.run_id,
                                          'messageId': 'm-1'}
    assert messages['m-2'].json() == second.to_wire()
    assert messages['m-2'].attributes['status'] == 'rejected'


def test_a_result_that_cannot_be_published_raises(simulator, pubsub):
    settings = settings_for(simulator, results_topic='no-such-topic', project=pubsub.project, publish_timeout=2.0)
    started = time.monotonic()
    with pytest.raises(PublishFailed, match='projects/test-project/topics/no-such-topic'):
        handle(event({'intent': 'health'}), settings)
    assert time.monotonic() - started < settings.publish_timeout + 1


def test_gateway_down_publishes_a_retryable_error_then_raises(simulator, capsys):
    simulator.faults.refuse_connections = True
    with pytest.raises(TransientFailure) as raised:
        handle(event({'intent': 'health'}), settings_for(simulator, connect_attempts=2))
    doc = printed_results(capsys.readouterr().out)[0]
    assert doc == raised.value.result.to_wire()
    assert doc['status'] == 'error' and doc['error']['retryable'] is True
    assert doc['error']['type'] == 'GatewayUnavailable'
    assert '2 attempt' in doc['error']['message']


@pytest.mark.parametrize(('message', 'error_type', 'fragment'), [
    (event(raw='%%%not-base64'), 'InvalidMessage', 'base64'),
    (event(raw=base64.b64encode(b'{"intent":').decode()), 'InvalidMessage', 'not JSON'),
    (event({'intent': 'no_such_intent'}), 'UnknownIntent',
     'known intents: allocation, cash-balancer, close-all, collect-market-data, execute-plan, health, summary, trade-reconciliation'),
    (event({'intent': 'summary', 'params': {'bogus': 1}}), 'InvalidParams', 'params.bogus'),
    (event({'intent': 'health', 'maxAgeSeconds': 30}, published=datetime.now(timezone.utc) - timedelta(minutes=5)),
     'StaleMessage', 'older than maxAgeSeconds 30'),
])
def test_permanent_failures_are_rejected_and_return(simulator, capsys, message, error_type, fragment):
    result = handle(message, settings_for(simulator))
    assert result.status == 'rejected'
    assert result.error.type == error_type and fragment in result.error.message
    assert result.error.retryable is False
    assert printed_results(capsys.readouterr().out) == [result.to_wire()]
    assert simulator.counters() == [], 'a rejected message must never reach the gateway'


def test_empty_data_with_intent_attribute_runs_that_intent(simulator):
    result = handle(event(attributes={'intent': 'health'}), settings_for(simulator))
    assert (result.intent, result.status) == ('health', 'ok')


def _open_loops() -> set[int]:
    return {id(obj) for obj in gc.get_objects()
            if isinstance(obj, asyncio.AbstractEventLoop) and not obj.is_closed()}


def test_deadline_mid_intent_gives_a_result_in_time_and_leaves_nothing_behind(simulator, capsys):
    settings = settings_for(simulator, deadline_seconds=1.0)
    handle(event({'intent': 'health'}), settings)            # warm-up: lazily created threads exist now
    threads_before = set(threading.enumerate())
    loops_before = _open_loops()
    simulator.faults.stall = {REQ_CURRENT_TIME}
    started = time.monotonic()
    with pytest.raises(TransientFailure) as raised:
        handle(event({'intent': 'health'}), settings)
    elapsed = time.monotonic() - started
    result = raised.value.result
    assert elapsed < settings.deadline_seconds + 1
    assert result.status == 'error' and result.error.type == 'DeadlineExceeded'
    assert result.error.retryable is True     # health is read-only: running it again is safe
    assert result.gateway.client_id is not None
    assert set(threading.enumerate()) == threads_before
    gc.collect()
    assert _open_loops() <= loops_before
    assert printed_results(capsys.readouterr().out)[-1] == result.to_wire()
