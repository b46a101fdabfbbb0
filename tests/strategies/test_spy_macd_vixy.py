"""spy-macd-vixy: the side it takes for constructed SPY histories, no opinion without one, config checks."""
from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from strategies.base import Bar, DataNeed, MarketData
from strategies.registry import get_strategy

TODAY = date(2026, 11, 27)
LONG = {'SPY': 1.0, 'VIXY': 0.0}
SHORT = {'SPY': -1.0, 'VIXY': 1.0}


def daily_bars(closes: list[float], last_day: date = TODAY) -> list[Bar]:
    """One bar per close, oldest first, ending on `last_day` (weekends are irrelevant to the strategy)."""
    first = last_day - timedelta(days=len(closes) - 1)
    return [Bar(first + timedelta(days=i), c, c, c, c, 1000.0) for i, c in enumerate(closes)]


def decide(closes: list[float], config: dict | None = None, today: date = TODAY):
    strategy = get_strategy('spy-macd-vixy')(config or {})
    return strategy.targets(MarketData(today, {'SPY': daily_bars(closes, today)}))


def test_accelerating_rise_is_long_spy_flat_vixy():
    assert decide([400 * 1.003 ** t for t in range(120)]) == LONG


def test_accelerating_fall_is_short_spy_long_vixy():
    assert decide([600 - 0.02 * t ** 2 for t in range(120)]) == SHORT


def test_rise_that_turns_down_is_short():
    closes = [400 + 2 * t for t in range(100)] + [598 - 3 * t for t in range(10)]
    assert decide(closes) == SHORT


def test_fall_that_turns_up_is_long():
    closes = [600 - 2 * t for t in range(100)] + [402 + 3 * t for t in range(10)]
    assert decide(closes) == LONG


def test_linear_ramp_has_macd_equal_to_signal_so_no_opinion():
    assert decide([100 + 0.5 * t for t in range(120)]) is None


def test_fewer_than_slow_plus_signal_bars_is_no_opinion():
    rising = [400 * 1.003 ** t for t in range(35)]
    assert decide(rising[1:]) is None        # 34 bars
    assert decide(rising) == LONG            # 35 bars
    assert decide([], {}) is None


def test_missing_spy_bars_is_no_opinion():
    strategy = get_strategy('spy-macd-vixy')({})
    assert strategy.targets(MarketData(TODAY, {})) is None


def test_shorter_periods_from_config_need_fewer_bars():
    rising = [400 * 1.01 ** t for t in range(8)]
    config = {'fast': 2, 'slow': 5, 'signal': 3}
    assert decide(rising, config) == LONG
    assert decide(rising[1:], config) is None


def test_bars_after_today_are_ignored_and_order_does_not_matter():
    falling = daily_bars([600 - 0.02 * t ** 2 for t in range(120)])
    later_rally = [Bar(TODAY + timedelta(days=i), p, p, p, p, 1.0) for i, p in enumerate(range(700, 900, 10), 1)]
    strategy = get_strategy('spy-macd-vixy')({})
    assert strategy.targets(MarketData(TODAY, {'SPY': list(reversed(falling)) + later_rally})) == SHORT


def test_intraday_bars_with_datetimes_are_accepted():
    start = datetime(2026, 11, 20, 9, 30)
    bars = [Bar(start + timedelta(minutes=5 * i), c, c, c, c, 1.0)
            for i, c in enumerate(400 * 1.003 ** t for t in range(60))]
    strategy = get_strategy('spy-macd-vixy')({})
    assert strategy.targets(MarketData(TODAY, {'SPY': bars})) == LONG


def test_declares_spy_and_vixy_and_its_spy_data():
    strategy = get_strategy('spy-macd-vixy')({'lookback': '1 Y'})
    specs = {s.key: s for s in strategy.instruments(TODAY)}
    assert set(specs) == {'SPY', 'VIXY'}
    assert all((s.symbol, s.sec_type, s.exchange, s.currency) == (s.key, 'STK', 'SMART', 'USD')
               for s in specs.values())
    assert strategy.data_needs(TODAY) == [DataNeed('SPY', '1 day', '1 Y', 'TRADES')]
    assert get_strategy('spy-macd-vixy')({}).data_needs(TODAY)[0].duration == '200 D'


@pytest.mark.parametrize('config, key', [
    ({'fast': 'twelve'}, 'fast'),
    ({'fast': 0}, 'fast'),
    ({'fast': True}, 'fast'),
    ({'fast': 12.5}, 'fast'),
    ({'fast': 30}, 'fast'),            # not below slow
    ({'slow': 1}, 'slow'),
    ({'signal': -9}, 'signal'),
    ({'lookback': '200'}, 'lookback'),
    ({'lookback': 200}, 'lookback'),
    ({'lookback': '0 D'}, 'lookback'),
    ({'slwo': 30}, 'slwo'),            # a typo is refused, not ignored
])
def test_bad_config_names_the_key(config, key):
    with pytest.raises(ValueError, match=f"'{key}'"):
        get_strategy('spy-macd-vixy')(config)


def test_integral_floats_from_json_are_accepted():
    assert get_strategy('spy-macd-vixy')({'fast': 12.0}).fast == 12


def test_config_that_is_not_a_table_is_refused():
    with pytest.raises(ValueError, match='spy-macd-vixy: config must be a table'):
        get_strategy('spy-macd-vixy')(['fast', 12])
