"""What one API connection asked the gateway to keep it up to date on, and the updates that earns it.

TWS pushes account changes only to the connections that subscribed: reqPositions (every account's
positions), reqAccountUpdates (one account's values and portfolio), reqAccountUpdatesMulti and
reqAccountSummary (by reqId), and reqMktData streams quotes by reqId. A connection holds one
`Subscriptions`; the server hands it each change and sends what `account_updates` yields.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

from . import messages as msg

if TYPE_CHECKING:
    from .server import Simulator


@dataclass
class Subscriptions:
    """One connection's subscriptions."""

    positions: bool = False                                             # reqPositions
    account: str | None = None                                          # reqAccountUpdates
    account_multi: dict[int, str] = field(default_factory=dict)         # reqId -> account ('' or 'All': every one)
    summary: dict[int, list[str]] = field(default_factory=dict)         # reqId -> tags
    market_data: dict[int, tuple] = field(default_factory=dict)         # reqId -> (instrument, last quote sent)

    def cancel(self, req_id: int) -> None:
        """End whichever subscription `req_id` names (a cancel request)."""
        self.market_data.pop(req_id, None)
        self.summary.pop(req_id, None)
        self.account_multi.pop(req_id, None)

    def market_data_lines(self) -> int:
        """Streaming quote subscriptions held (they count against the gateway's market-data lines)."""
        return len(self.market_data)

    def account_updates(self, sim: Simulator, account: str, con_ids: list[int], positions: dict,
                        items: dict) -> Iterator[list]:
        """The messages owed when `account` changed at positions `con_ids`, in the order TWS sends them.

        positions and items: conId -> the account's position and portfolio row now (absent when flat).
        """
        if self.positions:
            for con_id in con_ids:
                pos = positions.get(con_id)
                inst = pos.instrument if pos else sim.universe.get(con_id)
                if inst is not None:
                    yield msg.position(account, inst, pos.quantity if pos else 0.0, pos.avgCost if pos else 0.0)
        if self.account == account:
            for con_id in con_ids:
                item = items.get(con_id) or sim.flat_item(con_id)
                if item is not None:
                    yield msg.portfolio(item, account)
            yield from sim.account_value_messages(account)
        for req_id, tags in self.summary.items():
            yield from sim.summary_messages(req_id, tags, accounts=[account])
        for req_id, subscribed in self.account_multi.items():
            if account in sim.accounts_matching(subscribed):
                for key, value, ccy in sim.broker.account_values(account):
                    yield msg.account_update_multi(req_id, account, key, value, ccy)
