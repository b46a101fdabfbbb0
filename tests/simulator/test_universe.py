"""The simulated universe: contract resolution, futures listings, trading hours and the extras file."""
import json
import subprocess
import sys
from datetime import date, datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from lib.ibapi import ContractDetails
from simulator.universe import Universe

ET, CT = ZoneInfo('US/Eastern'), ZoneInfo('US/Central')
UTC = timezone.utc
TODAY = date(2026, 11, 27)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def universe():
    return Universe(TODAY)


def one(universe, **contract):
    found = universe.resolve(**contract)
    assert len(found) == 1, found
    return found[0]


# --- resolution ---------------------------------------------------------------------------------

@pytest.mark.parametrize('exchange', ['', 'SMART', 'ARCA', 'smart'])
def test_a_stock_resolves_to_exactly_one_contract(universe, exchange):
    spy = one(universe, symbol='spy', secType='STK', exchange=exchange, currency='USD')
    assert (spy.conId, spy.primaryExchange, spy.exchange, spy.minTick) == (756733, 'ARCA', 'SMART', 0.01)
    assert spy.longName.isascii() and '\\' not in spy.longName


def test_every_builtin_stock_is_unambiguous(universe):
    stocks = [i for i in universe.all() if i.secType == 'STK']
    assert {i.symbol for i in stocks} == {'SPY', 'VIXY', 'QQQ', 'AAPL', 'MSFT', 'TLT', 'GLD'}
    for inst in stocks:
        assert universe.resolve(symbol=inst.symbol, secType='STK', exchange='SMART', currency='USD') == [inst]


def test_wrong_exchange_or_currency_finds_nothing(universe):
    assert universe.resolve(symbol='SPY', secType='STK', exchange='NASDAQ') == []
    assert universe.resolve(symbol='SPY', secType='STK', currency='EUR') == []
    assert universe.resolve(symbol='SPY', secType='STK', primaryExchange='NYSE') == []


def test_unknown_symbol_finds_nothing(universe):
    assert universe.resolve(symbol='NOSUCH', secType='STK', exchange='SMART', currency='USD') == []
    assert universe.resolve() == []


def test_conid_alone_resolves(universe):
    assert one(universe, conId=265598).symbol == 'AAPL'
    assert universe.get(272093).symbol == 'MSFT'
    assert universe.resolve(conId=1) == [] and universe.get(1) is None


def test_forex_resolves_as_ib_insync_sends_it(universe):
    eur = one(universe, symbol='EUR', secType='CASH', exchange='IDEALPRO', currency='USD')
    assert (eur.localSymbol, eur.tradingClass, eur.minTick, eur.primaryExchange) == ('EUR.USD', 'EUR.USD', 0.00005, '')
    jpy = one(universe, symbol='USD', secType='CASH', exchange='IDEALPRO', currency='JPY')
    assert (jpy.localSymbol, jpy.minTick) == ('USD.JPY', 0.005)
    assert len(universe.resolve(symbol='USD', secType='CASH')) == 2      # USD.JPY and USD.CHF


def test_futures_list_the_next_four_quarterly_contracts(universe):
    es = universe.resolve(symbol='ES', secType='FUT', exchange='CME')
    assert [(i.localSymbol, i.lastTradeDateOrContractMonth) for i in es] == [
        ('ESZ6', '20261218'), ('ESH7', '20270319'), ('ESM7', '20270617'), ('ESU7', '20270917')]
    assert {(i.multiplier, i.minTick, i.tradingClass, i.timeZoneId, i.currency) for i in es} == {
        ('50', 0.25, 'ES', 'US/Central', 'USD')}
    mnq = one(universe, symbol='MNQ', secType='FUT', lastTradeDateOrContractMonth='202612')
    assert (mnq.localSymbol, mnq.multiplier, mnq.tradingClass) == ('MNQZ6', '2', 'MNQ')


def test_june_2027_expiry_moves_before_juneteenth_friday():
    # The third Friday of June 2027 is the 18th, the observed Juneteenth holiday: trading ends the day before.
    es = Universe(date(2027, 6, 1)).resolve(symbol='ES', lastTradeDateOrContractMonth='202706')
    assert [i.lastTradeDateOrContractMonth for i in es] == ['20270617']


