"""The summary and health intents, run through the runner against the simulated gateway."""
from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime, timedelta, timezone

import pytest

from functions.handler import run_isolated
from intents.base import NoParams
from intents.health import Health
from intents.summary import Summary, SummaryParams
from lib.config import Settings
from lib.ibapi import IB, LimitOrder, MarketOrder, Stock
from simulator import Simulator

ACCOUNT, OTHER_ACCOUNT = 'DU1234567', 'DU7654321'
TRADER_CLIENT_ID = 1
TUESDAY_MORNING_NEW_YORK = datetime(2026, 11, 24, 15, 30, tzinfo=timezone.utc)   # 10:30 EST, market open


def settings_for(sim: Simulator, **overrides) -> Settings:
    return Settings(gateway_host=sim.host, gateway_port=sim.port, **overrides)


def instrument(sim: Simulator, symbol: str):
    return next(i for i in sim.universe.all() if i.symbol == symbol and i.secType == 'STK')


def trade_as_another_client(sim: Simulator) -> dict:
    """A separate raw ib_insync client buys 10 AAPL at market and rests a far-away MSFT limit order."""
    async def trade():
        ib = IB()
        await ib.connectAsync(sim.host, sim.port, TRADER_CLIENT_ID, timeout=4, account=ACCOUNT)
        try:
            bought = ib.placeOrder(Stock('AAPL', 'SMART', 'USD'), MarketOrder('BUY', 10, account=ACCOUNT))
            resting = ib.placeOrder(Stock('MSFT', 'SMART', 'USD'), LimitOrder('BUY', 5, 1.00, account=ACCOUNT))
            while not (bought.isDone() and bought.fills and all(f.commissionReport.execId for f in bought.fills)):
                await asyncio.sleep(0.02)
            while resting.orderStatus.status not in ('Submitted', 'PreSubmitted'):
                await asyncio.sleep(0.02)
            return {'execIds': [f.execution.execId for f in bought.fills],
                    'commission': sum(f.commissionReport.commission for f in bought.fills),
                    'restingPermId': resting.order.permId}
        finally:
            ib.disconnect()

    box = []
    thread = threading.Thread(target=lambda: box.append(asyncio.run(asyncio.wait_for(trade(), 10))))
    thread.start()
    thread.join()
    return box[0]


@pytest.fixture(scope='module')
def market():
    with Simulator(accounts=[ACCOUNT, OTHER_ACCOUNT], time=TUESDAY_MORNING_NEW_YORK, seed=1) as sim:
        sim.broker.set_position(ACCOUNT, instrument(sim, 'SPY'), 50, 550.0)
        sim.broker.set_position(OTHER_ACCOUNT, instrument(sim, 'SPY'), 7, 540.0)
        traded = trade_as_another_client(sim)
        yield sim, traded


def by_symbol(rows: list[dict]) -> dict[str, dict]:
    return {row['contract']['symbol']: row for row in rows}


