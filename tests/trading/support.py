"""A trading rig for tests: a simulated gateway, a real store, a trading config file, and the real handler."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from cloudevents.http import CloudEvent

from functions.contract import IntentResult
from functions.handler import TransientFailure, handle
from lib.config import Settings
from lib.store import Store
from simulator import Simulator
from tests.pubsub_events import request_event

ACCOUNT = 'DU1234567'
# Tuesday 2026-11-24, 10:00 in New York: markets open; the `dummy` strategy's signal that day is +1.
OPEN_TIME = datetime(2026, 11, 24, 15, 0, tzinfo=timezone.utc)
# Christmas Day 2026 (a Friday): NYSE and IDEALPRO closed; both reopen on Monday the 28th.
HOLIDAY = datetime(2026, 12, 25, 15, 0, tzinfo=timezone.utc)

BASE_CONFIG = """
cashBalancerThreshold = 1000.0

[exposure]
overall = 1.0

[exposure.strategies]
dummy = 0.5

[strategies.dummy]
symbol = "SPY"
sec_type = "STK"
exchange = "SMART"

[orderPolicy]
orderType = "market"
tif = "DAY"

[limits]
maxOrderNotional = 2000000.0
maxOrderNlvShare = 1.0
maxRunNlvShare = 2.0
maxOrdersPerRun = 10
allowlist = ["*"]
priceBand = 0.2
"""

SPY_MACD_VIXY_CONFIG = """
[strategies.spy-macd-vixy]
fast = 12
slow = 26
signal = 9
lookback = "200 D"
"""


@dataclass
class Rig:
    """One simulated gateway, one store and the handler, as a deployment would have them."""

    sim: Simulator
    store: Store
    settings: Settings
    published: list[IntentResult] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def environment(self) -> dict[str, str]:
        """The environment variables of a deployment with this rig's store and trading config, for the tests of
        the command line, which reads its settings from the environment."""
        store = self.settings.store
        variables = {'STORE_BACKEND': store.backend, 'STORE_TIMEOUT_SECONDS': f'{store.timeout_seconds:g}',
                     'TRADING_CONFIG_PATH': self.settings.trading_config.path or ''}
        if store.backend == 'sqlite':
            return {**variables, 'SQLITE_PATH': store.sqlite_path}
        return {**variables, 'GOOGLE_CLOUD_PROJECT': store.project or '',
                'FIRESTORE_EMULATOR_HOST': store.emulator_host or ''}

    def with_store(self, **changes: Any) -> None:
        """The next deliveries use the store with these settings changed (as after a redeploy)."""
        self.settings = replace(self.settings, store=replace(self.settings.store, **changes))

    def send(self, intent: str, params: dict | None = None, *, dry_run: bool = False, key: str | None = None,
             max_age: float | None = None, message_id: str | None = None,
             published: datetime | None = None, window: dict | None = None,
             approval: str | None = None) -> IntentResult:
        """Deliver one message through the real handler; a retryable failure returns its published result."""
        return self.deliver(self.event(intent, params, dry_run=dry_run, key=key, max_age=max_age,
                                       message_id=message_id, published=published, window=window,
                                       approval=approval))

    def event(self, intent: str, params: dict | None = None, *, dry_run: bool = False, key: str | None = None,
              max_age: float | None = None, message_id: str | None = None,
              published: datetime | None = None, window: dict | None = None,
              approval: str | None = None) -> CloudEvent:
        request: dict[str, Any] = {'intent': intent, 'params': params or {}, 'dryRun': dry_run}
        if approval is not None:
            request['approval'] = approval
        if key:
            request['idempotencyKey'] = key
        if max_age:
            request['maxAgeSeconds'] = max_age
        if window is not None:
            request['window'] = window
        return request_event(request, message_id=message_id, published=published)

    def deliver(self, event: CloudEvent) -> IntentResult:
        try:
            return handle(event, self.settings, publish=self._publish)
        except TransientFailure as exc:
            return exc.result

    def _publish(self, result: IntentResult, settings: Settings) -> None:
        with self._lock:
            self.published.append(result)

    # what the simulated broker holds: the assertions of these tests look here, not at our results

    def order_log(self) -> list:
        """Every order the gateway accepted: open and completed."""
        return self.sim.broker.open_orders() + self.sim.broker.completed_orders()

    @property
    def account(self) -> str:
        return self.settings.account or ACCOUNT

    def deployment(self, account: str) -> Rig:
        """Another deployment on the same gateway (and the same store) acting on `account`."""
        return Rig(self.sim, self.store, replace(self.settings, account=account), self.published)

    def position(self, symbol: str) -> float:
        return sum(p.quantity for _, p in self.sim.broker.positions(self.account)
                   if p.instrument.localSymbol == symbol)

    def working(self, symbol: str) -> float:
        """The signed quantity this deployment's account still has working in `symbol` (+ buy, - sell)."""
        return sum((o.remaining if o.action == 'BUY' else -o.remaining) for o in self.sim.broker.open_orders()
                   if o.account == self.account and o.instrument.localSymbol == symbol)

    def instrument(self, symbol: str, sec_type: str = 'STK'):
        return next(i for i in self.sim.universe.all() if i.symbol == symbol and i.secType == sec_type)

    def net_liquidation(self) -> float:
        return float(next(v for k, v, c in self.sim.broker.account_values(ACCOUNT) if k == 'NetLiquidation'))


