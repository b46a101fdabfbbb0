"""The seeded price model: determinism, calendars, consistency between resolutions, quotes and refusals."""
import subprocess
import sys
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from trading.exchange_calendar import is_trading_day
from simulator.prices import PriceModel
from simulator.universe import Universe

ET, CT = ZoneInfo('US/Eastern'), ZoneInfo('US/Central')
UTC = timezone.utc
TODAY = date(2026, 11, 27)
FRIDAY_NIGHT = datetime(2026, 11, 27, 23, 59, tzinfo=ET)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def universe():
    return Universe(TODAY)


@pytest.fixture(scope='module')
def model(universe):
    return PriceModel(42, universe)


@pytest.fixture(scope='module')
def spy(universe):
    return universe.get(756733)


def on_grid(value, tick):
    return abs(value / tick - round(value / tick)) < 1e-6


# --- determinism ------------------------------------------------------------------------------------

def test_same_seed_gives_the_same_bars_and_another_seed_does_not(universe, spy):
    def bars(seed, bar_size, duration):
        return PriceModel(seed, universe).bars(spy, FRIDAY_NIGHT, duration, bar_size, 'TRADES', True)

    for bar_size, duration in (('1 day', '30 D'), ('5 mins', '2 D')):
        assert bars(7, bar_size, duration) == bars(7, bar_size, duration)
        assert [b.close for b in bars(7, bar_size, duration)] != [b.close for b in bars(8, bar_size, duration)]


def test_same_seed_gives_the_same_prices_in_another_process(model, spy):
    code = ('from datetime import date, datetime, timezone; from simulator.universe import Universe; '
            'from simulator.prices import PriceModel; u = Universe(date(2026, 11, 27)); '
            'bars = PriceModel(42, u).bars(u.get(756733), datetime(2026, 11, 27, 18, tzinfo=timezone.utc), '
            "'1 D', '30 mins', 'TRADES', True); print([b.close for b in bars])")
    there = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                           env={'PYTHONHASHSEED': '99'}, check=True).stdout
    here = model.bars(spy, datetime(2026, 11, 27, 18, tzinfo=UTC), '1 D', '30 mins', 'TRADES', True)
    assert eval(there) == [b.close for b in here]


def test_results_do_not_depend_on_what_was_asked_before(universe, spy):
    fresh = PriceModel(5, universe)
    warmed = PriceModel(5, universe)
    warmed.bars(spy, FRIDAY_NIGHT, '3 D', '1 min', 'TRADES', False)
    at = datetime(2026, 11, 25, 11, 17, 23, tzinfo=ET)
    assert fresh.price(spy, at) == warmed.price(spy, at)


# --- daily bars -----------------------------------------------------------------------------------------

def test_thirty_days_of_daily_bars_skip_weekends_and_thanksgiving(model, spy):
    # The window crosses the end of daylight saving time (1 November): days are counted on New York's calendar.
    bars = model.bars(spy, FRIDAY_NIGHT, '30 D', '1 day', 'TRADES', True)
    dates = [b.date for b in bars]
    calendar_days = [TODAY - timedelta(days=i) for i in range(29, -1, -1)]
    assert dates == [d for d in calendar_days if is_trading_day(d)]
    assert 19 <= len(bars) <= 22
    assert dates[-1] == TODAY and date(2026, 11, 26) not in dates
    assert all(type(d) is date and d.weekday() < 5 for d in dates)


def test_daily_close_is_the_price_at_the_session_close(model, spy):
    bars = model.bars(spy, FRIDAY_NIGHT, '10 D', '1 day', 'TRADES', True)
    for bar in bars:
        close_time = time(13) if bar.date == TODAY else time(16)
        assert bar.close == model.price(spy, datetime.combine(bar.date, close_time, tzinfo=ET))
        assert bar.open == model.price(spy, datetime.combine(bar.date, time(9, 30), tzinfo=ET))


def test_future_daily_bars_follow_the_cme_liquid_session(model, universe):
    es = universe.resolve(symbol='ES', lastTradeDateOrContractMonth='202612')[0]
    bars = model.bars(es, FRIDAY_NIGHT, '1 W', '1 day', 'TRADES', True)
    assert [b.date for b in bars] == [date(2026, 11, 23), date(2026, 11, 24), date(2026, 11, 25), TODAY]
    assert bars[-1].close == model.price(es, datetime(2026, 11, 27, 12, tzinfo=CT))
    assert all(on_grid(p, 0.25) for b in bars for p in (b.open, b.high, b.low, b.close))


