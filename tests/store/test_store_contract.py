"""One suite, both backends: every test runs against SQLite (a temp file) and Firestore (the emulator)."""
from __future__ import annotations

import json
import math
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from lib.config import StoreSettings
from lib.store import ClaimAnswer, Store, StoreUnavailable, open_store
from tests.emulators import free_port
from tests.store import raw

T0 = datetime(2026, 3, 2, 14, 30, 0, 123456, tzinfo=timezone.utc)
KEY = 'allocation/2026-03-02T14:30Z/ab12'      # keys may contain '/' and ':'


def run_concurrently(count: int, work) -> list:
    """Call work(i) from `count` threads released at the same moment; return the results in order."""
    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = work(i)
        except BaseException as exc:  # re-raised in the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results


def test_first_claim_is_new_and_stored(store: Store):
    claim = store.claim(KEY, 'run-1', lease_seconds=60, now=T0)

    assert claim.outcome == 'new' and claim.held
    assert (claim.record.key, claim.record.run_id, claim.record.status, claim.record.attempt) == (
        KEY, 'run-1', 'running', 1)
    assert claim.record.lease_until == T0 + timedelta(seconds=60)
    assert claim.record.created_at == T0
    assert claim.record.result is None
    assert store.get_claim(KEY) == claim.record
    assert store.get_claim('other-key') is None


def test_claim_of_a_finished_key_returns_the_original_result(store: Store):
    store.claim(KEY, 'run-1', 60, T0)
    result = {'status': 'ok', 'orders': [{'orderRef': 'k:SPY', 'qty': 10}], 'note': 'ünïcode'}
    assert store.finish(KEY, 'run-1', result, T0 + timedelta(seconds=5)) is True

    claim = store.claim(KEY, 'run-2', 60, T0 + timedelta(days=1))

    assert claim.outcome == 'finished' and not claim.held
    assert claim.record.run_id == 'run-1'
    assert claim.record.result == result
    assert claim.record.status == 'finished'
    assert claim.record.lease_until == T0 + timedelta(seconds=5)   # finishing releases the lease
    assert store.get_claim(KEY) == claim.record


def test_claim_while_a_valid_lease_is_held_is_running(store: Store):
    store.claim(KEY, 'run-1', 60, T0)

    claim = store.claim(KEY, 'run-2', 60, T0 + timedelta(seconds=59))

    assert claim.outcome == 'running' and not claim.held
    assert claim.record.run_id == 'run-1'
    assert store.get_claim(KEY).run_id == 'run-1'


def test_holder_repeating_its_claim_still_holds_it(store: Store):
    first = store.claim(KEY, 'run-1', 60, T0)

    again = store.claim(KEY, 'run-1', 60, T0 + timedelta(seconds=1))

    assert again.outcome == 'new' and again.record == first.record


def test_expired_lease_is_taken_over_and_the_old_holder_can_no_longer_finish(store: Store):
    store.claim(KEY, 'run-1', 60, T0)
    later = T0 + timedelta(seconds=60)    # the lease ends exactly now

    claim = store.claim(KEY, 'run-2', 120, later)

    assert claim.outcome == 'taken_over' and claim.held
    assert (claim.record.run_id, claim.record.attempt, claim.record.status) == ('run-2', 2, 'running')
    assert claim.record.lease_until == later + timedelta(seconds=120)
    assert claim.record.created_at == T0
    assert store.get_claim(KEY) == claim.record
    assert store.finish(KEY, 'run-1', {'status': 'ok'}, later) is False
    assert store.finish(KEY, 'run-2', {'status': 'ok', 'by': 'run-2'}, later) is True
    assert store.get_claim(KEY).result == {'status': 'ok', 'by': 'run-2'}