def test_expiry_filters_by_month_or_exact_date_and_local_symbol_alone_works(universe):
    assert one(universe, symbol='ES', lastTradeDateOrContractMonth='20270319').localSymbol == 'ESH7'
    assert universe.resolve(symbol='ES', lastTradeDateOrContractMonth='20270318') == []
    assert one(universe, localSymbol='esh7', secType='FUT').symbol == 'ES'


@pytest.mark.parametrize('today, front', [
    (date(2026, 11, 27), ('ESZ6', '20261218')),
    (date(2026, 12, 18), ('ESZ6', '20261218')),       # still trading on its last day
    (date(2026, 12, 19), ('ESH7', '20270319')),
    (date(2027, 3, 20), ('ESM7', '20270617')),
])
def test_front_month_rolls_after_expiry(today, front):
    es = Universe(today).resolve(symbol='ES', secType='FUT')
    assert (es[0].localSymbol, es[0].lastTradeDateOrContractMonth) == front
    assert len(es) == 4


def test_include_expired_adds_the_previous_two_contracts(universe):
    es = universe.resolve(symbol='ES', secType='FUT', includeExpired=True)
    assert [i.localSymbol for i in es] == ['ESM6', 'ESU6', 'ESZ6', 'ESH7', 'ESM7', 'ESU7']
    expired = es[0]
    assert universe.get(expired.conId) == expired                # orders and positions may still refer to it
    assert expired not in universe.all()


def test_future_conids_are_stable_across_processes_and_unique(universe):
    here = {i.localSymbol: i.conId for i in universe.resolve(symbol='ES', includeExpired=True)}
    code = ('from datetime import date; from simulator.universe import Universe; '
            "print({i.localSymbol: i.conId for i in Universe(date(2026, 11, 27)).resolve(symbol='ES', "
            'includeExpired=True)})')
    there = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                           env={'PYTHONHASHSEED': '123'}, check=True).stdout
    assert eval(there) == here
    ids = [i.conId for i in Universe(TODAY).resolve(symbol='ES', includeExpired=True)
           + Universe(TODAY).resolve(symbol='MNQ', includeExpired=True)]
    assert len(set(ids)) == len(ids)


# --- hours ----------------------------------------------------------------------------------------

def test_stock_hours_show_thanksgiving_week(universe):
    trading, liquid = universe.hours(one(universe, symbol='SPY'), datetime(2026, 11, 23, 15, tzinfo=UTC))
    assert liquid.split(';') == [
        '20261123:0930-20261123:1600', '20261124:0930-20261124:1600', '20261125:0930-20261125:1600',
        '20261126:CLOSED', '20261127:0930-20261127:1300', '20261128:CLOSED', '20261129:CLOSED']
    assert trading.split(';')[3:5] == ['20261126:CLOSED', '20261127:0400-20261127:1700']
    assert trading.split(';')[0] == '20261123:0400-20261123:2000'


def test_stock_hours_show_christmas_closed(universe):
    _, liquid = universe.hours(one(universe, symbol='AAPL'), datetime(2026, 12, 21, 12, tzinfo=ET))
    assert '20261225:CLOSED' in liquid.split(';')
    assert '20261224:0930-20261224:1300' in liquid.split(';')


def test_hours_start_on_the_date_in_the_instruments_zone(universe):
    # 03:00 UTC on the 24th is still the 23rd in New York.
    trading, _ = universe.hours(one(universe, symbol='SPY'), datetime(2026, 11, 24, 3, tzinfo=UTC))
    assert trading.startswith('20261123:')


def test_ib_insync_parses_the_hours(universe):
    spy = one(universe, symbol='SPY')
    trading, liquid = universe.hours(spy, datetime(2026, 11, 23, 15, tzinfo=UTC))
    details = ContractDetails(timeZoneId=spy.timeZoneId, tradingHours=trading, liquidHours=liquid)
    sessions = details.liquidSessions()
    assert len(sessions) == 4
    assert sessions[-1].end == datetime(2026, 11, 27, 13, 0, tzinfo=ET)


