"""The strategy registry, and checking what any registered strategy returns."""
from __future__ import annotations

from datetime import date, timedelta

import pytest

from strategies.base import Bar, MarketData, check_targets
from strategies.registry import UnknownStrategy, get_strategy, strategy_names


def test_every_strategy_module_is_found_by_its_name():
    assert {'dummy', 'spy-macd-vixy'} <= set(strategy_names())
    assert strategy_names() == sorted(strategy_names())
    for name in strategy_names():
        cls = get_strategy(name)
        assert cls.name == name and cls.__module__.startswith('strategies.')


@pytest.mark.parametrize('name', ['spy_macd_vixy', 'Dummy', '', None])
def test_unknown_name_lists_the_known_ones(name):
    with pytest.raises(UnknownStrategy) as raised:
        get_strategy(name)
    assert raised.value.known == strategy_names()
    assert str(raised.value) == f"unknown strategy {name!r}; known strategies: {', '.join(strategy_names())}"


@pytest.mark.parametrize('name', strategy_names())
def test_every_strategy_with_default_config_returns_checked_targets_for_its_own_needs(name):
    strategy = get_strategy(name)({})
    today = date(2026, 12, 15)
    closes = [400 * 1.003 ** t for t in range(200)]
    bars = [Bar(today - timedelta(days=199 - i), c, c, c, c, 1.0) for i, c in enumerate(closes)]
    data = MarketData(today, {need.key: bars for need in strategy.data_needs(today)})
    targets = strategy.targets(data)
    assert targets is not None
    assert check_targets(strategy, today, targets) == targets
    assert strategy.targets(data) == targets        # pure: same data, same answer


def test_check_targets_refuses_foreign_keys_and_out_of_range_weights():
    strategy = get_strategy('spy-macd-vixy')({})
    today = date(2026, 11, 27)
    assert check_targets(strategy, today, None) is None
    assert check_targets(strategy, today, {'SPY': 1, 'VIXY': -0.5}) == {'SPY': 1.0, 'VIXY': -0.5}
    with pytest.raises(ValueError, match="'QQQ' is not one of its instruments"):
        check_targets(strategy, today, {'QQQ': 1.0})
    for weight in (1.5, -2, float('nan'), '1', True):
        with pytest.raises(ValueError, match="weight for 'SPY'"):
            check_targets(strategy, today, {'SPY': weight})