def test_finish_by_a_non_holder_is_refused_and_changes_nothing(store: Store):
    store.claim(KEY, 'run-1', 60, T0)

    assert store.finish(KEY, 'intruder', {'status': 'ok'}, T0) is False
    assert store.finish('never-claimed', 'run-1', {'status': 'ok'}, T0) is False
    record = store.get_claim(KEY)
    assert (record.status, record.run_id, record.result) == ('running', 'run-1', None)
    assert store.get_claim('never-claimed') is None


def test_repeated_finish_succeeds_only_with_the_same_result(store: Store):
    store.claim(KEY, 'run-1', 60, T0)
    assert store.finish(KEY, 'run-1', {'n': 1}, T0) is True

    assert store.finish(KEY, 'run-1', {'n': 1}, T0 + timedelta(seconds=1)) is True
    assert store.finish(KEY, 'run-1', {'n': 2}, T0) is False
    assert store.finish(KEY, 'run-2', {'n': 1}, T0) is False
    record = store.get_claim(KEY)
    assert (record.result, record.lease_until) == ({'n': 1}, T0)


def test_twenty_concurrent_claims_of_one_key_have_exactly_one_winner(new_store):
    stores = [new_store() for _ in range(20)]     # separate connections/clients, like separate instances

    claims: list[ClaimAnswer] = run_concurrently(20, lambda i: stores[i].claim(KEY, f'run-{i}', 60, T0))

    assert sorted(claim.outcome for claim in claims) == ['new'] + ['running'] * 19
    winner = next(claim for claim in claims if claim.outcome == 'new').record.run_id
    assert all(claim.record.run_id == winner for claim in claims)
    assert stores[0].get_claim(KEY).run_id == winner


def test_concurrent_takeovers_of_an_expired_lease_have_exactly_one_winner(new_store):
    new_store().claim(KEY, 'dead-run', 30, T0)
    stores = [new_store() for _ in range(10)]
    later = T0 + timedelta(minutes=5)

    claims: list[ClaimAnswer] = run_concurrently(10, lambda i: stores[i].claim(KEY, f'retry-{i}', 60, later))

    assert sorted(claim.outcome for claim in claims) == ['running'] * 9 + ['taken_over']
    winner = next(claim for claim in claims if claim.outcome == 'taken_over').record
    assert winner.attempt == 2
    assert all(claim.record.run_id == winner.run_id for claim in claims)
    assert stores[0].get_claim(KEY) == winner


def test_targets_round_trip_and_are_replaced_whole(store: Store):
    assert store.get_targets('spy-macd-vixy') is None
    store.put_targets('spy-macd-vixy', {'SPY': 1, 'VIXY': 0.0, 'MNQ:20261218': -0.25, 'a/b.c': 0.5}, 'run-1', T0)

    assert store.get_targets('spy-macd-vixy') == {
        'targets': {'SPY': 1.0, 'VIXY': 0.0, 'MNQ:20261218': -0.25, 'a/b.c': 0.5},
        'updatedAt': '2026-03-02T14:30:00.123456Z', 'runId': 'run-1'}

    store.put_targets('spy-macd-vixy', {'SPY': -1.0}, 'run-2', T0 + timedelta(days=1))
    assert store.get_targets('spy-macd-vixy') == {
        'targets': {'SPY': -1.0}, 'updatedAt': '2026-03-03T14:30:00.123456Z', 'runId': 'run-2'}
    assert store.get_targets('dummy') is None


def test_targets_must_be_finite_numbers(store: Store):
    with pytest.raises(ValueError, match="'SPY'"):
        store.put_targets('s', {'SPY': float('nan')}, 'run-1', T0)
    with pytest.raises(ValueError, match="'VIXY'"):
        store.put_targets('s', {'VIXY': '1'}, 'run-1', T0)
    assert store.get_targets('s') is None


def _fill(exec_id: str, minutes: int, strategies, qty: float = 10.0) -> dict:
    return {'execId': exec_id, 'time': (T0 + timedelta(minutes=minutes)).isoformat(), 'strategies': strategies,
            'orderRef': f'key:{exec_id}', 'side': 'BOT', 'shares': qty, 'price': 512.25,
            'commission': {'amount': 1.0, 'currency': 'USD'}}


