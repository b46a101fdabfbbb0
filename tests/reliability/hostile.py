"""Hypothesis strategies for malformed and hostile Pub/Sub messages, each labelled with the error it must get.

Every message drawn here is refused before any gateway is contacted: each one carries at least one
defect that the contract or an intent's Params rejects on its own. A draw is a Hostile: the
CloudEvent, its category and the error type it must get.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from cloudevents.http import CloudEvent
from hypothesis import strategies as st
from pydantic import ValidationError

from functions.contract import INTENT_NAME_PATTERN
from intents.registry import get_intent, intent_names
from strategies.registry import strategy_names
from tests.pubsub_events import b64, eventarc_event, pubsub_event, timestamp

INJECTIONS = [
    "'; DROP TABLE claims; --", '" OR ""="', '$(touch /tmp/pwned)', '`id`', '; rm -rf / #', '| cat /etc/passwd',
    '../../../../etc/passwd', '..\\..\\windows\\system32', '{{7*7}}', '${7*7}', '#{7*7}',
    '${jndi:ldap://127.0.0.1:1389/a}', '<script>alert(1)</script>', '%s%s%s%s%n', '%x%x%x',
    "__import__('os').system('id')", '{"$ne": null}', '{"$where": "sleep(1000)"}', 'health\nsummary',
    'summary; health', '\x00', '\x00summary', '\ud800', '\u202eyrammus', 'ＳＵＭＭＡＲＹ', 'summary\t',
    ' summary', 'SUMMARY', 'health ', 'projects/p/topics/results', 'http://127.0.0.1:1/', '\\', '\r\n\r\n',
]
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                         st.text(max_size=40), st.sampled_from(INJECTIONS))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=6)
HOSTILE_TEXT = st.one_of(st.text(max_size=80), st.sampled_from(INJECTIONS))
REQUEST_KEYS = {'intent', 'params', 'dryRun', 'idempotencyKey', 'maxAgeSeconds',
                'dry_run', 'idempotency_key', 'max_age_seconds'}


def _valid_intent_name(name: str) -> bool:
    return re.fullmatch(INTENT_NAME_PATTERN, name) is not None


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode('utf-8')
    except UnicodeDecodeError:
        return False
    return True


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _params_rejected(intent: str, params: Any) -> bool:
    try:
        get_intent(intent).Params.model_validate(params)
    except ValidationError:
        return True
    return False


def _message(data: str | None, **kwargs: Any) -> CloudEvent:
    """Hostile data as a push subscription delivers it, through functions-framework's conversion of the push
    body (which refuses a message without data: that one comes as Eventarc's CloudEvent)."""
    return pubsub_event(data, push=data is not None, **kwargs)


@dataclass(frozen=True)
class Hostile:
    """A drawn message and the rejection it must get; its repr stays short when hypothesis reports it."""

    category: str
    error_type: str
    event: CloudEvent

    def __repr__(self) -> str:
        data = self.event.data
        message = data.get('message') if isinstance(data, dict) else None
        shown = message.get('data') if isinstance(message, dict) else data
        text = repr(shown)
        if len(text) > 300:
            text = f'{text[:300]}... ({len(text)} chars)'
        return f'Hostile({self.category!r}, expects {self.error_type}, data={text})'


def _labelled(category: str, error_type: str):
    return lambda event: Hostile(category, error_type, event)


# --- unreadable data ------------------------------------------------------------------------

bad_base64 = st.text(min_size=1, max_size=200).filter(lambda s: s.strip() and not _is_base64(s)).map(
    lambda s: _message(s)).map(_labelled('bad-base64', 'InvalidMessage'))

not_utf8 = st.binary(min_size=1, max_size=200).filter(lambda b: not _is_utf8(b)).map(
    lambda b: _message(base64.b64encode(b).decode())).map(_labelled('not-utf8', 'InvalidMessage'))

not_json = st.text(min_size=1, max_size=200).filter(lambda s: not _is_json(s)).map(
    lambda s: _message(base64.b64encode(s.encode('utf-8', 'surrogatepass')).decode())).map(
    _labelled('not-json', 'InvalidMessage'))

not_an_object = st.one_of(JSON_SCALARS, st.lists(JSON_VALUES, max_size=4)).map(
    lambda v: _message(b64(v))).map(_labelled('json-not-an-object', 'InvalidMessage'))

no_data = st.dictionaries(st.text(max_size=10).filter(lambda k: k != 'intent'), st.text(max_size=20),
                          max_size=3).map(lambda attrs: _message(None, attributes=attrs)).map(
    _labelled('no-data-no-intent-attribute', 'InvalidMessage'))


# --- readable, but not a valid request ------------------------------------------------------

intent_wrong_type = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                              st.lists(JSON_SCALARS, max_size=3), st.dictionaries(st.text(max_size=5), JSON_SCALARS,
                                                                                   max_size=3)).map(
    lambda v: _message(b64({'intent': v}))).map(_labelled('intent-not-a-string', 'InvalidRequest'))

