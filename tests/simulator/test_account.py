"""Positions, portfolio, account values and account summary stay consistent through fills."""
import pytest

from lib.ibapi import Forex, Future, MarketOrder, Stock


def fill(ib, contract, action, qty):
    trade = ib.placeOrder(contract, MarketOrder(action, qty))
    for _ in range(100):
        if trade.isDone():
            break
        ib.sleep(0.05)
    assert trade.orderStatus.status == 'Filled', trade.log
    return trade


def values(ib, tag):
    return {v.currency: float(v.value) for v in ib.accountValues() if v.tag == tag and v.value}


def test_everything_agrees_after_a_sequence_of_fills(ib, sim):
    spy, aapl = ib.qualifyContracts(Stock('SPY', 'SMART', 'USD'), Stock('AAPL', 'SMART', 'USD'))
    eurusd = ib.qualifyContracts(Forex('EURUSD'))[0]
    fill(ib, spy, 'BUY', 100)
    fill(ib, aapl, 'BUY', 50)
    fill(ib, spy, 'SELL', 40)
    fill(ib, aapl, 'SELL', 70)          # flips to short
    fill(ib, eurusd, 'BUY', 20000)
    ib.sleep(0.3)

    positions = {p.contract.symbol: p.position for p in ib.positions()}
    assert positions == {'SPY': 60, 'AAPL': -20, 'EUR': 20000}
    portfolio = {p.contract.symbol: p for p in ib.portfolio()}
    assert {s: p.position for s, p in portfolio.items()} == positions

    nlv = values(ib, 'NetLiquidation')['USD']
    cash_base = values(ib, 'TotalCashValue')['USD']
    stock_value = sum(p.marketValue for s, p in portfolio.items() if p.contract.secType == 'STK')
    assert nlv == pytest.approx(cash_base + stock_value, abs=1.0)
    eur_cash = values(ib, 'CashBalance')['EUR']
    assert eur_cash == pytest.approx(20000)

    summary = {(v.tag, v.currency): v.value for v in ib.accountSummary()}
    # prices move with the simulated clock between the two requests: a few dollars on a million
    assert float(summary[('NetLiquidation', 'USD')]) == pytest.approx(nlv, rel=1e-5)
    assert float(summary[('TotalCashValue', 'USD')]) == pytest.approx(cash_base, abs=0.01)
    assert ('CashBalance', 'EUR') in summary            # the $LEDGER:ALL rows
    realized = sum(p.realizedPNL for p in portfolio.values())
    assert realized != 0


def test_futures_position_uses_the_multiplier(ib):
    details = ib.reqContractDetails(Future('MNQ', exchange='CME'))
    front = min(details, key=lambda d: d.contract.lastTradeDateOrContractMonth).contract
    fill(ib, front, 'BUY', 2)
    ib.sleep(0.2)
    item = next(p for p in ib.portfolio() if p.contract.conId == front.conId)
    assert item.position == 2
    assert item.marketValue == pytest.approx(item.marketPrice * 2 * 2, rel=1e-6)


def test_positions_are_pushed_to_a_second_client(connect, sim):
    a, b = connect(41), connect(42)
    spy = a.qualifyContracts(Stock('SPY', 'SMART', 'USD'))[0]
    fill(a, spy, 'BUY', 7)
    b.sleep(0.3)
    assert {p.contract.symbol: p.position for p in b.positions()} == {'SPY': 7}


def test_state_set_through_the_api_is_visible_to_clients(sim, connect):
    inst = next(i for i in sim.universe.all() if i.symbol == 'TLT')
    sim.broker.set_position('DU1234567', inst, 30, 88.5)
    ib = connect(43)
    assert {p.contract.symbol: (p.position, p.avgCost) for p in ib.positions()} == {'TLT': (30, 88.5)}


def test_pnl_subscription_reports_realized_pnl_of_closed_positions(ib, sim):
    spy = ib.qualifyContracts(Stock('SPY', 'SMART', 'USD'))[0]
    fill(ib, spy, 'BUY', 10)
    sim.set_price('SPY', 700.0)
    fill(ib, spy, 'SELL', 10)
    pnl = ib.reqPnL('DU1234567')
    ib.sleep(0.3)
    realized = values(ib, 'RealizedPnL')['BASE']
    assert realized > 500                  # bought near 600, sold near 700, less commissions
    assert pnl.realizedPnL == pytest.approx(realized, abs=0.01)