def test_record_fill_is_idempotent_by_exec_id(store: Store):
    fill = _fill('0001.01', 0, {'spy-macd-vixy': 10})

    assert store.record_fill(fill) is True
    assert store.record_fill({**fill, 'shares': 999}) is False     # the first record stands

    assert store.fills() == [fill]


def test_fills_filter_by_time_and_strategy_oldest_first(store: Store):
    late = _fill('c', 30, ['dummy'])
    early = _fill('a', 0, {'spy-macd-vixy': 5, 'dummy': 5})
    middle = _fill('b', 10, {'spy-macd-vixy': 10})
    untagged = _fill('d', 20, [])
    for fill in (late, early, middle, untagged):
        store.record_fill(fill)

    assert store.fills() == [early, middle, untagged, late]
    assert store.fills(since=T0 + timedelta(minutes=10)) == [middle, untagged, late]
    assert store.fills(strategy='spy-macd-vixy') == [early, middle]
    assert store.fills(strategy='dummy', since=T0 + timedelta(minutes=1)) == [late]
    assert store.fills(strategy='unknown') == []
    # `since` in another zone means the same instant
    assert store.fills(since=(T0 + timedelta(minutes=30)).astimezone(timezone(timedelta(hours=-5)))) == [late]


def test_fill_without_exec_id_or_zoned_time_is_refused(store: Store):
    with pytest.raises(ValueError, match='execId'):
        store.record_fill({'time': T0.isoformat()})
    with pytest.raises(ValueError, match='time'):
        store.record_fill({'execId': 'x', 'time': '2026-03-02T14:30:00'})
    assert store.fills() == []


def test_settings_merge_replaces_top_level_keys_only(store: Store):
    assert store.get_settings() == {}
    store.put_settings({'tradingEnabled': True, 'limits': {'maxOrderNotional': 5000, 'allowlist': ['SPY']}})
    store.put_settings({'limits': {'maxOrdersPerRun': 3}, 'exposure': {'overall': 0.5}})
    store.put_settings({'tradingEnabled': False})

    assert store.get_settings() == {'tradingEnabled': False, 'limits': {'maxOrdersPerRun': 3},
                                    'exposure': {'overall': 0.5}}


def test_naive_times_and_non_json_results_are_refused(store: Store):
    with pytest.raises(ValueError, match='timezone-aware'):
        store.claim(KEY, 'run-1', 60, datetime(2026, 3, 2, 14, 30))
    store.claim(KEY, 'run-1', 60, T0)
    with pytest.raises(TypeError, match='result'):
        store.finish(KEY, 'run-1', {'when': T0}, T0)
    assert store.get_claim(KEY).status == 'running'


ACCOUNT_LEASE = 'account:DU1234567'


def test_a_lease_has_one_holder_until_it_expires_or_is_released(store: Store):
    first = store.take_lease(ACCOUNT_LEASE, 'run-1', 30, T0)
    assert first.held and first.holder == 'run-1' and first.lease_until == T0 + timedelta(seconds=30)

    busy = store.take_lease(ACCOUNT_LEASE, 'run-2', 30, T0 + timedelta(seconds=29))
    assert not busy.held and busy.holder == 'run-1' and busy.lease_until == first.lease_until
    renewed = store.take_lease(ACCOUNT_LEASE, 'run-1', 30, T0 + timedelta(seconds=10))
    assert renewed.held and renewed.lease_until == T0 + timedelta(seconds=40)
    assert store.take_lease('account:OTHER', 'run-2', 30, T0).held        # other accounts are independent

    assert store.release_lease(ACCOUNT_LEASE, 'run-2') is False           # not theirs: nothing changes
    assert not store.take_lease(ACCOUNT_LEASE, 'run-2', 30, T0 + timedelta(seconds=11)).held
    assert store.release_lease(ACCOUNT_LEASE, 'run-1') is True
    assert store.release_lease(ACCOUNT_LEASE, 'run-1') is True            # repeating a release is safe
    assert store.take_lease(ACCOUNT_LEASE, 'run-2', 30, T0 + timedelta(seconds=12)).held

    expired = store.take_lease(ACCOUNT_LEASE, 'run-3', 30, T0 + timedelta(seconds=42, microseconds=1))
    assert expired.held and expired.holder == 'run-3'
    assert store.release_lease(ACCOUNT_LEASE, 'run-2') is False           # its lease was taken over


