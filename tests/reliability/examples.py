"""Example requests for every registered intent, used by the whole reliability suite.

A test fails when an intent is registered without an example here, so no intent escapes the fault
matrix, the redelivery soak or the secrets check. Each example starts from a fresh simulated gateway
(at MARKET_OPEN, seed 7, the repository's config/trading.toml) and a fresh state store; `prepare`
gives the intent something to do there.

With that config on that day, spy-macd-vixy is long SPY and flat VIXY and dummy is flat MNQ.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from simulator.model import Order

ACCOUNT = 'DU1234567'
# An order an earlier allocation left working: tagged with a run reference, placed by a client id
# that is no longer connected, with a limit far below the market so it rests.
EARLIER_RUN_REF = 'ibj:0123456789'
EARLIER_CLIENT_ID = 4242


@dataclass(frozen=True)
class Example:
    """One request for an intent, and what the suite needs to know to judge its runs."""

    request: dict[str, Any]
    prepare: Callable[[Any], None] | None = None     # called with the fresh Simulator before the first delivery
    status: str = 'ok'                              # the status of a run on a healthy gateway
    places_orders: bool = False                     # a healthy run leaves new orders in the simulator's log
    # The status under a fault that leaves the connection alone but changes the outcome (e.g. the
    # historical data outage for an intent that needs bars); other such faults leave `status` as it is.
    under_fault: dict[str, str] = field(default_factory=dict)

    @property
    def intent(self) -> str:
        return self.request['intent']


def instrument(sim: Any, symbol: str, sec_type: str = 'STK') -> Any:
    """The simulator's instrument for a symbol."""
    return next(i for i in sim.universe.all() if i.symbol == symbol and i.secType == sec_type)


def _spy_position(sim: Any) -> None:
    """Something for summary to report."""
    sim.broker.set_position(ACCOUNT, instrument(sim, 'SPY'), 10, 500.0)


def _vixy_position(sim: Any) -> None:
    """Allocation has two legs to trade: buy SPY (target long) and sell VIXY (target flat)."""
    sim.broker.set_position(ACCOUNT, instrument(sim, 'VIXY'), 300, 50.0)


def _positions_and_an_earlier_runs_order(sim: Any) -> None:
    """Positions the ledger does not know (manual, so only `scope: "all"` closes them) and a tagged open order."""
    sim.broker.set_position(ACCOUNT, instrument(sim, 'SPY'), 40, 600.0)
    sim.broker.set_position(ACCOUNT, instrument(sim, 'AAPL'), 25, 200.0)
    sim.broker.place(Order(orderId=1, clientId=EARLIER_CLIENT_ID, permId=0, account=ACCOUNT,
                           instrument=instrument(sim, 'VIXY'), action='BUY', totalQuantity=10, orderType='LMT',
                           lmtPrice=1.0, orderRef=f'{EARLIER_RUN_REF}:276435361'))


def _euro_cash(sim: Any) -> None:
    """Cash-balancer converts EUR 100,000 (above the threshold and the IDEALPRO minimum) to USD."""
    sim.broker.set_cash(ACCOUNT, 'EUR', 100_000)


def _a_filled_order_of_an_earlier_run(sim: Any) -> None:
    """Reconciliation has an execution to book: a filled market order tagged by an earlier run."""
    sim.broker.place(Order(orderId=1, clientId=EARLIER_CLIENT_ID, permId=0, account=ACCOUNT,
                           instrument=instrument(sim, 'SPY'), action='BUY', totalQuantity=5, orderType='MKT',
                           orderRef=f'{EARLIER_RUN_REF}:756733'))


EXAMPLE_PLAN = 'example-plan'
EXAMPLE_PLAN_REF = 'ibj:5151515151'