intent_bad_name = HOSTILE_TEXT.filter(lambda s: not _valid_intent_name(s)).map(
    lambda s: _message(b64({'intent': s}))).map(_labelled('intent-bad-name', 'InvalidRequest'))

unknown_intent = st.one_of(st.from_regex(INTENT_NAME_PATTERN, fullmatch=True),
                           st.sampled_from(['drop-table', 'rm', 'eval', 'exec', 'admin', 'shutdown', 'allocation2',
                                            'summary-', 'health_'])).filter(
    lambda s: s not in intent_names()).map(lambda s: _message(b64({'intent': s}))).map(
    _labelled('unknown-intent', 'UnknownIntent'))

missing_intent = st.dictionaries(st.sampled_from(['params', 'dryRun', 'idempotencyKey']), JSON_VALUES,
                                 max_size=3).map(lambda d: _message(b64(d))).map(
    _labelled('missing-intent', 'InvalidRequest'))

bad_field = st.tuples(
    st.sampled_from(intent_names()),
    st.one_of(
        st.tuples(st.just('dryRun'), JSON_VALUES.filter(lambda v: not isinstance(v, bool))),
        st.tuples(st.just('params'), JSON_VALUES.filter(lambda v: not isinstance(v, dict))),
        st.tuples(st.just('idempotencyKey'), st.one_of(
            st.just(''), st.text(min_size=257, max_size=400),
            JSON_VALUES.filter(lambda v: v is not None and not isinstance(v, str)))),
        st.tuples(st.just('maxAgeSeconds'), st.one_of(st.floats(max_value=0), st.integers(max_value=0),
                                                       st.text(max_size=10), st.lists(JSON_SCALARS, max_size=2))),
        st.tuples(HOSTILE_TEXT.filter(lambda k: k not in REQUEST_KEYS), JSON_VALUES),
    ),
).map(lambda t: _message(b64({'intent': t[0], t[1][0]: t[1][1]}))).map(
    _labelled('bad-request-field', 'InvalidRequest'))


def _params_for(intent: str) -> st.SearchStrategy:
    """Params objects, hostile keys and values, that `intent` refuses."""
    fields = [f.alias or name for name, f in get_intent(intent).Params.model_fields.items()]
    keys = st.one_of(st.sampled_from(fields), HOSTILE_TEXT) if fields else HOSTILE_TEXT
    return st.dictionaries(keys, JSON_VALUES, min_size=1, max_size=4).filter(
        lambda params: _params_rejected(intent, params))


bad_params = st.sampled_from(intent_names()).flatmap(
    lambda intent: _params_for(intent).map(lambda params: _message(b64({'intent': intent, 'params': params})))
).map(_labelled('bad-params', 'InvalidParams'))

# Intents whose params name strategies (allocation, close-all): unknown names are refused with the known ones.
STRATEGY_INTENTS = [name for name in intent_names() if 'strategies' in get_intent(name).Params.model_fields]
unknown_strategy = st.tuples(
    st.sampled_from(STRATEGY_INTENTS),
    st.lists(HOSTILE_TEXT.filter(lambda s: s not in strategy_names()), min_size=1, max_size=3),
).map(lambda t: _message(b64({'intent': t[0], 'params': {'strategies': t[1]}}))).map(
    _labelled('unknown-strategy', 'InvalidParams')) if STRATEGY_INTENTS else st.nothing()

stale = st.tuples(st.sampled_from(intent_names()), st.floats(min_value=0.001, max_value=3600),
                  st.floats(min_value=1.5, max_value=1000)).map(
    lambda t: _message(b64({'intent': t[0], 'maxAgeSeconds': t[1]}),
                       published=datetime.now(timezone.utc) - timedelta(seconds=t[1] * t[2] + 1))).map(
    _labelled('stale', 'StaleMessage'))

