"""Contracts, trading hours, quotes and bars as the client sees them."""
from datetime import datetime, timezone

from lib.ibapi import CLIENT_LIBRARY, IB, Contract, Forex, Future, Stock
from simulator import Simulator


def test_qualify_a_stock_a_forex_pair_and_a_future(ib):
    spy, eurusd = ib.qualifyContracts(Stock('SPY', 'SMART', 'USD'), Forex('EURUSD'))
    assert (spy.conId, spy.primaryExchange) == (756733, 'ARCA')
    assert (eurusd.secType, eurusd.exchange, eurusd.localSymbol) == ('CASH', 'IDEALPRO', 'EUR.USD')
    es = ib.qualifyContracts(Future('ES', '202612', 'CME'))[0]
    assert (es.lastTradeDateOrContractMonth, es.multiplier, es.localSymbol) == ('20261218', '50', 'ESZ6')


def test_unknown_symbol_gives_error_200_and_no_contract(ib):
    codes = []
    ib.errorEvent += lambda req_id, code, text, contract: codes.append(code)
    qualified = ib.qualifyContracts(Stock('NOSUCH', 'SMART', 'USD'))
    # ib_insync drops an unknown contract; ib_async keeps its place in the list with None.
    assert qualified == ([None] if CLIENT_LIBRARY == 'ib_async' else [])
    assert codes == [200]


def hours(ib, contract):
    details = ib.reqContractDetails(contract)[0]
    return details.timeZoneId, details.tradingHours.split(';'), details.liquidHours.split(';')


def test_liquid_hours_follow_the_exchange_calendar():
    with Simulator(time=datetime(2026, 11, 25, 15, 0, tzinfo=timezone.utc)) as sim:
        ib = IB()
        ib.connect(sim.host, sim.port, clientId=1, timeout=5)
        try:
            tz, trading, liquid = hours(ib, Stock('SPY', 'SMART', 'USD'))
            assert tz == 'US/Eastern'
            assert '20261125:0930-20261125:1600' in liquid
            assert '20261126:CLOSED' in liquid              # Thanksgiving
            assert '20261127:0930-20261127:1300' in liquid  # early close
            assert '20261128:CLOSED' in liquid and '20261129:CLOSED' in liquid   # weekend
        finally:
            ib.disconnect()
    with Simulator(time=datetime(2026, 12, 23, 15, 0, tzinfo=timezone.utc)) as sim:
        ib = IB()
        ib.connect(sim.host, sim.port, clientId=1, timeout=5)
        try:
            _, _, liquid = hours(ib, Stock('SPY', 'SMART', 'USD'))
            assert '20261225:CLOSED' in liquid
        finally:
            ib.disconnect()


def test_snapshot_quote_live_and_delayed(ib):
    spy = ib.qualifyContracts(Stock('SPY', 'SMART', 'USD'))[0]
    live = ib.reqTickers(spy)[0]
    assert 0 < live.bid < live.ask and live.last > 0 and live.close > 0
    ib.reqMarketDataType(3)
    delayed = ib.reqTickers(spy)[0]
    assert delayed.bid > 0 and delayed.close > 0


def test_streaming_quotes_follow_price_changes(ib, sim):
    spy = ib.qualifyContracts(Stock('SPY', 'SMART', 'USD'))[0]
    ticker = ib.reqMktData(spy)
    ib.sleep(0.3)
    sim.set_price('SPY', 123.45)
    ib.sleep(0.6)
    assert abs(ticker.last - 123.45) < 0.5
    ib.cancelMktData(spy)


def bars_from(seed, when):
    with Simulator(time=when, seed=seed) as sim:
        ib = IB()
        ib.connect(sim.host, sim.port, clientId=1, timeout=5)
        try:
            spy = ib.qualifyContracts(Stock('SPY', 'SMART', 'USD'))[0]
            daily = ib.reqHistoricalData(spy, '20261124 21:00:00 UTC', '30 D', '1 day', 'TRADES', True)
            intraday = ib.reqHistoricalData(spy, '20261127 18:30:00 UTC', '1 D', '5 mins', 'MIDPOINT', True)
            return [(b.date, b.open, b.high, b.low, b.close, b.volume) for b in daily], intraday
        finally:
            ib.disconnect()


def test_same_seed_gives_identical_bars_and_sensible_dates():
    when = datetime(2026, 11, 25, 15, 0, tzinfo=timezone.utc)
    first, intraday = bars_from(11, when)
    second, _ = bars_from(11, when)
    other, _ = bars_from(12, when)
    assert first == second
    assert first != other
    dates = [d for d, *_ in first]
    assert 18 <= len(dates) <= 23 and dates[-1].isoformat() == '2026-11-24'
    assert all(d.weekday() < 5 for d in dates)
    assert intraday and intraday[-1].date.hour * 60 + intraday[-1].date.minute <= 12 * 60 + 55 + 0
    assert all(b.volume == -1 for b in intraday)


def test_contract_details_by_con_id(ib):
    details = ib.reqContractDetails(Contract(conId=756733))
    assert [d.contract.symbol for d in details] == ['SPY']