def test_weekly_and_monthly_bars_aggregate_the_daily_ones(model, spy):
    daily = model.bars(spy, FRIDAY_NIGHT, '3 M', '1 day', 'TRADES', True)
    for size, period in (('1 week', lambda d: d.isocalendar()[:2]), ('1 month', lambda d: (d.year, d.month))):
        bars = model.bars(spy, FRIDAY_NIGHT, '3 M', size, 'TRADES', True)
        groups = {}
        for bar in daily:
            groups.setdefault(period(bar.date), []).append(bar)
        assert [b.date for b in bars] == [g[0].date for g in groups.values()]
        assert [b.open for b in bars] == [g[0].open for g in groups.values()]
        assert [b.close for b in bars] == [g[-1].close for g in groups.values()]
        assert [b.high for b in bars] == [max(x.high for x in g) for g in groups.values()]


# --- intraday bars --------------------------------------------------------------------------------------

def test_five_minute_rth_bars_stop_at_the_early_close(model, spy):
    bars = model.bars(spy, FRIDAY_NIGHT, '1 D', '5 mins', 'TRADES', True)
    assert bars[0].date == datetime(2026, 11, 27, 9, 30, tzinfo=ET)
    assert bars[-1].date == datetime(2026, 11, 27, 12, 55, tzinfo=ET)
    assert len(bars) == 42
    assert all(b.date.tzinfo == ET for b in bars)
    assert bars[-1].close == model.price(spy, datetime(2026, 11, 27, 13, tzinfo=ET))


def test_outside_rth_bars_cover_extended_hours(model, spy):
    bars = model.bars(spy, FRIDAY_NIGHT, '1 D', '1 hour', 'TRADES', False)
    assert [b.date.hour for b in bars] == list(range(4, 17))


def test_bars_never_extend_past_end(model, spy):
    end = datetime(2026, 11, 25, 11, 7, 30, tzinfo=ET)
    bars = model.bars(spy, end, '3600 S', '5 mins', 'TRADES', True)
    assert bars[0].date == datetime(2026, 11, 25, 10, 5, tzinfo=ET)
    assert bars[-1].date == datetime(2026, 11, 25, 11, 5, tzinfo=ET)
    assert bars[-1].close == model.price(spy, end)


def test_resolutions_agree_on_shared_boundaries(model, spy):
    end = datetime(2026, 11, 24, 16, tzinfo=ET)
    fine = model.bars(spy, end, '1 D', '1 min', 'TRADES', True)
    coarse = model.bars(spy, end, '1 D', '5 mins', 'TRADES', True)
    seconds = model.bars(spy, end, '300 S', '5 secs', 'TRADES', True)
    assert len(fine) == 5 * len(coarse) == 390
    for i, bar in enumerate(coarse):
        assert (bar.open, bar.close) == (fine[5 * i].open, fine[5 * i + 4].close)
    assert seconds[-1].close == fine[-1].close == coarse[-1].close
    assert seconds[0].open == fine[-5].open


@pytest.mark.parametrize('what', ['TRADES', 'MIDPOINT', 'BID_ASK'])
def test_bars_are_well_formed(model, universe, what):
    for inst in (universe.get(272093), universe.resolve(symbol='ES')[0], universe.get(15016059)):
        if what == 'TRADES' and inst.secType == 'CASH':
            continue
        for bar in model.bars(inst, FRIDAY_NIGHT, '2 D', '15 mins', what, True):
            assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
            if what == 'TRADES':
                assert bar.volume > 0 and bar.count > 0 and bar.low <= bar.wap <= bar.high
                assert all(on_grid(p, inst.minTick) for p in (bar.open, bar.high, bar.low, bar.close))
            else:
                assert (bar.volume, bar.wap) == (-1, -1)


def test_forex_serves_midpoints_but_no_trades(model, universe):
    eur = universe.get(12087792)
    bars = model.bars(eur, datetime(2026, 11, 27, 17, tzinfo=ET), '1 D', '1 hour', 'MIDPOINT', False)
    assert len(bars) == 24        # 17:15-18:00 Thursday, then whole hours to 17:00 Friday
    assert bars[0].date == datetime(2026, 11, 26, 17, 15, tzinfo=ET)
    assert bars[1].date == datetime(2026, 11, 26, 18, tzinfo=ET)
    with pytest.raises(ValueError, match='No historical market data for EUR.USD'):
        model.bars(eur, FRIDAY_NIGHT, '1 D', '1 hour', 'TRADES', False)


