"""What every intent is: typed params, flags for read-only and order placing, and an async run on a session."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel

from intents.outcome import Outcome
from lib.ibapi import Contract
from trading.idempotency import RecordedOrder, legacy_reference, run_reference
from trading.market_data import ContractInfo, contract_infos, gateway_time
from lib.session import AccountState
from trading.session_window import SessionWindow, judge

if TYPE_CHECKING:
    from lib.config import Settings
    from lib.session import Session
    from lib.store import Store
    from trading.trading_config import TradingConfig


# What a `window` is judged by for intents that trade nothing.
US_EQUITY_MARKET = Contract(secType='STK', symbol='SPY', exchange='SMART', currency='USD')


class IntentParams(BaseModel):
    """Base for intent params: camelCase on the wire, unknown keys refused, booleans only as JSON booleans
    (`"false"` or 0 for a flag like useRth is an error, never coerced)."""

    model_config = ConfigDict(extra='forbid', alias_generator=to_camel, populate_by_name=True, frozen=True,
                              use_attribute_docstrings=True)

    @model_validator(mode='before')
    @classmethod
    def _strict_booleans(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, info in cls.model_fields.items():
                if info.annotation not in _BOOLEAN_ANNOTATIONS:
                    continue
                for key in {name, info.alias}:
                    if key in data and not isinstance(data[key], bool) and data[key] is not None:
                        raise ValueError(f'{info.alias or name} must be true or false, got {data[key]!r}')
        return data


_BOOLEAN_ANNOTATIONS = (bool, Optional[bool], bool | None)


class NoParams(IntentParams):
    """For intents that take no params."""


class IntentRejected(Exception):
    """A business rule refused the work; the run ends with status rejected and is not retried."""


@dataclass(frozen=True)
class RunContext:
    """What the runtime knows about a run besides its session: ids, settings, the store, the claim.

    `store` is set for intents that use it; `trading`, `idempotency_key` and `reference` for
    order-placing ones; `reference` once the session's `account` is known (an orderRef names its
    account: see trading.idempotency). `takeover` means an earlier attempt under the same key may have placed
    orders, so the intent must look them up by orderRef before placing.
    """

    run_id: str = 'local'
    settings: Settings | None = None
    store: Store | None = None
    trading: TradingConfig | None = None
    idempotency_key: str | None = None
    reference: str | None = None          # ibj:<hash10>, the orderRef prefix of every order of this key
    takeover: bool = False
    attempt: int = 1
    claimed: bool = False                 # the idempotency key is held, so a redelivery is safe
    claimed_at: datetime | None = None    # when the key was first claimed; a takeover looks for fills since then
    window: SessionWindow | None = None   # run only within this part of today's session (the request's window)
    account: str | None = None            # the session's account, once connected
    legacy_reference: str | None = None   # the key's claim as deployments before account-scoped orderRefs made it
    planning: bool = False                # approval required: plan, store the plan, place nothing

    def for_account(self, intent: str, account: str) -> RunContext:
        """This context on `account`: with the run reference of (account, intent, key) when there is a key."""
        key = self.idempotency_key
        if key is None:
            return replace(self, account=account, reference=None, legacy_reference=None)
        return replace(self, account=account, reference=run_reference(account, intent, key),
                       legacy_reference=legacy_reference(intent, key))


class Intent:
    """One job run against the gateway. Subclasses set name and Params and implement run().

    `places_orders` intents are admitted only with trading enabled, a readable store and a held
    idempotency claim (dry runs need no claim); `uses_store` intents get context.store.
    `account_state` is what the connect downloads into self.ib's caches before run(); nothing by default,
    so an invocation's cost does not grow with the account's activity.
    """

    name: ClassVar[str]
    account_state: ClassVar[frozenset[AccountState]] = frozenset()
    places_orders: ClassVar[bool] = False
    plannable: ClassVar[bool] = False     # takes a request's `approval` (plans, then execute-plan places)
    # admitted with trading disabled, to say so among its other reasons (execute-plan; its discard needs no trading)
    judges_trading_switch: ClassVar[bool] = False
    uses_store: ClassVar[bool] = False
    Params: ClassVar[type[IntentParams]] = NoParams

    def __init__(self, session: Session, params: IntentParams, *, dry_run: bool,
                 context: RunContext | None = None, deadline: float | None = None):
        self.session = session
        self.ib = session.ib
        self.params = params
        self.dry_run = dry_run
        self.context = context or RunContext()
        self.deadline = deadline    # loop.time() by which run() must be done; set by the runner

    @classmethod
    def own_key(cls, params: IntentParams) -> str | None:
        """The idempotency key the params themselves make (execute-plan: the plan and its subset), or None."""
        return None

    async def start(self) -> Outcome:
        """Run, unless the request's window says not now: then skipped, with today's session, nothing done."""
        if self.context.window is None:
            return await self.run()
        now = await gateway_time(self.ib)
        contracts = await self.session_contracts(now)
        verdict = judge(self.context.window, [info.hours() for info in contracts], now)
        if not verdict.inside:
            return Outcome.skipped(f'outside the session window: {verdict.reason}', {'window': verdict.describe()})
        outcome = await self.run()
        outcome.result = outcome.result if outcome.result is not None else {}
        outcome.result.setdefault('window', verdict.describe())
        return outcome

    async def run(self) -> Outcome:
        """Do the work on self.ib and describe the outcome."""
        raise NotImplementedError

    def interrupted_result(self) -> dict | None:
        """The result of a run that raised part-way (None: nothing worth reporting)."""
        return None

    def recorded_orders(self) -> tuple[RecordedOrder, ...]:
        """The orders this run placed or found, as its claim records them (none for intents that trade nothing)."""
        return ()

    async def session_contracts(self, now: datetime) -> list[ContractInfo]:
        """The contracts whose session a `window` is judged by: those the run would trade.

        Intents that trade nothing are judged by the US equity market (SPY's session, NYSE hours).
        """
        return await contract_infos(self.ib, [US_EQUITY_MARKET])
