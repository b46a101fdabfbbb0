"""The `execute-plan` intent: place a stored plan's orders (all, or a subset by orderRef), or discard the plan.

It places exactly the planned orders, with their planned orderRefs and quantities, only if the plan exists,
is not discarded and has not expired; the account's positions and our working orders on the contracts of the
orders to place are what they were at planning; every price is within the band the planned intent's policy
applied; trading is enabled and the markets are open. Otherwise it is rejected with every reason.

Its idempotency key is the plan and the sorted subset (trading.plans.execute_key): the same subset twice is a
duplicate; another subset places only its own orders. Orders of the plan already at the broker (an earlier
subset, a run killed after placing) are listed in alreadyPlaced and never placed again; the account lease
makes two executions of one plan run one after the other, so the second sees the first's orders.
"""
from __future__ import annotations

from datetime import datetime, timezone

from pydantic import Field, field_validator

from intents.base import IntentParams, IntentRejected
from intents.outcome import Outcome
from intents.trading import OrderIntent, account_positions, book_entries
from lib.failures import Failure
from lib.ibapi import Contract, Order, Trade
from lib.times import iso
from trading.market_data import AccountSnapshot, contract_info, gateway_time, quotes
from trading.market_hours import HoursUnreadable, market_state
from trading.idempotency import order_ref, parse_order_ref
from trading.orders import FINAL, AlgoParam, Leg, place, planned_order, run_orders_at_broker, took_effect, what_if
from trading.plans import PLAN_REJECTED, describe_working, execute_key, plan_state, working_entry
from trading.risk import CheckedOrder, price_band_breach


class ExecutePlanParams(IntentParams):
    plan_id: str = Field(min_length=1, max_length=100)
    """The planId of a plan published by a run with approval "required"."""
    orders: list[str] | None = None
    """Only these of the plan's orders (orderRefs); default: every order of the plan."""
    discard: bool | None = None
    """true: mark the plan discarded; nothing is placed, and a later execute-plan of it is rejected."""

    @field_validator('orders')
    @classmethod
    def _some_distinct(cls, refs: list[str] | None) -> list[str] | None:
        if refs is not None and (not refs or len(set(refs)) != len(refs)):
            raise ValueError('give at least one orderRef, each once (leave it out for every order of the plan)')
        return refs