def test_future_hours_span_midnight_and_close_on_nyse_holidays(universe):
    es = universe.resolve(symbol='ES')[0]
    trading, liquid = universe.hours(es, datetime(2026, 11, 23, 15, tzinfo=UTC))
    assert trading.split(';')[:4] == ['20261122:1700-20261123:1600', '20261123:1700-20261124:1600',
                                      '20261124:1700-20261125:1600', '20261126:CLOSED']
    assert liquid.split(';')[4] == '20261127:0830-20261127:1200'
    assert liquid.split(';')[5:] == ['20261128:CLOSED', '20261129:CLOSED']
    assert universe.is_trading(es, datetime(2026, 11, 26, 18, tzinfo=CT))        # Friday's session opened
    assert not universe.is_trading(es, datetime(2026, 11, 26, 12, tzinfo=CT))
    assert universe.is_trading(es, datetime(2026, 11, 29, 17, 1, tzinfo=CT))       # Sunday evening open
    assert not universe.is_trading(es, datetime(2026, 11, 30, 16, 30, tzinfo=CT))  # daily halt


def test_forex_trades_round_the_clock_on_weekdays(universe):
    eur = one(universe, symbol='EUR', currency='USD')
    trading, liquid = universe.hours(eur, datetime(2026, 12, 23, 12, tzinfo=ET))
    assert trading == liquid
    assert trading.split(';')[:3] == ['20261222:1715-20261223:1700', '20261223:1715-20261224:1700',
                                      '20261225:CLOSED']
    assert universe.is_liquid(eur, datetime(2026, 11, 27, 16, 59, tzinfo=ET))
    assert not universe.is_liquid(eur, datetime(2026, 11, 27, 17, 1, tzinfo=ET))
    assert not universe.is_liquid(eur, datetime(2026, 11, 29, 17, 0, tzinfo=ET))
    assert universe.is_liquid(eur, datetime(2026, 11, 29, 17, 15, tzinfo=ET))
    assert not universe.is_liquid(eur, datetime(2026, 11, 30, 17, 10, tzinfo=ET))  # daily break


def test_liquid_and_trading_on_the_early_close(universe):
    spy = one(universe, symbol='SPY')
    assert universe.is_liquid(spy, datetime(2026, 11, 27, 12, 59, tzinfo=ET))
    assert not universe.is_liquid(spy, datetime(2026, 11, 27, 13, 1, tzinfo=ET))
    assert universe.is_trading(spy, datetime(2026, 11, 27, 16, 59, tzinfo=ET))
    assert not universe.is_trading(spy, datetime(2026, 11, 27, 17, 1, tzinfo=ET))
    assert not universe.is_liquid(spy, datetime(2026, 11, 27, 9, 29, tzinfo=ET))
    assert universe.is_trading(spy, datetime(2026, 11, 27, 9, 29, tzinfo=ET))


def test_sessions_follow_daylight_saving_time(universe):
    spy = one(universe, symbol='SPY')
    # 13:30 UTC is 08:30 EST on Friday 6 March 2026, 09:30 EDT on Monday 9 March.
    assert not universe.is_liquid(spy, datetime(2026, 3, 6, 13, 30, tzinfo=UTC))
    assert universe.is_liquid(spy, datetime(2026, 3, 9, 13, 30, tzinfo=UTC))


def test_session_end_and_next_open(universe):
    spy, es = one(universe, symbol='SPY'), universe.resolve(symbol='ES')[0]
    end, next_open = universe.liquid_session_end, universe.next_liquid_open
    assert end(spy, datetime(2026, 11, 27, 10, tzinfo=ET)) == datetime(2026, 11, 27, 18, tzinfo=UTC)
    # Wednesday evening: the next liquid session is Friday's short one (Thursday is Thanksgiving).
    assert end(spy, datetime(2026, 11, 25, 17, tzinfo=ET)) == datetime(2026, 11, 27, 18, tzinfo=UTC)
    assert next_open(spy, datetime(2026, 11, 28, 12, tzinfo=ET)) == datetime(2026, 11, 30, 14, 30, tzinfo=UTC)
    assert next_open(spy, datetime(2026, 11, 30, 9, 31, tzinfo=ET)) == datetime(2026, 12, 1, 14, 30, tzinfo=UTC)
    assert end(es, datetime(2026, 12, 24, 12, 30, tzinfo=CT)) == datetime(2026, 12, 28, 21, tzinfo=UTC)


# --- extras file -------------------------------------------------------------------------------------

