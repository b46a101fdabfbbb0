"""dummy: a stable daily signal, and the MNQ front month it trades, rolled before expiry."""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

from simulator.universe import quarterly_expiry as simulator_expiry
from strategies.base import InstrumentSpec, MarketData
from strategies.futures import quarterly_expiry
from strategies.registry import get_strategy

REPO = Path(__file__).resolve().parents[2]


def dummy(config: dict | None = None):
    return get_strategy('dummy')(config or {})


def targets_on(day: date, config: dict | None = None) -> dict[str, float]:
    return dummy(config).targets(MarketData(day, {}))


def test_same_date_gives_the_same_signal_in_another_process():
    days = [date(2026, 11, 2) + timedelta(days=i) for i in range(20)]
    here = [targets_on(day) for day in days]
    script = ('from datetime import date, timedelta; from strategies.base import MarketData; '
              'from strategies.dummy import Dummy; d = Dummy({}); '
              'print([d.targets(MarketData(date(2026, 11, 2) + timedelta(days=i), {})) for i in range(20)])')
    env = {**os.environ, 'PYTHONHASHSEED': '12345'}
    there = subprocess.run([sys.executable, '-c', script], cwd=REPO, env=env, capture_output=True, text=True,
                           check=True).stdout
    assert there.strip() == repr(here)


def test_signal_changes_across_dates_and_takes_every_value():
    signals = [targets_on(date(2026, 10, 1) + timedelta(days=i))['MNQ:20261218'] for i in range(30)]
    assert set(signals) == {-1.0, 0.0, 1.0}


def test_front_month_before_the_roll():
    strategy = dummy()
    day = date(2026, 11, 27)
    assert strategy.instruments(day) == [InstrumentSpec('MNQ:20261218', 'MNQ', 'FUT', 'CME', 'USD', '20261218')]
    assert list(targets_on(day)) == ['MNQ:20261218']
    assert strategy.data_needs(day) == []


def test_last_day_before_the_roll_keeps_the_expiring_contract():
    assert [s.key for s in dummy().instruments(date(2026, 12, 14))] == ['MNQ:20261218']


def test_rolls_three_days_before_expiry_and_flattens_the_old_contract():
    day = date(2026, 12, 15)
    assert [s.key for s in dummy().instruments(day)] == ['MNQ:20270319', 'MNQ:20261218']
    targets = targets_on(day)
    assert targets['MNQ:20261218'] == 0.0
    assert targets['MNQ:20270319'] in (-1.0, 0.0, 1.0)


def test_after_expiry_only_the_next_contract_remains():
    assert [s.key for s in dummy().instruments(date(2026, 12, 19))] == ['MNQ:20270319']


def test_roll_days_are_configurable():
    assert [s.key for s in dummy({'roll_days_before_expiry': 0}).instruments(date(2026, 12, 17))] == ['MNQ:20261218']
    assert [s.key for s in dummy({'roll_days_before_expiry': 10}).instruments(date(2026, 12, 8))][0] == 'MNQ:20270319'


def test_expiry_moves_to_thursday_when_the_third_friday_is_a_holiday():
    assert quarterly_expiry(2026, 6) == date(2026, 6, 18)     # Juneteenth, Friday
    assert quarterly_expiry(2027, 6) == date(2027, 6, 17)     # Juneteenth on Saturday, observed Friday the 18th
    assert quarterly_expiry(2008, 3) == date(2008, 3, 20)     # Good Friday
    assert quarterly_expiry(2026, 9) == date(2026, 9, 18)


def test_expiries_agree_with_the_simulated_gateway_for_a_century():
    for year in range(2000, 2100):
        for month in (3, 6, 9, 12):
            assert quarterly_expiry(year, month) == simulator_expiry(year, month), (year, month)


def test_other_future_and_stock_instruments():
    es = dummy({'symbol': 'es', 'roll_days_before_expiry': 5})
    assert es.instruments(date(2026, 11, 27))[0] == InstrumentSpec('ES:20261218', 'ES', 'FUT', 'CME', 'USD', '20261218')
    stock = dummy({'symbol': 'QQQ', 'sec_type': 'stk'})
    assert stock.instruments(date(2026, 12, 15)) == [InstrumentSpec('QQQ', 'QQQ', 'STK', 'SMART', 'USD')]
    assert list(stock.targets(MarketData(date(2026, 12, 15), {}))) == ['QQQ']


@pytest.mark.parametrize('config, key', [
    ({'roll_days_before_expiry': -1}, 'roll_days_before_expiry'),
    ({'roll_days_before_expiry': 'three'}, 'roll_days_before_expiry'),
    ({'roll_days_before_expiry': 61}, 'roll_days_before_expiry'),
    ({'sec_type': 'OPT'}, 'sec_type'),
    ({'symbol': ''}, 'symbol'),
    ({'symbol': 'MN Q'}, 'symbol'),
    ({'currency': 'US'}, 'currency'),
    ({'exchange': 7}, 'exchange'),
    ({'instrument': 'MNQ'}, 'instrument'),
])
def test_bad_config_names_the_key(config, key):
    with pytest.raises(ValueError, match=f"'{key}'"):
        dummy(config)