class ExecutePlan(OrderIntent):
    name = 'execute-plan'
    Params = ExecutePlanParams
    plannable = False
    judges_trading_switch = True     # trading disabled is one of its reasons; a discard goes ahead regardless

    plan: dict | None = None

    def header(self) -> dict:
        """The run's header; its orders carry the plan's orderRef prefix, fixed at planning."""
        header = super().header()
        return {**header, 'orderRefPrefix': self.plan['orderRefPrefix']} if self.plan else header

    @classmethod
    def own_key(cls, params: ExecutePlanParams) -> str:
        return execute_key(params.plan_id, params.orders, bool(params.discard))

    async def run(self) -> Outcome:
        params, store = self.params, self.context.store
        plan = await self.in_store(store.get_plan, params.plan_id)
        if plan is None:
            raise IntentRejected(f'no plan {params.plan_id!r} in the store; not executed')
        if plan['account'] != self.session.account:
            raise IntentRejected(f'plan {params.plan_id} is for account {plan["account"]}, this run trades '
                                 f'{self.session.account}; not executed')
        self.plan = plan
        head = {'planId': plan['planId'], 'plannedBy': plan['runId'], 'plannedIntent': plan['intent']}
        if params.discard:
            return await self._discard(plan, head)
        reasons = plan_state(plan, datetime.now(timezone.utc))
        by_ref = {order['orderRef']: order for order in plan['orders']}
        unknown = [ref for ref in params.orders or [] if ref not in by_ref]
        if unknown:
            reasons.append(f'not orders of this plan: {", ".join(unknown)} (its orders: {", ".join(by_ref)})')
        chosen = [by_ref[ref] for ref in params.orders or by_ref if ref in by_ref]
        refusal = await self.trading_gate()
        if refusal is not None:
            reasons.append(refusal)
        found = await run_orders_at_broker(self.ib, self.session.account, plan['orderRefPrefix'])
        to_place = self._still_to_place(chosen, found)
        start = await self.prepare()
        items, more = await self._planned(plan, to_place, start.snapshot)
        reasons += more
        if reasons:
            return Outcome.failed(Failure.rejected(PLAN_REJECTED, f'plan {plan["planId"]} not executed: '
                                                   + '; '.join(reasons)),
                                  {**head, 'reasons': reasons, **self.run_orders.to_result()})
        settings = self.execution_settings(start.snapshot, None)
        if self.dry_run:   # what executing would place (whatIf), and nothing placed, cancelled or written
            self.run_orders.orders = [await what_if(self.ib, item) for item in items]
            return self.output(self.run_orders, head)
        stale = await self._stale_to_cancel(plan, chosen if params.orders else None)
        if stale:
            await self.cancel(stale)
        if items and not [p for p in self.run_orders.problems if p['code'] == 'order-not-cancelled']:
            await place(self.ib, items, settings, self.run_orders)
        if self.run_orders.orders:
            await self._apply_effects(plan, {order['contract']['conId'] for order in self.run_orders.orders})
        return self.output(self.run_orders, head)

    def _still_to_place(self, chosen: list[dict], found: list[dict]) -> list[dict]:
        """The chosen orders that have no order at the broker that works or filled (listed in alreadyPlaced).

        An order the gateway rejected, or that was cancelled unfilled, did nothing: the planned order goes again,
        under the next orderRef suffix (`<leg>.<n>`), as a takeover re-sends what a rejected order left.
        """
        attempts: dict[str, list[dict]] = {}
        for entry in found:
            parsed = parse_order_ref(entry['orderRef'])
            if parsed is not None:
                attempts.setdefault(order_ref(parsed[0], parsed[1]), []).append(entry)
        to_place = []
        for order in chosen:
            earlier = attempts.get(order['orderRef'], [])
            self.run_orders.already_placed += earlier
            if not any(took_effect(entry) for entry in earlier):
                again = max((parse_order_ref(entry['orderRef'])[2] for entry in earlier), default=0) + 1
                reference, leg, _ = parse_order_ref(order['orderRef'])
                to_place.append({**order, 'orderRef': order_ref(reference, leg, again)})
        return to_place

    async def _stale_to_cancel(self, plan: dict, chosen: list[dict] | None) -> list[Trade]:
        """The open orders the planned run would have cancelled (any client's: close-all scope all cancels orders
        placed by hand too); when a subset is executed, only those on the chosen orders' contracts (another
        subset's contract is left as planned, for that subset to execute)."""
        stale = set(plan.get('cancel') or [])
        if not stale:
            return []
        contracts = None if chosen is None else {order['contract']['conId'] for order in chosen}
        return [t for t in await self.ib.reqAllOpenOrdersAsync()
                if t.order.permId in stale and t.orderStatus.status not in FINAL
                and (contracts is None or t.contract.conId in contracts)]

    async def _apply_effects(self, plan: dict, con_ids: set[int]) -> None:
        """What the planned run would have written had it placed: the strategies' new targets, and the internal
        transfers of the contracts placed now (each booked once, by its execId)."""
        effects = plan.get('effects') or {}
        now = datetime.now(timezone.utc)
        for strategy, targets in (effects.get('targets') or {}).items():
            await self.in_store(self.context.store.put_targets, strategy, targets, plan['runId'], now)
        ordered = {order['contract']['conId'] for order in plan['orders']}
        # a contract the strategies only traded between them has no order: its transfer goes with any execution
        await book_entries(self, [entry for entry in effects.get('transfers') or []
                                  if entry['conId'] in con_ids or entry['conId'] not in ordered])

    async def _discard(self, plan: dict, head: dict) -> Outcome:
        if self.dry_run:   # says whether it would discard; the plan is left as it is
            return Outcome.ok({**head, 'discarded': plan.get('discarded'), 'wouldDiscard': not plan.get('discarded'),
                               **self.run_orders.to_result()})
        if not plan.get('discarded'):
            plan['discarded'] = {'at': iso(datetime.now(timezone.utc)), 'runId': self.context.run_id}
            await self.in_store(self.context.store.put_plan, plan['planId'], plan)
        return Outcome.ok({**head, 'discarded': plan['discarded'], **self.run_orders.to_result()})

    async def _planned(self, plan: dict, orders: list[dict], snapshot: AccountSnapshot) -> tuple[list, list[str]]:
        """Each planned order ready to place (trading.orders.planned_order), and why any of them cannot go now."""
        reasons: list[str] = []
        if not orders:
            return [], reasons
        now = await gateway_time(self.ib)
        positions = await account_positions(self)
        working: dict[int, list[dict]] = {}
        for t in await self.working_orders():
            working.setdefault(t.contract.conId, []).append(
                working_entry(t.order.orderRef, t.order.permId, t.order.action, t.orderStatus.remaining))
        infos = [await contract_info(self.ib, Contract(conId=o['contract']['conId'],
                                                       exchange=o['contract']['exchange'])) for o in orders]
        prices = await quotes(self.ib, infos)
        legs = []
        for order, info in zip(orders, infos):
            con_id, name, ref = info.con_id, info.name, order['orderRef']
            held = positions[con_id].position if con_id in positions else 0.0
            planned_held = plan['positions'].get(str(con_id), 0.0)
            if held != planned_held:
                reasons.append(f'{ref} ({name}): the position is {held:g}, it was {planned_held:g} at planning')
            planned_working = plan['workingOrders'].get(str(con_id), [])
            if describe_working(working.get(con_id, [])) != describe_working(planned_working):
                reasons.append(f'{ref} ({name}): our working orders changed since planning '
                               f'({len(planned_working)} then, {len(working.get(con_id, []))} now)')
            try:
                state = market_state(info.liquid_hours, info.time_zone, now)
                if not state.open:
                    reasons.append(f'{ref}: {state.describe(name)}')
            except HoursUnreadable as exc:
                reasons.append(f'{ref} ({name}): trading hours unreadable ({exc})')
            placing = _order(order, self.session.account)
            signed = order['quantity'] * (1 if order['action'] == 'BUY' else -1)
            leg = Leg(info, signed, prices[con_id], dict(order.get('strategies') or {}), order['reduceOnly'])
            item = planned_order(leg, placing, snapshot)
            if order.get('priceBand') is not None:
                breach = price_band_breach(CheckedOrder(name, (info.contract.symbol,), item.expected_price,
                                                        prices[con_id].close, item.notional), order['priceBand'])
                if breach:
                    reasons.append(f'{ref}: price outside the band of its policy: {breach}')
            legs.append(item)
        return legs, reasons


def _order(planned: dict, account: str) -> Order:
    """The order as planned: its orderRef, action, quantity, type, limit, time in force and algo."""
    order = Order(action=planned['action'], totalQuantity=planned['quantity'], orderType=planned['orderType'],
                  tif=planned['tif'], orderRef=planned['orderRef'], account=account)
    if planned.get('lmtPrice') is not None:
        order.lmtPrice = planned['lmtPrice']
    if planned.get('algo'):
        order.algoStrategy = planned['algo']
        order.algoParams = [AlgoParam(tag, value) for tag, value in (planned.get('algoParams') or {}).items()]
    return order
