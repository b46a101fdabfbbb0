"""IB's official Python client, capped at each listed server version, runs every scenario against the simulator
and decodes every message it gets: no field missing, none left unread, none malformed."""
from __future__ import annotations

import inspect

import pytest

from simulator import messages

from tests.conformance.support import drive

VERSIONS = (157, 163, 166, 170, 176)


@pytest.fixture(scope='module', params=VERSIONS, ids=[f'v{v}' for v in VERSIONS])
def run(request, ibapi_python) -> dict:
    return drive(ibapi_python, request.param)


def step(run: dict, name: str) -> dict:
    outcome = run['steps'][name]
    assert 'exception' not in outcome, f'{name}: the scenario raised {outcome["exception"]}'
    return outcome


def test_every_message_decodes_field_for_field(run):
    assert run['problems'] == []


def test_connect_agrees_to_the_capped_version_and_announces_accounts_and_next_id(run):
    connected = step(run, 'connect')
    assert connected['ready']
    assert connected['serverVersion'] == run['version']
    assert connected['accounts'] == ['DU1234567']
    assert connected['nextValidId'] > 0
    assert {2104, 2106, 2158} <= set(connected['notices'])
    [moment] = step(run, 'current time')['time']
    assert 1795618800 <= moment < 1795618800 + 120   # the gateway's clock: 2026-11-25 15:00 UTC, then running


def test_contract_details_for_a_stock_a_forex_pair_a_future_and_an_unknown_symbol(run):
    spy = step(run, 'contract details: stock')
    assert (spy['done'], spy['conIds'], spy['minTick'], spy['timeZoneId']) == (True, [756733], [0.01], ['US/Eastern'])
    eur = step(run, 'contract details: forex pair')
    assert (eur['conIds'], eur['localSymbols']) == ([12087792], ['EUR.USD'])
    es = step(run, 'contract details: future')
    assert es['done'] and es['count'] >= 2 and all(s.startswith('ES') for s in es['localSymbols'])
    unknown = step(run, 'contract details: unknown symbol')
    assert (unknown['count'], unknown['errors']) == (0, [200])


def test_historical_bars_and_market_data(run):
    bars = step(run, 'historical bars')
    assert bars['done'] and bars['bars'] >= 3 and bars['errors'] == []
    assert all(close > 0 for close in bars['closes'])
    snapshot = step(run, 'market data: snapshot')
    assert snapshot['done'] and {1, 2, 4} <= set(snapshot['tickTypes'])
    assert 0 < snapshot['bid'] <= snapshot['ask']
    stream = step(run, 'market data: stream')
    assert stream['ticks'] and stream['sizes'] >= 1 and stream['errors'] == []


def test_market_order_fills_with_exec_details_commission_and_its_order_ref(run):
    placed = step(run, 'market order: fill, execDetails, commission report')
    ref = f'conformance-{run["version"]}-mkt'
    assert placed['filled'] and placed['statuses'][-1] == 'Filled'
    assert placed['execShares'] == [3.0] and placed['execOrderRefs'] == [ref]
    assert placed['openOrderRefs'] and set(placed['openOrderRefs']) == {ref}
    assert placed['commissions'] == [1.0]


def test_positions_account_summary_and_account_updates_show_the_fill(run):
    assert step(run, 'positions') == {'done': True, 'positions': {'SPY': 3.0}}
    summary = step(run, 'account summary')
    assert summary['done'] and summary['tags'] == sorted(
        ['AccountType', 'NetLiquidation', 'TotalCashValue', 'BuyingPower', 'AvailableFunds'])
    updates = step(run, 'account updates')
    assert updates['done'] and updates['values'] > 0 and updates['time']
    assert updates['portfolio'] == {'SPY': 3.0}


def test_resting_limit_order_cancels_with_202(run):
    outcome = step(run, 'resting limit order, then cancel')
    assert outcome == {'resting': True, 'cancelled': True, 'errors': [202]}


def test_what_if_answers_margin_without_an_order(run):
    outcome = step(run, 'whatIf')
    assert outcome['answered'] and outcome['whatIf'] == [True] and outcome['statuses'] == []
    assert float(outcome['initMarginChange'][0]) > 0 and outcome['commission'] == [1.0]


def test_open_all_open_and_completed_orders_carry_the_order_ref(run):
    version = run['version']
    opened = step(run, 'open orders')
    assert opened['done'] and opened['orderRefs'] == [f'conformance-{version}-open']
    assert opened['statuses'] == ['Submitted']
    everyone = step(run, 'all open orders')
    assert everyone['done'] and everyone['orderIds'] == opened['orderIds']
    completed = step(run, 'completed orders')
    assert completed['done']
    assert dict(zip(completed['orderRefs'], completed['statuses'])) == {
        f'conformance-{version}-mkt': 'Filled', f'conformance-{version}-cancel': 'Cancelled',
        f'conformance-{version}-open': 'Cancelled'}


def test_executions_return_the_fill_with_its_order_ref_and_commission(run):
    outcome = step(run, 'executions')
    assert outcome == {'done': True, 'orderRefs': [f'conformance-{run["version"]}-mkt'], 'sides': ['BOT'],
                       'commissions': 1}


def test_a_second_client_with_the_same_id_hears_326(run):
    assert step(run, 'duplicate client id') == {'refused': True, 'errors': [326]}


# --- the hook bites -------------------------------------------------------------------------------------------

def _one_field_more(builder):
    def build(*args, **kwargs):
        return [*builder(*args, **kwargs), '']
    return build


@pytest.mark.parametrize('builder, msg_id', [
    ('error', messages.ERR_MSG), ('contract_details', messages.CONTRACT_DATA), ('open_order', messages.OPEN_ORDER),
    ('completed_order', messages.COMPLETED_ORDER), ('exec_details', messages.EXECUTION_DATA),
    ('position', messages.POSITION_DATA), ('account_value', messages.ACCT_VALUE)])
def test_one_extra_field_in_a_builder_fails_the_suite(ibapi_python, monkeypatch, builder, msg_id):
    monkeypatch.setattr(messages, builder, _one_field_more(getattr(messages, builder)))
    result = drive(ibapi_python, 176)
    assert {p['msgId'] for p in result['problems']} == {msg_id}


def _always_176(builder):
    signature = inspect.signature(builder)

    def build(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.arguments['version'] = messages.MAX_VERSION
        return builder(*bound.args, **bound.kwargs)
    return build


def test_the_176_layouts_sent_to_a_client_capped_at_163_fail_the_suite(ibapi_python, monkeypatch):
    """The bug this suite exists for: agreeing to 163, then writing 176's layouts."""
    gated = {'error': messages.ERR_MSG, 'contract_details': messages.CONTRACT_DATA,
             'open_order': messages.OPEN_ORDER, 'completed_order': messages.COMPLETED_ORDER}
    for name in gated:
        monkeypatch.setattr(messages, name, _always_176(getattr(messages, name)))
    result = drive(ibapi_python, 163)
    assert {p['msgId'] for p in result['problems']} == set(gated.values())
