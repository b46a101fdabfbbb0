"""What every intent is: typed params, a flag for read-only, and an async run on a connected session."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

if TYPE_CHECKING:
    from lib.session import Session


class IntentParams(BaseModel):
    """Base for intent params: camelCase on the wire, unknown keys refused."""

    model_config = ConfigDict(extra='forbid', alias_generator=to_camel, populate_by_name=True, frozen=True)


class NoParams(IntentParams):
    """For intents that take no params."""


@dataclass
class IntentOutput:
    """What an intent hands back: `result` is its JSON-able output, `reason` explains skipped or rejected."""

    status: Literal['ok', 'skipped', 'rejected'] = 'ok'
    result: dict = field(default_factory=dict)
    reason: str | None = None


class IntentRejected(Exception):
    """A business rule refused the work; the run ends with status rejected and is not retried."""


class Intent:
    """One job run against the gateway. Subclasses set name, readonly and Params and implement run()."""

    name: ClassVar[str]
    readonly: ClassVar[bool]
    Params: ClassVar[type[IntentParams]] = NoParams

    def __init__(self, session: Session, params: IntentParams, *, dry_run: bool):
        self.session = session
        self.ib = session.ib
        self.params = params
        self.dry_run = dry_run

    async def run(self) -> IntentOutput:
        """Do the work on self.ib and describe the outcome."""
        raise NotImplementedError
