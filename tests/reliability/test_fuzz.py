"""Malformed and hostile messages, generated with hypothesis: each gets a clear rejection, nothing else.

For every message the handler returns (a raise would make Pub/Sub deliver it again and again), publishes
exactly one result with status rejected, the error type its defect calls for, a message saying why and
`retryable: false`, and never contacts the gateway. Randomness comes from the hypothesis profile
(tests/conftest.py: derandomized under CI, random elsewhere); RELIABILITY_HEAVY=1 draws ten times as many.
HYPOTHESIS_PROFILE=explore with RELIABILITY_HEAVY unset keeps the profile's count (5,000).
"""
from __future__ import annotations

from collections import Counter

from hypothesis import given, settings

from functions.handler import handle
from tests.reliability.harness import HEAVY, RESULT_SCHEMA, printed_results, settings_for
from tests.reliability.hostile import CATEGORIES, HOSTILE_MESSAGES, HUGE_MESSAGES, Hostile

MESSAGES = 10_000 if HEAVY else 1_000
HUGE = 60 if HEAVY else 12
MIN_MESSAGES = 1_000
MAX_ERROR_MESSAGE_CHARS = 2_000      # an error message explains; it never echoes a payload back
MAX_RESULT_BYTES = 16_000


def fuzz_settings(examples: int):
    """`examples` draws, or the profile's own count when it asks for more (the explore profile)."""
    return settings(max_examples=max(examples, settings.default.max_examples))


def check_rejected(drawn: Hostile, gateway, capsys, seen: Counter) -> None:
    category, error_type = drawn.category, drawn.error_type
    result = handle(drawn.event, settings_for(gateway))
    printed = printed_results(capsys.readouterr().out)
    doc = result.to_wire()
    assert printed == [doc], f'{category}: published {len(printed)} results'
    RESULT_SCHEMA.validate(doc)
    assert doc['status'] == 'rejected', (category, doc)
    error = doc['error']
    assert error['type'] == error_type, (category, error)
    assert error['retryable'] is False
    assert 0 < len(error['message']) <= MAX_ERROR_MESSAGE_CHARS, (category, error['message'][:300])
    assert len(result.to_json().encode()) <= MAX_RESULT_BYTES, category
    assert doc['gateway'] is None and doc['account'] is None
    seen[category] += 1


def test_hostile_messages_are_rejected_without_touching_the_gateway(gateway, capsys):
    seen: Counter = Counter()

    @fuzz_settings(MESSAGES)
    @given(HOSTILE_MESSAGES)
    def fuzz(drawn):
        check_rejected(drawn, gateway, capsys, seen)

    fuzz()
    print(f'\nfuzz: {sum(seen.values())} hostile messages rejected; by category {dict(sorted(seen.items()))}')
    assert sum(seen.values()) >= MIN_MESSAGES, seen
    assert set(seen) == CATEGORIES, f'never drawn: {CATEGORIES - set(seen)}'
    assert gateway.counters() == [], 'a hostile message reached the gateway'


def test_huge_payloads_are_rejected_without_touching_the_gateway(gateway, capsys):
    seen: Counter = Counter()

    @settings(max_examples=HUGE)
    @given(HUGE_MESSAGES)
    def fuzz(drawn):
        check_rejected(drawn, gateway, capsys, seen)

    fuzz()
    print(f'\nfuzz: {sum(seen.values())} huge messages rejected; by category {dict(sorted(seen.items()))}')
    assert set(seen) == {'huge-garbage', 'huge-intent', 'huge-params'}, seen
    assert gateway.counters() == []
