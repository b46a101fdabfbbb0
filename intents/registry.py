"""Intent names to classes. Names from messages are looked up here, never imported."""
from __future__ import annotations

from intents.base import Intent
from intents.health import Health
from intents.summary import Summary

_INTENTS: dict[str, type[Intent]] = {cls.name: cls for cls in (Summary, Health)}


class UnknownIntent(LookupError):
    """No intent is registered under this name."""

    def __init__(self, name: str, known: list[str]):
        super().__init__(f'unknown intent {name!r}; known intents: {", ".join(known)}')
        self.name = name
        self.known = known


def get_intent(name: str) -> type[Intent]:
    """The intent class registered as `name`."""
    try:
        return _INTENTS[name]
    except (KeyError, TypeError):
        raise UnknownIntent(name, intent_names()) from None


def intent_names() -> list[str]:
    """All registered intent names, sorted."""
    return sorted(_INTENTS)