attribute_intent = HOSTILE_TEXT.filter(lambda s: s and s not in intent_names()).map(
    lambda s: _message(None, attributes={'intent': s})).map(
    lambda event: Hostile('hostile-intent-attribute',
                          'UnknownIntent' if _valid_intent_name(event.data['message']['attributes']['intent'])
                          else 'InvalidRequest', event))


hostile_envelope = st.one_of(
    JSON_VALUES.filter(lambda v: not isinstance(v, dict)),
    st.fixed_dictionaries({'message': JSON_VALUES.filter(lambda v: not isinstance(v, dict))}),
    st.fixed_dictionaries({'message': st.fixed_dictionaries({
        'data': JSON_VALUES.filter(lambda v: not isinstance(v, str)),
        'attributes': JSON_VALUES.filter(lambda v: not isinstance(v, dict)),
        'messageId': JSON_VALUES, 'publishTime': JSON_VALUES})}),
).map(eventarc_event).map(_labelled('hostile-envelope', 'InvalidMessage'))

# Lone surrogates (valid in JSON as "\\ud800", unencodable in UTF-8) in every string of the envelope:
# messageId, attribute names and values, the subscription. The request itself names no registered intent,
# so the message is refused; its result must still be publishable.
SURROGATES = st.text(alphabet=st.characters(categories=['Cs']), min_size=1, max_size=3)
SURROGATE_TEXT = st.tuples(st.text(max_size=8), SURROGATES, st.text(max_size=8)).map(''.join)


def _surrogate_envelope(parts: tuple) -> CloudEvent:
    message_id, attributes, subscription = parts
    stamp = timestamp()
    message = {'data': b64({'intent': 'no-such-intent'}), 'attributes': attributes, 'messageId': message_id,
               'publishTime': stamp}
    return eventarc_event({'message': message, 'subscription': subscription}, event_id=message_id, time=stamp)


surrogate_envelope = st.tuples(
    SURROGATE_TEXT, st.dictionaries(SURROGATE_TEXT, SURROGATE_TEXT, min_size=1, max_size=3), SURROGATE_TEXT,
).map(_surrogate_envelope).map(_labelled('surrogate-envelope', 'UnknownIntent'))

deep_nesting = st.tuples(st.sampled_from(['[', '{"a":', '[{"b":']),
                         st.integers(min_value=1_000, max_value=200_000)).map(
    lambda t: _message(base64.b64encode((t[0] * t[1]).encode()).decode())).map(
    _labelled('deeply-nested-json', 'InvalidMessage'))

HOSTILE_MESSAGES = st.one_of(
    bad_base64, not_utf8, not_json, not_an_object, no_data, intent_wrong_type, intent_bad_name, unknown_intent,
    missing_intent, bad_field, bad_params, unknown_strategy, stale, attribute_intent, hostile_envelope, deep_nesting,
    surrogate_envelope,
)
CATEGORIES = {'bad-base64', 'not-utf8', 'not-json', 'json-not-an-object', 'no-data-no-intent-attribute',
              'intent-not-a-string', 'intent-bad-name', 'unknown-intent', 'missing-intent', 'bad-request-field',
              'bad-params', 'stale', 'hostile-intent-attribute', 'hostile-envelope', 'deeply-nested-json',
              'surrogate-envelope',
              *(['unknown-strategy'] if STRATEGY_INTENTS else [])}


# --- huge payloads (Pub/Sub allows up to 10 MB of data) ---------------------------------------

def _huge(kind: str, size: int) -> Hostile:
    filler = 'A' * size
    if kind == 'garbage':
        return Hostile('huge-garbage', 'InvalidMessage', _message(filler + '%'))
    if kind == 'intent':
        return Hostile('huge-intent', 'InvalidRequest', _message(b64({'intent': filler.lower()})))
    if kind == 'params':
        intent = intent_names()[0]
        return Hostile('huge-params', 'InvalidParams',
                       _message(b64({'intent': intent, 'params': {'x' * 64: filler}})))
    raise ValueError(kind)


HUGE_MESSAGES = st.builds(_huge, st.sampled_from(['garbage', 'intent', 'params']),
                          st.integers(min_value=100_000, max_value=7_000_000))