def _a_plan_to_buy_spy(sim: Any) -> None:
    """A stored plan (as an allocation with approval required leaves one) to buy 10 SPY at market, valid for a day."""
    from datetime import datetime, timedelta, timezone

    from lib.config import StoreSettings
    from lib.store import open_store
    spy = instrument(sim, 'SPY')
    now = datetime.now(timezone.utc)
    open_store(StoreSettings.from_env()).put_plan(EXAMPLE_PLAN, {
        'planId': EXAMPLE_PLAN, 'account': ACCOUNT, 'intent': 'allocation', 'runId': 'planning-run',
        'planKey': 'plan:example', 'orderRefPrefix': EXAMPLE_PLAN_REF, 'createdAt': now.isoformat(),
        'expiresAt': (now + timedelta(days=1)).isoformat().replace('+00:00', 'Z'),
        'orders': [{'orderRef': f'{EXAMPLE_PLAN_REF}:{spy.conId}', 'action': 'BUY', 'quantity': 10.0,
                    'orderType': 'MKT', 'lmtPrice': None, 'tif': 'DAY', 'algo': None, 'algoParams': None,
                    'strategies': {'spy-macd-vixy': 10.0}, 'reduceOnly': False, 'priceBand': 0.5,
                    'contract': {'conId': spy.conId, 'symbol': 'SPY', 'secType': 'STK', 'localSymbol': 'SPY',
                                 'exchange': 'SMART', 'currency': 'USD'}}],
        'positions': {str(spy.conId): 0.0}, 'workingOrders': {}, 'cancel': [], 'discarded': None,
        'effects': {'targets': {}, 'transfers': []}})


EXAMPLES: dict[str, list[Example]] = {
    'health': [
        Example({'intent': 'health'}),
    ],
    'summary': [
        Example({'intent': 'summary'}, prepare=_spy_position),
        Example({'intent': 'summary', 'params': {'account': ACCOUNT}, 'maxAgeSeconds': 300}),
    ],
    'allocation': [
        Example({'intent': 'allocation'}, prepare=_vixy_position, places_orders=True,
                under_fault={'hist-outage': 'skipped'}),
        Example({'intent': 'allocation', 'idempotencyKey': 'rebalance-2026-11-25',
                 'params': {'strategies': ['spy-macd-vixy'], 'orderPolicy': {'orderType': 'marketable-limit'}}},
                prepare=_vixy_position, places_orders=True,
                # its only strategy fails: nothing evaluated, a retryable error (the redelivery trades)
                under_fault={'hist-outage': 'error'}),
        # a dry run asks the gateway for whatIf margins, which goes over placeOrder
        Example({'intent': 'allocation', 'dryRun': True}, prepare=_vixy_position,
                under_fault={'hist-outage': 'skipped', 'stall-orders': 'error'}),
    ],
    'close-all': [
        Example({'intent': 'close-all', 'params': {'scope': 'all'}}, prepare=_positions_and_an_earlier_runs_order,
                places_orders=True),
        Example({'intent': 'close-all', 'params': {'scope': 'all'}, 'dryRun': True},
                prepare=_positions_and_an_earlier_runs_order, under_fault={'stall-orders': 'error'}),
    ],
    'cash-balancer': [
        Example({'intent': 'cash-balancer'}, prepare=_euro_cash, places_orders=True),
        Example({'intent': 'cash-balancer', 'params': {'threshold': 1_000_000}}, prepare=_euro_cash,
                status='skipped'),
    ],
    'execute-plan': [
        Example({'intent': 'execute-plan', 'params': {'planId': EXAMPLE_PLAN}}, prepare=_a_plan_to_buy_spy,
                places_orders=True),
    ],
    'trade-reconciliation': [
        Example({'intent': 'trade-reconciliation'}, prepare=_a_filled_order_of_an_earlier_run),
    ],
    'collect-market-data': [
        Example({'intent': 'collect-market-data',
                 'params': {'instruments': [{'symbol': 'SPY'}, {'symbol': 'EUR', 'secType': 'CASH',
                                                                'exchange': 'IDEALPRO', 'currency': 'USD'}],
                            'barSize': '1 hour', 'duration': '5 D', 'whatToShow': 'MIDPOINT'}},
                under_fault={'hist-outage': 'error'}),
        Example({'intent': 'collect-market-data', 'params': {'instruments': [{'symbol': 'QQQ'}], 'maxBars': 3}},
                under_fault={'hist-outage': 'error'}),
    ],
}


def examples_for(intent: str) -> list[Example]:
    """The examples of a registered intent ([] when it has none, which test_examples reports)."""
    return EXAMPLES.get(intent, [])
