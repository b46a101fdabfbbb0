"""One place decides ack or redeliver: the exception table, the decision, and the README table that states them."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from functions.handler import TransientFailure, conclude
from lib.failures import EXCEPTION_TABLE, Failed, Failure, failure_of, redeliver
from trading.market_data import HistoricalDataError, HistoricalDataUnavailable, hmds_162_kind
from lib.session import GatewayUnavailable, TradingModeViolation
from lib.store import StoreUnavailable

README = (Path(__file__).resolve().parents[1] / 'README.md').read_text()


def readme_rows() -> dict[str, tuple[str, str]]:
    """error.type -> (status, retryable) from the README's "Ack or redeliver" table."""
    section = README.split('### Ack or redeliver', 1)[1].split('\n\n', 3)[2]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip('|').split('|')]
        if len(cells) < 3 or not cells[0].startswith('`'):
            continue
        for name in re.findall(r'`(\w+)`', cells[0]):
            rows[name] = (cells[1], cells[2])
    return rows


def test_the_readme_table_states_every_entry_of_the_exception_table():
    rows = readme_rows()
    for name, disposition in EXCEPTION_TABLE.items():
        if name in ('SessionError',):          # the base of the session's errors, never raised itself
            continue
        assert name in rows, f'{name} is missing from the README table'
        status, retryable = rows[name]
        if disposition == 'rejected':
            assert (status, retryable) == ('rejected', 'no'), name
        elif disposition == 'transient':
            assert (status, retryable) == ('error', 'yes'), name
        elif disposition == 'transient-if-safe':
            assert status == 'error' and retryable.startswith('yes'), name


@pytest.mark.parametrize(('exc', 'safe', 'expected'), [
    (GatewayUnavailable('down'), False, ('error', True)),
    (TradingModeViolation('live account in paper mode'), True, ('rejected', False)),
    (StoreUnavailable('locked'), False, ('error', True)),
    (HistoricalDataUnavailable('HMDS'), True, ('error', True)),
    (HistoricalDataError('invalid bar size'), True, ('rejected', False)),
    (TimeoutError(), True, ('error', True)),
    (TimeoutError(), False, ('error', False)),
    (KeyError('a bug'), True, ('error', False)),
    (Failed(Failure.transient('KeyInFlight', 'held')), False, ('error', True)),
])
def test_failure_of_maps_exceptions_by_the_table(exc, safe, expected):
    failure = failure_of(exc, safe_to_retry=safe)
    assert (failure.status, failure.retryable) == expected


def test_only_a_retryable_error_is_redelivered():
    assert redeliver('error', {'retryable': True})
    assert not redeliver('error', {'retryable': False})
    assert not redeliver('rejected', {'retryable': True})     # a refusal is never redelivered
    assert not redeliver('duplicate', None)


@pytest.mark.parametrize(('text', 'kind'), [
    ('Historical Market Data Service error message:HMDS server connection was broken', 'transient'),
    ('Historical Market Data Service error message:no data before 1990-01-01', 'no-data'),
    ('HMDS query returned no data: SPY@SMART Trades', 'no-data'),
    ("Historical Market Data Service error message:invalid bar size '0 secs'", 'permanent'),
    ("Historical Market Data Service error message:invalid duration '9 Q'; expected 'N S'", 'permanent'),
    ('Historical Market Data Service error message:No historical market data for EUR/CASH@IDEALPRO Last 1 day',
     'permanent'),
    ('Historical data request pacing violation', 'transient'),
    ('No market data permissions for NYSE STK', 'permanent'),
    ('Historical Market Data Service error message:something new', 'transient'),
])
def test_error_162_texts_are_classified(text, kind):
    assert hmds_162_kind(text) == kind


def test_conclude_raises_exactly_for_retryable_errors(rig_result):
    assert conclude(rig_result('ok', None)).status == 'ok'
    assert conclude(rig_result('rejected', Failure.rejected('X', 'm'))).status == 'rejected'
    with pytest.raises(TransientFailure):
        conclude(rig_result('error', Failure.transient('X', 'm')))


@pytest.fixture
def rig_result():
    from datetime import datetime, timezone

    from functions.contract import ErrorInfo, IntentResult, Timings

    def make(status: str, failure: Failure | None) -> IntentResult:
        now = datetime.now(timezone.utc)
        return IntentResult(run_id='r', message_id='m', intent='health', status=status, dry_run=False,
                            trading_mode='paper', account=None, started_at=now, finished_at=now, duration_ms=0.0,
                            timings=Timings(), gateway=None, result=None,
                            error=ErrorInfo(**failure.error()) if failure else None)
    return make
