"""What every intent is: typed params, flags for read-only and order placing, and an async run on a session."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from lib.session import AccountState

if TYPE_CHECKING:
    from lib.config import Settings
    from lib.session import Session
    from lib.store import Store
    from lib.trading_config import TradingConfig


class IntentParams(BaseModel):
    """Base for intent params: camelCase on the wire, unknown keys refused."""

    model_config = ConfigDict(extra='forbid', alias_generator=to_camel, populate_by_name=True, frozen=True)


class NoParams(IntentParams):
    """For intents that take no params."""


@dataclass
class IntentOutput:
    """What an intent hands back: `result` is its JSON-able output, `reason` explains skipped or rejected.

    An 'error' output is a failure that still has a result to report (e.g. the orders it placed);
    `error_type` and `retryable` then go into the result document's error.
    """

    status: Literal['ok', 'skipped', 'rejected', 'error'] = 'ok'
    result: dict = field(default_factory=dict)
    reason: str | None = None
    error_type: str | None = None
    retryable: bool = False


class IntentRejected(Exception):
    """A business rule refused the work; the run ends with status rejected and is not retried."""


@dataclass(frozen=True)
class RunContext:
    """What the runtime knows about a run besides its session: ids, settings, the store, the claim.

    `store` is set for intents that use it; `trading`, `idempotency_key` and `reference` for
    order-placing ones. `takeover` means an earlier attempt under the same key may have placed
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


class Intent:
    """One job run against the gateway. Subclasses set name, readonly and Params and implement run().

    `places_orders` intents are admitted only with the kill switch on, a readable store and a held
    idempotency claim (dry runs need no claim); `uses_store` intents get context.store.
    `account_state` is what the connect downloads into self.ib's caches before run(); nothing by default,
    so an invocation's cost does not grow with the account's activity.
    """

    name: ClassVar[str]
    readonly: ClassVar[bool]
    account_state: ClassVar[frozenset[AccountState]] = frozenset()
    places_orders: ClassVar[bool] = False
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

    async def run(self) -> IntentOutput:
        """Do the work on self.ib and describe the outcome."""
        raise NotImplementedError
