"""EMA and MACD against values worked out by hand and against an independent closed-form EMA."""
from __future__ import annotations

import random

import pytest

from strategies.indicators import ema, macd


def closed_form_ema(values: list[float], period: int, index: int) -> float:
    """EMA at `index` as an explicit weighted sum: the seed (mean of the first `period` values) decayed,
    plus each later value weighted alpha * (1 - alpha) ** age."""
    alpha = 2 / (period + 1)
    seed = sum(values[:period]) / period
    steps = index - (period - 1)
    total = seed * (1 - alpha) ** steps
    for k in range(period, index + 1):
        total += alpha * (1 - alpha) ** (index - k) * values[k]
    return total


def test_ema_of_a_short_series_worked_by_hand():
    # period 3, alpha 1/2: seed (2 + 4 + 9) / 3 = 5, then (5 + 1) / 2 = 3, then (3 + 7) / 2 = 5
    assert ema([2, 4, 9, 1, 7], 3) == [None, None, 5, 3, 5]


def test_ema_with_fewer_values_than_the_period_has_no_values():
    assert ema([1.0, 2.0], 3) == [None, None]


def test_macd_of_a_short_series_worked_by_hand():
    # fast 2 (alpha 2/3), slow 3 (alpha 1/2), signal 2 (alpha 2/3) on 10, 11, 13, 12, 15:
    #   fast EMA: 21/2, 73/6, 217/18, 757/54      slow EMA: -, 34/3, 35/3, 40/3
    #   MACD line: 5/6, 7/18, 37/54               signal: seed (5/6 + 7/18) / 2 = 11/18, then 107/162
    series = macd([10, 11, 13, 12, 15], fast=2, slow=3, signal=2)
    assert series.line[:2] == [None, None]
    assert series.line[2:] == pytest.approx([5 / 6, 7 / 18, 37 / 54], abs=1e-12)
    assert series.signal[:3] == [None, None, None]
    assert series.signal[3:] == pytest.approx([11 / 18, 107 / 162], abs=1e-12)
    assert series.histogram[-1] == pytest.approx(37 / 54 - 107 / 162, abs=1e-12)


def test_macd_of_a_linear_ramp_is_seven_times_the_slope():
    # An EMA seeded with the simple mean lags a ramp by (period - 1) / 2 steps from the start, so
    # EMA12 - EMA26 = slope * (25 - 11) / 2 = 7 * slope on every bar, and the signal line equals it.
    slope = 0.5
    closes = [100 + slope * t for t in range(60)]
    series = macd(closes)
    assert series.line[:25] == [None] * 25
    assert series.line[25:] == pytest.approx([7 * slope] * 35, abs=1e-9)
    assert series.signal[33:] == pytest.approx([7 * slope] * 27, abs=1e-9)
    assert series.histogram[-1] == pytest.approx(0, abs=1e-9)


def test_macd_matches_an_independent_ema_on_a_random_walk():
    rng = random.Random(11)
    closes = [500.0]
    for _ in range(149):
        closes.append(closes[-1] * (1 + rng.gauss(0, 0.01)))
    series = macd(closes, 12, 26, 9)
    expected_line = [closed_form_ema(closes, 12, i) - closed_form_ema(closes, 26, i) for i in range(25, 150)]
    assert series.line[25:] == pytest.approx(expected_line, rel=1e-9, abs=1e-9)
    expected_signal = [closed_form_ema(expected_line, 9, i) for i in range(8, len(expected_line))]
    assert series.signal[33:] == pytest.approx(expected_signal, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize('fast, slow', [(26, 12), (12, 12), (0, 26)])
def test_macd_rejects_fast_not_below_slow(fast, slow):
    with pytest.raises(ValueError, match='fast'):
        macd([1.0] * 50, fast=fast, slow=slow)