def write(tmp_path, entries):
    path = tmp_path / 'contracts.json'
    path.write_text(json.dumps(entries))
    return path


def test_extra_contracts_join_the_universe(tmp_path):
    path = write(tmp_path, [
        {'conId': 4815747, 'symbol': 'NVDA', 'secType': 'STK', 'exchange': 'SMART', 'primaryExchange': 'NASDAQ',
         'currency': 'USD', 'longName': 'NVIDIA CORP', 'basePrice': 180, 'volatility': 0.45},
        {'conId': 900000001, 'symbol': 'NQ', 'secType': 'FUT', 'exchange': 'CME', 'currency': 'USD',
         'localSymbol': 'NQZ6', 'lastTradeDateOrContractMonth': '20261218', 'multiplier': '20', 'minTick': 0.25},
    ])
    universe = Universe(TODAY, path)
    nvda = universe.resolve(symbol='NVDA', secType='STK', exchange='SMART', currency='USD')
    assert [(i.conId, i.basePrice, i.localSymbol, i.session) for i in nvda] == [(4815747, 180.0, 'NVDA', 'stock')]
    nq = universe.get(900000001)
    assert (nq.session, nq.timeZoneId, nq.tradingClass) == ('future', 'US/Central', 'NQ')
    assert universe.resolve(symbol='SPY')                         # built-ins stay


@pytest.mark.parametrize('entries, message', [
    ({'conId': 1}, 'expected a JSON list'),
    ([{'symbol': 'X', 'secType': 'STK', 'exchange': 'SMART', 'currency': 'USD'}], "entry 0 (X): missing field 'conId'"),
    ([{'conId': 5, 'symbol': 'X', 'secType': 'STK', 'exchange': 'SMART', 'currency': 'USD', 'colour': 'red'}],
     'entry 0 (X): unknown field(s) colour'),
    ([{'conId': '5', 'symbol': 'X', 'secType': 'STK', 'exchange': 'SMART', 'currency': 'USD'}],
     "entry 0 (X): field 'conId' must be an integer"),
    ([{'conId': 5, 'symbol': 'X', 'secType': 'OPT', 'exchange': 'SMART', 'currency': 'USD'}],
     'entry 0 (X): secType must be one of'),
    ([{'conId': 5, 'symbol': 'X', 'secType': 'FUT', 'exchange': 'CME', 'currency': 'USD', 'multiplier': '5',
       'lastTradeDateOrContractMonth': '2026121'}], 'YYYYMMDD'),
    ([{'conId': 5, 'symbol': 'X', 'secType': 'STK', 'exchange': 'SMART', 'currency': 'USD', 'minTick': 0}],
     'minTick and basePrice must be positive'),
    ([{'conId': 5, 'symbol': 'X', 'secType': 'STK', 'exchange': 'SMART', 'currency': 'USD', 'timeZoneId': 'Mars/Base'}],
     "unknown timeZoneId 'Mars/Base'"),
    (['SPY'], 'entry 0: expected an object'),
    ([{'conId': 756733, 'symbol': 'X', 'secType': 'STK', 'exchange': 'SMART', 'currency': 'USD'}],
     'conId already used by SPY'),
    ([{'conId': 5, 'symbol': 'SPY', 'secType': 'STK', 'exchange': 'SMART', 'currency': 'USD'}], 'ambiguous'),
    ([{'conId': 5, 'symbol': 'X', 'secType': 'STK', 'exchange': 'SMART', 'currency': 'USD'},
      {'conId': 5, 'symbol': 'Y', 'secType': 'STK', 'exchange': 'SMART', 'currency': 'USD'}], 'conId 5 appears twice'),
])
def test_bad_extra_contracts_are_refused_with_a_clear_message(tmp_path, entries, message):
    with pytest.raises(ValueError) as error:
        Universe(TODAY, write(tmp_path, entries))
    assert message in str(error.value)
    assert 'contracts.json' in str(error.value)


def test_unreadable_extras_file_is_refused(tmp_path):
    path = tmp_path / 'contracts.json'
    path.write_text('[{"conId": 5,')
    with pytest.raises(ValueError, match='cannot read the contracts file'):
        Universe(TODAY, path)
    with pytest.raises(ValueError, match='cannot read the contracts file'):
        Universe(TODAY, tmp_path / 'missing.json')
