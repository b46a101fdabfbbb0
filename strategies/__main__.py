"""`python -m strategies new NAME`: write a new strategy module from a template and say what else to set.

`python -m strategies list` prints the registered strategies. A strategy is found by the registry as soon
as its module is in `strategies/`; the trading config then gives it a share of the exposure, optional
settings, and the allowlist must admit what it trades.
"""
from __future__ import annotations

import argparse
import keyword
import re
import sys
from pathlib import Path

from strategies.registry import get_strategy, strategy_names

PACKAGE = Path(__file__).resolve().parent
NAME = re.compile(r'^[a-z][a-z0-9]*(-[a-z0-9]+)*$')

TEMPLATE = '''"""`{name}`: TODO one line on what it trades and why."""
from __future__ import annotations

from datetime import date
from typing import Any, Mapping

from strategies.base import ConfigReader, DataNeed, InstrumentSpec, MarketData, Strategy


class {cls}(Strategy):
    """TODO what the signal is. Config ([strategies.{name}], all optional): symbol (SPY), lookback ("60 D")."""

    name = '{name}'

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        settings = ConfigReader(self.name, config, ('symbol', 'lookback'))
        self.symbol = settings.text('symbol', 'SPY', pattern=r'[A-Za-z0-9.]+').upper()
        self.lookback = settings.text('lookback', '60 D', pattern=r'\\d+ [DWMY]')

    def instruments(self, today: date) -> list[InstrumentSpec]:
        """Every contract the strategy may hold on `today`: its universe (the allowlist must admit each)."""
        return [InstrumentSpec(self.symbol, self.symbol, 'STK', 'SMART', 'USD')]

    def data_needs(self, today: date) -> list[DataNeed]:
        """The bars `targets` gets: daily closes over the lookback."""
        return [DataNeed(self.symbol, '1 day', self.lookback)]

    def targets(self, data: MarketData) -> dict[str, float] | None:
        """Weight per instrument key in [-1, 1] of this strategy's exposure, or None for no opinion."""
        closes = [bar.close for bar in data.bars[self.symbol]]
        if len(closes) < 2:
            return None                                   # not enough data: keep the last targets
        return {{self.symbol: 1.0 if closes[-1] > closes[0] else -1.0}}   # long when it rose, else short
'''

TEST_TEMPLATE = '''"""`{name}`: its targets from bars made here, no gateway needed."""
from __future__ import annotations

from datetime import date

from strategies.base import Bar, MarketData, check_targets
from strategies.registry import get_strategy

TODAY = date(2026, 11, 24)


def bars(*closes: float) -> list[Bar]:
    return [Bar(date(2026, 11, 1 + i), c, c, c, c, 1000) for i, c in enumerate(closes)]


def test_rising_prices_mean_long_and_falling_short():
    strategy = get_strategy('{name}')({{}})
    rising = strategy.targets(MarketData(TODAY, {{'SPY': bars(100, 101, 103)}}))
    falling = strategy.targets(MarketData(TODAY, {{'SPY': bars(103, 101, 100)}}))
    assert check_targets(strategy, TODAY, rising) == {{'SPY': 1.0}}
    assert check_targets(strategy, TODAY, falling) == {{'SPY': -1.0}}
'''

NEXT_STEPS = '''wrote {module} and {test}

Next, in config/trading.toml (or the store's settings):
  [exposure.strategies]
  {name} = 0.1              # its share of the overall exposure; all shares together <= 1
  [strategies.{name}]        # optional: its settings, passed to it as they are
  symbol = "SPY"
  [limits]
  allowlist = [..., "SPY"]   # every symbol it trades must be admitted

Then: ./test tests/strategies -k {short}    and    ./run allocation --params '{{"strategies": ["{name}"]}}' --dry-run
'''


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog='python -m strategies', description=__doc__.split('\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)
    new = commands.add_parser('new', help='write strategies/<name>.py and its test from a template')
    new.add_argument('name', help='the strategy name used in config and messages, e.g. momentum-spy')
    commands.add_parser('list', help='the registered strategies')
    args = parser.parse_args(argv)
    if args.command == 'list':
        for name in strategy_names():
            doc = (get_strategy(name).__doc__ or '').strip().split('\n')[0]
            print(f'{name:<20}{doc}')
        return 0
    return create(args.name)


def create(name: str) -> int:
    """Write the module and its test; 2 with a message when the name is unusable or taken."""
    if not NAME.match(name):
        print(f'error: {name!r} is not a strategy name: lowercase letters, digits and dashes, e.g. momentum-spy',
              file=sys.stderr)
        return 2
    if name in strategy_names():
        print(f'error: a strategy named {name!r} exists already ({get_strategy(name).__module__})', file=sys.stderr)
        return 2
    short = name.replace('-', '_')
    if keyword.iskeyword(short):
        short += '_strategy'
    module = PACKAGE / f'{short}.py'
    test = PACKAGE.parent / 'tests' / 'strategies' / f'test_{short}.py'
    for path in (module, test):
        if path.exists():
            print(f'error: {path} exists already', file=sys.stderr)
            return 2
    cls = ''.join(part.capitalize() for part in re.split(r'[-_]', name))
    module.write_text(TEMPLATE.format(name=name, cls=cls))
    test.write_text(TEST_TEMPLATE.format(name=name))
    print(NEXT_STEPS.format(module=module.relative_to(PACKAGE.parent), test=test.relative_to(PACKAGE.parent),
                            name=name, short=short))
    return 0


if __name__ == '__main__':
    sys.exit(main())