@pytest.mark.parametrize('duration, bar_size, what, message', [
    ('30 X', '1 day', 'TRADES', 'invalid duration'),
    ('30D', '1 day', 'TRADES', 'invalid duration'),
    ('0 D', '1 day', 'TRADES', 'invalid duration'),
    ('1 D', '7 mins', 'TRADES', 'invalid bar size'),
    ('1 D', '1 day', 'ADJUSTED_LAST', 'invalid what to show'),
    ('1 Y', '1 secs', 'TRADES', 'more than 100000 bars'),
])
def test_bad_requests_are_refused_like_tws(model, spy, duration, bar_size, what, message):
    with pytest.raises(ValueError) as error:
        model.bars(spy, FRIDAY_NIGHT, duration, bar_size, what, True)
    assert str(error.value).startswith('Historical Market Data Service error message:')
    assert message in str(error.value)


def test_no_bars_when_the_window_holds_no_session(model, spy):
    assert model.bars(spy, datetime(2026, 11, 29, 12, tzinfo=ET), '1 D', '5 mins', 'TRADES', True) == []


# --- prices and quotes -----------------------------------------------------------------------------------

def test_prices_stay_near_the_base_price(model, universe):
    for inst in universe.all():
        price = model.price(inst, datetime(2026, 11, 25, 15, tzinfo=UTC))
        assert 0.5 * inst.basePrice < price < 2 * inst.basePrice
        assert on_grid(price, inst.minTick)


def test_quote_during_the_session(model, spy):
    at = datetime(2026, 11, 25, 11, 0, 17, tzinfo=ET)
    q = model.quote(spy, at)
    assert q.bid < q.ask and round(q.ask - q.bid, 2) == spy.minTick
    assert q.last == model.price(spy, at) and q.bid <= q.last <= q.ask
    assert q.low <= q.last <= q.high and q.low <= q.open <= q.high
    daily = model.bars(spy, at, '1 W', '1 day', 'TRADES', True)
    assert q.close == daily[-2].close          # yesterday's close
    assert q.open == daily[-1].open
    assert min(q.bidSize, q.askSize, q.lastSize, q.volume) > 0


def test_quote_close_skips_the_holiday(model, spy):
    q = model.quote(spy, datetime(2026, 11, 27, 10, tzinfo=ET))
    assert q.close == model.price(spy, datetime(2026, 11, 25, 16, tzinfo=ET))


def test_quote_stands_still_while_the_market_is_closed(model, spy):
    saturday = model.quote(spy, datetime(2026, 11, 28, 10, tzinfo=ET))
    assert saturday == model.quote(spy, datetime(2026, 11, 30, 3, 59, tzinfo=ET))
    assert saturday.last == model.price(spy, datetime(2026, 11, 27, 17, tzinfo=ET))
    assert model.quote(spy, datetime(2026, 11, 30, 4, 1, tzinfo=ET)).close == \
        model.price(spy, datetime(2026, 11, 27, 13, tzinfo=ET))


def test_forex_quote_ticks(model, universe):
    jpy = universe.get(15016059)
    q = model.quote(jpy, datetime(2026, 11, 25, 15, tzinfo=UTC))
    assert round(q.ask - q.bid, 3) == 0.005 and on_grid(q.last, 0.005)


def test_set_price_moves_the_path_from_then_on(universe, spy):
    model = PriceModel(3, universe)
    at = datetime(2026, 11, 25, 14, tzinfo=ET)
    before = model.price(spy, at - timedelta(minutes=5))
    target = round(model.price(spy, at) * 1.1, 2)
    model.set_price(spy.conId, target, at)
    assert model.price(spy, at) == target
    assert model.price(spy, at - timedelta(minutes=5)) == before
    later = model.price(spy, at + timedelta(minutes=10))
    assert abs(later / target - 1) < 0.02
    assert model.quote(spy, at).bid <= target <= model.quote(spy, at).ask
    assert model.bars(spy, at, '600 S', '1 min', 'TRADES', True)[-1].close == target


def test_set_price_while_closed_moves_the_standing_quote(universe, spy):
    model = PriceModel(3, universe)
    saturday = datetime(2026, 11, 28, 12, tzinfo=ET)
    model.set_price(spy.conId, 555.55, saturday)
    assert model.price(spy, saturday) == 555.55
    assert model.quote(spy, saturday + timedelta(hours=20)).last == 555.55


def test_set_price_refuses_unknown_contracts(model):
    with pytest.raises(ValueError):
        model.set_price(1, 10.0, FRIDAY_NIGHT)