def test_summary_reports_values_positions_orders_and_executions(market):
    sim, traded = market
    outcome = run_isolated(Summary, SummaryParams(), dry_run=False, settings=settings_for(sim, account=ACCOUNT))
    assert outcome.status == 'ok', outcome.failure
    result = outcome.result
    json.dumps(result, allow_nan=False)   # the result document must be plain JSON

    assert result['account'] == ACCOUNT
    assert result['accountValues']['NetLiquidation']['USD'] > 0
    assert result['summary']['NetLiquidation']['USD'] == pytest.approx(
        result['accountValues']['NetLiquidation']['USD'], rel=1e-3)

    positions = by_symbol(result['positions'])
    assert positions['SPY']['position'] == 50 and positions['SPY']['avgCost'] == pytest.approx(550.0)
    assert positions['AAPL']['position'] == 10
    assert all(p['account'] == ACCOUNT for p in result['positions'])

    spy = by_symbol(result['portfolio'])['SPY']
    assert spy['position'] == 50
    assert spy['unrealizedPNL'] == pytest.approx(spy['marketValue'] - 50 * 550.0, abs=0.05)

    resting = [o for o in result['openOrders'] if o['permId'] == traded['restingPermId']]
    assert len(resting) == 1
    assert resting[0]['clientId'] == TRADER_CLIENT_ID and resting[0]['contract']['symbol'] == 'MSFT'
    assert resting[0]['lmtPrice'] == 1.0 and resting[0]['remaining'] == 5

    executions = {e['execId']: e for e in result['executions']}
    assert set(traded['execIds']) <= set(executions)
    fill = executions[traded['execIds'][0]]
    assert fill['side'] == 'BOT' and fill['contract']['symbol'] == 'AAPL' and fill['clientId'] == TRADER_CLIENT_ID
    assert fill['commission'] > 0 and fill['commissionCurrency'] == 'USD'
    assert sum(executions[i]['commission'] for i in traded['execIds']) == pytest.approx(traded['commission'])


def test_summary_of_another_managed_account(market):
    sim, traded = market
    outcome = run_isolated(Summary, SummaryParams(account=OTHER_ACCOUNT), dry_run=False,
                           settings=settings_for(sim, account=ACCOUNT))
    assert outcome.status == 'ok', outcome.failure
    result = outcome.result
    assert result['account'] == OTHER_ACCOUNT
    assert by_symbol(result['positions'])['SPY']['position'] == 7
    assert by_symbol(result['portfolio'])['SPY']['averageCost'] == pytest.approx(540.0)
    assert 'AAPL' not in by_symbol(result['positions'])
    assert result['executions'] == []
    assert result['accountValues']['NetLiquidation']['USD'] > 0


def test_summary_of_an_unmanaged_account_is_rejected(market):
    sim, _ = market
    outcome = run_isolated(Summary, SummaryParams(account='DU0000001'), dry_run=False,
                           settings=settings_for(sim, account=ACCOUNT))
    assert outcome.status == 'rejected'
    assert 'DU0000001' in outcome.failure.message and outcome.failure.retryable is False


def test_summary_params_refuse_unknown_keys():
    with pytest.raises(ValueError, match='symbol'):
        SummaryParams.model_validate({'symbol': 'AAPL'})
    assert SummaryParams.model_validate({'account': OTHER_ACCOUNT}).account == OTHER_ACCOUNT


@pytest.fixture(scope='module')
def gateway():
    with Simulator(accounts=[ACCOUNT]) as sim:
        yield sim


def test_health_reports_a_healthy_gateway(gateway):
    outcome = run_isolated(Health, NoParams(), dry_run=False, settings=settings_for(gateway))
    assert outcome.status == 'ok', outcome.failure
    result = outcome.result
    json.dumps(result, allow_nan=False)
    assert result['healthy'] is True and result['problems'] == []
    assert result['apiReady']
    assert result['serverVersion'] == 176
    assert result['managedAccounts'] == [ACCOUNT] and result['account'] == ACCOUNT
    assert {n['code'] for n in result['farmNotices']} >= {2104, 2106, 2158}
    assert abs(result['clockSkewSeconds']) < 1.5
    assert abs(datetime.fromisoformat(result['gatewayTime']) - datetime.now(timezone.utc)) < timedelta(seconds=2)


def test_health_flags_a_gateway_clock_that_is_off(gateway):
    gateway.clock.set(datetime.now(timezone.utc) + timedelta(hours=1))
    try:
        outcome = run_isolated(Health, NoParams(), dry_run=False, settings=settings_for(gateway))
    finally:
        gateway.clock.set(datetime.now(timezone.utc))
    assert outcome.status == 'ok'
    assert outcome.result['healthy'] is False
    assert outcome.result['clockSkewSeconds'] == pytest.approx(3600, abs=2)
    assert [p['code'] for p in outcome.result['problems']] == ['clock-skew']
