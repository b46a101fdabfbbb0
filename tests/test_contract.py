"""The wire contract: decoding Pub/Sub CloudEvents into requests, and the committed JSON Schemas."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pytest
from cloudevents.http import CloudEvent

from functions.contract import (
    ErrorInfo, Gateway, IntentRequest, IntentResult, InvalidMessage, Timings, decode_message, request_schema,
    result_schema,
)
from lib.problems import problem, with_problems
from tests import pubsub_events as events
from tests.pubsub_events import b64

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / 'schemas'
PUBLISHED = datetime(2026, 11, 27, 15, 0, 47, 415000, tzinfo=timezone.utc)


def pubsub_event(data: str | None, *, attributes: dict | None = None) -> CloudEvent:
    """The CloudEvent Eventarc delivers for message '41' published at PUBLISHED (data as base64 text)."""
    return events.pubsub_event(data, message_id='41', published=PUBLISHED, attributes=attributes)


def test_decodes_a_full_request_with_its_envelope():
    decoded = decode_message(pubsub_event(
        b64({'intent': 'summary', 'params': {'x': 1}, 'dryRun': True, 'idempotencyKey': 'k-1',
                 'maxAgeSeconds': 30}),
        attributes={'source': 'scheduler'}))
    assert decoded.request == IntentRequest(intent='summary', params={'x': 1}, dry_run=True,
                                            idempotency_key='k-1', max_age_seconds=30)
    assert decoded.message_id == '41'
    assert decoded.publish_time == datetime(2026, 11, 27, 15, 0, 47, 415000, tzinfo=timezone.utc)
    assert decoded.envelope.attributes == {'source': 'scheduler'}


def test_defaults_when_only_the_intent_is_given():
    request = decode_message(pubsub_event(b64({'intent': 'health'}))).request
    assert (request.params, request.dry_run, request.idempotency_key, request.max_age_seconds) == ({}, False, None, None)


def test_empty_data_takes_the_intent_from_the_attribute():
    decoded = decode_message(pubsub_event(None, attributes={'intent': 'health'}))
    assert decoded.request.intent == 'health'
    assert decode_message(pubsub_event('', attributes={'intent': 'summary'})).request.intent == 'summary'


def test_empty_data_without_intent_attribute_is_invalid():
    with pytest.raises(InvalidMessage, match='no data and no "intent" attribute') as caught:
        decode_message(pubsub_event(None))
    assert caught.value.error_type == 'InvalidMessage'
    assert caught.value.envelope.message_id == '41'


@pytest.mark.parametrize(('data', 'error_type', 'fragment'), [
    ('not base64!!', 'InvalidMessage', 'not valid base64'),
    (base64.b64encode(b'\xff\xfe{').decode(), 'InvalidMessage', 'not UTF-8'),
    (base64.b64encode(b'{"intent": "summary",').decode(), 'InvalidMessage', 'not JSON'),
    (b64(['summary']), 'InvalidMessage', 'must be a JSON object, got list'),
    (b64({'params': {}}), 'InvalidRequest', 'intent: Field required'),
    (b64({'intent': 'summary', 'dryrun': True}), 'InvalidRequest', 'dryrun: unknown key; accepted keys: approval, dryRun, idempotencyKey'),
    (b64({'intent': 'summary', 'dryRun': 'yes'}), 'InvalidRequest', 'dryRun: Input should be a valid boolean'),
    (b64({'intent': 'summary', 'params': [1]}), 'InvalidRequest', 'params: Input should be a valid dictionary'),
    (b64({'intent': 'Summary; rm -rf'}), 'InvalidRequest', 'intent: String should match pattern'),
    (b64({'intent': 'summary', 'maxAgeSeconds': 0}), 'InvalidRequest', 'maxAgeSeconds: Input should be greater'),
])
def test_unusable_data_is_rejected_with_the_cause(data, error_type, fragment):
    with pytest.raises(InvalidMessage) as caught:
        decode_message(pubsub_event(data))
    assert caught.value.error_type == error_type
    assert fragment in str(caught.value)
    assert caught.value.envelope.message_id == '41'


def test_invalid_request_keeps_the_intent_name_for_the_result():
    with pytest.raises(InvalidMessage) as caught:
        decode_message(pubsub_event(b64({'intent': 'summary', 'unknownKey': 1})))
    assert caught.value.intent == 'summary'


def test_message_id_and_publish_time_fall_back_to_the_event():
    body = {'message': {'data': b64({'intent': 'health'}), 'attributes': {}},
            'subscription': 'projects/p/subscriptions/s'}
    decoded = decode_message(events.eventarc_event(body, event_id='77', time='2026-11-27T10:00:00Z'))
    assert decoded.message_id == '77'
    assert decoded.publish_time == datetime(2026, 11, 27, 10, tzinfo=timezone.utc)


def test_snake_case_duplicates_from_the_emulator_are_read():
    event = events.eventarc_event({'message': {'data': b64({'intent': 'health'}), 'message_id': '9',
                                               'publish_time': '2026-01-02T03:04:05.123456789Z'}})
    decoded = decode_message(event)
    assert decoded.message_id == '9'
    assert decoded.publish_time == datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)


def test_age_is_measured_on_wall_time_from_publish_time():
    decoded = decode_message(pubsub_event(b64({'intent': 'health'})))
    later = decoded.publish_time + timedelta(seconds=90)
    assert decoded.age_seconds(later) == pytest.approx(90)


def test_committed_schemas_are_the_generated_ones():
    assert json.loads((SCHEMAS / 'intent-request.schema.json').read_text()) == request_schema()
    assert json.loads((SCHEMAS / 'intent-result.schema.json').read_text()) == result_schema()
    check = subprocess.run([sys.executable, '-m', 'functions', 'schemas', '--check'], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr


def test_request_schema_names_intents_by_pattern_not_by_list():
    intent = request_schema()['properties']['intent']
    assert 'enum' not in intent and intent['pattern']
    validator = jsonschema.Draft202012Validator(request_schema())
    assert validator.is_valid({'intent': 'a_future_intent', 'params': {'qty': 1}})
    assert not validator.is_valid({'intent': 'summary', 'extra': 1})
    assert not validator.is_valid({'params': {}})
    assert not validator.is_valid({'intent': 'summary', 'dryRun': 'true'})


def test_a_result_document_uses_camel_case_and_matches_its_schema():
    now = datetime.now(timezone.utc)
    result = IntentResult(
        run_id='r-1', message_id='41', idempotency_key=None, intent='summary', status='error', dry_run=False,
        trading_mode='paper', account='DU1234567', started_at=now, finished_at=now, duration_ms=12.5,
        timings=Timings(queue_ms=3.0, connect_ms=4.0, intent_ms=5.0),
        gateway=Gateway(host='127.0.0.1', port=4002, client_id=101, server_version=176),
        result=None, error=ErrorInfo(type='ConnectionRefusedError', message='refused', retryable=True))
    wire = result.to_wire()
    jsonschema.Draft202012Validator(result_schema(), format_checker=jsonschema.FormatChecker()).validate(wire)
    assert wire['schema'] == 'intent-result/v1'
    assert wire['gateway'] == {'host': '127.0.0.1', 'port': 4002, 'clientId': 101, 'serverVersion': 176}
    assert wire['timings'] == {'queueMs': 3.0, 'connectMs': 4.0, 'intentMs': 5.0}
    assert set(wire) == set(result_schema()['required'])
    assert IntentResult.model_validate_json(result.to_json()) == result


def test_the_result_schema_refuses_unknown_statuses_and_missing_fields():
    validator = jsonschema.Draft202012Validator(result_schema())
    now = datetime.now(timezone.utc)
    wire = IntentResult(run_id='r', message_id=None, intent=None, status='rejected', dry_run=False,
                        trading_mode='paper', account=None, started_at=now, finished_at=now, duration_ms=0.0,
                        timings=Timings(), gateway=None, result=None,
                        error=ErrorInfo(type='InvalidMessage', message='m', retryable=False)).to_wire()
    assert validator.is_valid(wire)
    assert not validator.is_valid({**wire, 'status': 'maybe'})
    assert not validator.is_valid({k: v for k, v in wire.items() if k != 'runId'})


def test_every_result_object_carries_structured_problems_and_degraded():
    validator = jsonschema.Draft202012Validator(result_schema())
    now = datetime.now(timezone.utc)
    wire = IntentResult(run_id='r', message_id=None, intent='allocation', status='error', dry_run=False,
                        trading_mode='paper', account=None, started_at=now, finished_at=now, duration_ms=0.0,
                        timings=Timings(), gateway=None, result=with_problems({'orders': []}),
                        error=ErrorInfo(type='StoreUnavailable', message='m', retryable=True)).to_wire()
    assert validator.is_valid(wire) and wire['result']['problems'] == [] and wire['result']['degraded'] is False
    stuck = problem('order-not-cancelled', 'still working', order_ref='ibj:0123456789:1')
    assert validator.is_valid({**wire, 'result': with_problems({'problems': [stuck]})})
    assert not validator.is_valid({**wire, 'result': {'orders': []}})                       # no problems
    assert not validator.is_valid({**wire, 'result': {'problems': ['a string'], 'degraded': True}})
    assert with_problems({'problems': [problem('no-price', 'SPY: no price')]})['degraded'] is True