def test_concurrent_lease_takers_get_one_holder(new_store):
    stores = [new_store() for _ in range(6)]
    leases = run_concurrently(6, lambda i: stores[i].take_lease(ACCOUNT_LEASE, f'run-{i}', 30, T0))
    holders = [lease for lease in leases if lease.held]
    assert len(holders) == 1
    assert {lease.holder for lease in leases} == {holders[0].holder}


def test_stuck_claims_are_running_claims_whose_lease_ended_long_ago(store: Store):
    store.claim('stuck-1', 'run-1', 10, T0)
    store.claim('stuck-2', 'run-2', 10, T0 - timedelta(seconds=5))
    store.claim('live', 'run-3', 10, T0 + timedelta(seconds=700))
    store.claim('done', 'run-4', 10, T0)
    store.finish('done', 'run-4', {'status': 'ok'}, T0 + timedelta(seconds=1))

    stuck = store.stuck_claims(T0 + timedelta(seconds=700))
    assert [(r.key, r.run_id, r.status) for r in stuck] == [('stuck-2', 'run-2', 'running'),
                                                            ('stuck-1', 'run-1', 'running')]
    assert store.stuck_claims(T0) == []


@pytest.fixture(params=['sqlite', 'firestore'])
def unreachable_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A store whose backend cannot be reached: SQLite under a regular file, Firestore on a closed port."""
    if request.param == 'sqlite':
        blocker = tmp_path / 'not-a-folder'
        blocker.write_text('')
        env = {'STORE_BACKEND': 'sqlite', 'SQLITE_PATH': str(blocker / 'state.sqlite3')}
    else:
        env = {'STORE_BACKEND': 'firestore', 'GOOGLE_CLOUD_PROJECT': 'unreachable',
               'FIRESTORE_EMULATOR_HOST': f'127.0.0.1:{free_port()}', 'STORE_TIMEOUT_SECONDS': '1'}
    store = open_store(StoreSettings.from_env(env))
    yield store
    store.close()


@pytest.mark.parametrize('operation', [
    lambda s: s.claim(KEY, 'run-1', 60, T0),
    lambda s: s.finish(KEY, 'run-1', {}, T0),
    lambda s: s.get_claim(KEY),
    lambda s: s.get_targets('dummy'),
    lambda s: s.put_targets('dummy', {'SPY': 1.0}, 'run-1', T0),
    lambda s: s.record_fill(_fill('x', 0, [])),
    lambda s: s.fills(),
    lambda s: s.holdings('DU1234567'),
    lambda s: s.get_settings(),
    lambda s: s.put_settings({'tradingEnabled': True}),
    lambda s: s.take_lease(ACCOUNT_LEASE, 'run-1', 60, T0),
    lambda s: s.release_lease(ACCOUNT_LEASE, 'run-1'),
    lambda s: s.stuck_claims(T0),
    lambda s: s.get_cursor('c'),
    lambda s: s.put_cursor('c', {}),
    lambda s: s.get_plan('p'),
    lambda s: s.put_plan('p', {}),
], ids=['claim', 'finish', 'get_claim', 'get_targets', 'put_targets', 'record_fill', 'fills', 'holdings', 'get_settings',
        'put_settings', 'take_lease', 'release_lease', 'stuck_claims', 'get_cursor', 'put_cursor', 'get_plan',
        'put_plan'])
def test_unreachable_backend_raises_store_unavailable(unreachable_store: Store, operation):
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        operation(unreachable_store)
    assert time.monotonic() - started < 5


# --- run history ------------------------------------------------------------------------------

def history_doc(run_id: str, intent: str, status: str = 'ok') -> str:
    return json.dumps({'schema': 'intent-result/v1', 'runId': run_id, 'intent': intent, 'status': status,
                       'result': {'note': 'ünïcode "quoted" \\\\ back'}})


def test_recent_runs_come_newest_first_filtered_by_intent_and_expire(store: Store):
    keep = T0 + timedelta(days=30)
    for minute, (run_id, intent) in enumerate([('r1', 'health'), ('r2', 'allocation'), ('r3', 'health')]):
        store.record_run(run_id, intent, 'ok', T0 + timedelta(minutes=minute), history_doc(run_id, intent), keep)
    store.record_run('r0', 'summary', 'error', T0 - timedelta(minutes=5), history_doc('r0', 'summary', 'error'),
                     T0 + timedelta(minutes=1))

    now = T0 + timedelta(minutes=10)
    assert [d['runId'] for d in store.recent_runs(10, now)] == ['r3', 'r2', 'r1']      # r0 expired
    assert [d['runId'] for d in store.recent_runs(2, now)] == ['r3', 'r2']
    assert [d['runId'] for d in store.recent_runs(10, now, intent='health')] == ['r3', 'r1']
    assert store.recent_runs(10, now, intent='close-all') == []
    assert store.get_run('r2') == json.loads(history_doc('r2', 'allocation'))
    assert store.get_run('nope') is None
    assert store.recent_runs(10, keep + timedelta(seconds=1)) == []


def test_recording_a_run_again_replaces_it(store: Store):
    keep = T0 + timedelta(days=1)
    store.record_run('r1', 'allocation', 'error', T0, history_doc('r1', 'allocation', 'error'), keep)
    store.record_run('r1', 'allocation', 'ok', T0, history_doc('r1', 'allocation', 'ok'), keep)
    assert [d['status'] for d in store.recent_runs(10, T0)] == ['ok']


# --- cursors ------------------------------------------------------------------------------------

def test_a_cursor_is_replaced_whole_and_names_are_apart(store: Store):
    name = 'executions-booked:DU123/ü'
    assert store.get_cursor(name) is None
    store.put_cursor(name, {'through': '2026-01-05T15:00:00Z', 'held': ['0001.01']})
    store.put_cursor(name, {'through': '2026-01-05T16:00:00Z'})
    store.put_cursor('executions-booked:DU999', {'through': '2026-01-05T09:00:00Z'})
    assert store.get_cursor(name) == {'through': '2026-01-05T16:00:00Z'}
    assert store.get_cursor('executions-booked:DU999') == {'through': '2026-01-05T09:00:00Z'}
    with pytest.raises(ValueError):
        store.put_cursor(name, {'through': math.nan})


# --- plans waiting for approval ---------------------------------------------------------------

def test_a_plan_is_kept_whole_replaced_whole_and_plans_are_apart(store: Store):
    plan_id = 'a1/ü'
    assert store.get_plan(plan_id) is None
    plan = {'account': 'DU1', 'orders': [{'orderRef': 'ibj:0123456789:756733', 'quantity': 10.0, 'lmtPrice': None}],
            'discarded': None}
    store.put_plan(plan_id, plan)
    store.put_plan('b2', {'account': 'DU2', 'orders': []})
    assert store.get_plan(plan_id) == plan
    store.put_plan(plan_id, {**plan, 'discarded': {'at': '2026-01-05T16:00:00Z'}})
    assert store.get_plan(plan_id)['discarded'] == {'at': '2026-01-05T16:00:00Z'}
    assert store.get_plan('b2') == {'account': 'DU2', 'orders': []}
    with pytest.raises(ValueError):
        store.put_plan(plan_id, {'price': math.inf})


@pytest.mark.parametrize('new_store', ['firestore'], indirect=True)
def test_a_firestore_plan_expires_for_the_ttl_policy_a_month_after_it_can_no_longer_be_executed(store: Store):
    store.put_plan('p1', {'account': 'DU1', 'expiresAt': '2026-01-05T16:15:00Z', 'orders': []})
    assert raw.firestore_plan_expiry(store, 'p1') == datetime(2026, 2, 4, 16, 15, tzinfo=timezone.utc)


# --- running holdings: the ledger's sum, kept as fills are recorded -----------------------------------

HOLDER = 'DU1234567'
SPY = {'conId': 756733, 'symbol': 'SPY', 'secType': 'STK', 'localSymbol': 'SPY', 'currency': 'USD'}
MNQ = {'conId': 654503314, 'symbol': 'MNQ', 'secType': 'FUT', 'localSymbol': 'MNQZ6', 'currency': 'USD'}


def _execution(exec_id: str, contract: dict, quantity: float, parts: dict, *, account: str = HOLDER,
               minutes: int = 0) -> dict:
    """A ledger entry as trading.ledger.ledger_entry writes one."""
    return {'execId': exec_id, 'time': (T0 + timedelta(minutes=minutes)).isoformat(), 'account': account,
            'orderRef': f'ibj:0123456789:{exec_id}' if parts else None, 'permId': 1, 'orderId': 1, 'clientId': 7,
            **contract, 'side': 'BOT' if quantity > 0 else 'SLD', 'shares': abs(quantity), 'quantity': quantity,
            'price': 100.0, 'commission': 1.0, 'commissionCurrency': 'USD', 'realizedPNL': 0.0,
            'strategies': parts, 'commissions': {}}


def _ledger_sum(store: Store, account: str) -> list[dict]:
    """What the whole ledger adds up to (trading.ledger.holdings), in the shape Store.holdings returns."""
    from trading.ledger import holdings
    return [{'conId': h.con_id, 'contract': h.contract, 'position': h.position, 'strategies': h.strategies}
            for h in holdings(store.fills(), account).values()]


def test_holdings_are_the_ledgers_sum_after_bookings_refetches_and_transfers(store: Store):
    from trading.ledger import transfer_entry
    assert store.holdings(HOLDER) == []
    assert store.record_fill(_execution('e1', SPY, 100, {'dummy': 60.0, 'spy-macd-vixy': 40.0})) is True
    # re-fetched behind the booking cursor: the same execId, never counted twice (whatever it says now)
    assert store.record_fill(_execution('e1', SPY, 100, {'dummy': 60.0, 'spy-macd-vixy': 40.0})) is False
    assert store.record_fill(_execution('e1', SPY, 999, {'dummy': 999.0})) is False
    assert store.record_fill(_execution('e2', SPY, -30, {}, minutes=1)) is True               # manual
    transfer = transfer_entry('ibj:0123456789:1', SPY, HOLDER, {'dummy': -20.0, 'spy-macd-vixy': 20.0}, 100.0,
                              (T0 + timedelta(minutes=2)).isoformat())
    assert store.record_fill(transfer) is True and store.record_fill(transfer) is False
    for n in range(3):                                    # 0.1 three times: 0.3 exactly, as the ledger rounds
        assert store.record_fill(_execution(f'f{n}', MNQ, 0.1, {'dummy': 0.1}, minutes=3 + n))
    assert store.record_fill(_execution('o1', MNQ, 2, {'odd.name `ü`': 2.0}, account='DU999', minutes=9))
    for n, quantity in enumerate((5, -5)):                # bought and sold back: nothing held, nothing listed
        store.record_fill(_execution(f'z{n}', {**SPY, 'conId': 1, 'localSymbol': 'Z'}, quantity, {'dummy': quantity}))
    store.record_fill(_fill('untagged', 0, ['dummy']))   # a fill without account or contract moves no holding

    expected = [{'conId': 756733, 'contract': SPY, 'position': 70.0, 'strategies': {'dummy': 40.0,
                                                                                    'spy-macd-vixy': 60.0}},
                {'conId': 654503314, 'contract': MNQ, 'position': 0.3, 'strategies': {'dummy': 0.3}}]
    assert sorted(store.holdings(HOLDER), key=lambda h: -h['position']) == expected
    assert store.holdings(HOLDER) == _ledger_sum(store, HOLDER)
    assert store.holdings('DU999') == [{'conId': 654503314, 'contract': MNQ, 'position': 2.0,
                                        'strategies': {'odd.name `ü`': 2.0}}]
    assert store.holdings('nobody') == []
    # what is read stays what is held: the contract bought and sold back is no longer stored
    assert raw.stored_holding_rows(store) == 3
    assert store.record_fill(_execution('z2', {**SPY, 'conId': 1, 'localSymbol': 'Z'}, 1.0, {}))
    assert [h['position'] for h in store.holdings(HOLDER) if h['conId'] == 1] == [1.0]


def test_concurrent_bookings_of_the_same_fills_count_each_once(new_store):
    stores = [new_store(), new_store()]           # two connections to one file, two Firestore clients
    entries = [_execution(f'c{n}', SPY if n % 3 else MNQ, (n % 5) - 1.5, {'dummy': (n % 5) - 2.0} if n % 2 else {},
                          minutes=n) for n in range(24)]

    recorded = run_concurrently(2, lambda i: [stores[i].record_fill(e) for e in (entries if i else entries[::-1])])

    assert [a + b for a, b in zip(recorded[0][::-1], recorded[1])] == [1] * len(entries)   # each new exactly once
    assert stores[0].holdings(HOLDER) == stores[1].holdings(HOLDER) == _ledger_sum(stores[0], HOLDER)
    position = sum((n % 5) - 1.5 for n in range(24) if n % 3)
    assert [h['position'] for h in stores[0].holdings(HOLDER) if h['conId'] == SPY['conId']] == [position]


def test_a_ledger_written_before_holdings_were_kept_is_summed_once_even_by_two_runs_at_once(new_store):
    first = new_store()
    older = [_execution(f'old{n}', SPY, 10.0 if n % 2 else -4.0, {'dummy': 10.0} if n % 2 else {}, minutes=n)
             for n in range(30)]
    raw.record_as_older_code(first, older)
    first.close()
    stores = [new_store(), new_store()]        # two new runs start on it at once: one books, one reads
    newer = [_execution(f'new{n}', SPY, 1.0, {'dummy': 1.0}, minutes=100 + n) for n in range(2)]

    def run(i: int) -> list:
        if i:
            return stores[i].holdings(HOLDER)
        return [stores[i].record_fill(newer[0]), stores[i].record_fill(older[0]), stores[i].record_fill(newer[1])]

    results = run_concurrently(2, run)

    assert results[0] == [True, False, True]
    expected = [{'conId': SPY['conId'], 'contract': SPY, 'position': 15 * 10.0 - 15 * 4.0 + 2,
                 'strategies': {'dummy': 150.0 + 2}}]
    assert new_store().holdings(HOLDER) == expected == _ledger_sum(stores[0], HOLDER)
    assert stores[1].record_fill(_execution('later', SPY, -2.0, {'dummy': -2.0}, minutes=200))
    assert stores[0].holdings(HOLDER)[0]['strategies'] == {'dummy': 150.0}
    # summed once: a later run (a new process) reads the kept holdings, not the ledger (probed by emptying it)
    raw.empty_the_ledger(stores[0])
    assert new_store().holdings(HOLDER)[0]['strategies'] == {'dummy': 150.0}


