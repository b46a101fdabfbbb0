"""Strategy names to classes, found by looking through the strategies package.

Every module in `strategies/` is imported once, on first use, and each Strategy subclass it defines with
a `name` is registered under that name: adding a strategy is adding a module (see `python -m strategies
new`). Names from config and messages are looked up here, never imported.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil

import strategies
from strategies.base import Strategy


class UnknownStrategy(LookupError):
    """No strategy is registered under this name."""

    def __init__(self, name: str, known: list[str]):
        super().__init__(f'unknown strategy {name!r}; known strategies: {", ".join(known)}')
        self.name = name
        self.known = known


class DuplicateStrategy(RuntimeError):
    """Two strategy classes claim one name."""


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class registered as `name`."""
    try:
        return _registry()[name]
    except (KeyError, TypeError):
        raise UnknownStrategy(name, strategy_names()) from None


def strategy_names() -> list[str]:
    """All registered strategy names, sorted."""
    return sorted(_registry())


@functools.lru_cache(maxsize=1)
def _registry() -> dict[str, type[Strategy]]:
    found: dict[str, type[Strategy]] = {}
    for module_info in pkgutil.iter_modules(strategies.__path__):
        if module_info.name.startswith('_'):
            continue
        module = importlib.import_module(f'strategies.{module_info.name}')
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Strategy) and cls is not Strategy and cls.__module__ == module.__name__ \
                    and isinstance(getattr(cls, 'name', None), str):
                if cls.name in found:
                    raise DuplicateStrategy(f'strategy name {cls.name!r} is used by {found[cls.name].__module__} '
                                            f'and {cls.__module__}')
                found[cls.name] = cls
    return found
