"""Client ids for gateway connections: random within a range, never shared by concurrent invocations here.

Randomness comes from the operating system, so separate instances rarely pick the same id; when they do,
the gateway answers error 326 and the session retries with another id.
"""
from __future__ import annotations

import random
import threading
from collections.abc import Iterable


class ClientIdsExhausted(Exception):
    """Every id in the configured range is taken or has already been refused."""


class ClientIdAllocator:
    """Hands out client ids in [low, high], each to one holder at a time."""

    def __init__(self, rng: random.Random | None = None):
        self._rng = rng or random.SystemRandom()
        self._in_use: set[int] = set()
        self._lock = threading.Lock()

    def acquire(self, low: int, high: int, avoid: Iterable[int] = ()) -> int:
        """Reserve a random free id in [low, high] that is not in `avoid`."""
        with self._lock:
            blocked = self._in_use.union(avoid)
            free_count = (high - low + 1) - sum(1 for cid in blocked if low <= cid <= high)
            if free_count <= 0:
                raise ClientIdsExhausted(f'no free client id in {low}-{high}')
            while True:
                client_id = self._rng.randint(low, high)
                if client_id not in blocked:
                    self._in_use.add(client_id)
                    return client_id

    def release(self, client_id: int) -> None:
        """Return an id to the pool; releasing an id that is not held does nothing."""
        with self._lock:
            self._in_use.discard(client_id)

    def in_use(self) -> frozenset[int]:
        """The ids currently held on this process."""
        with self._lock:
            return frozenset(self._in_use)


CLIENT_IDS = ClientIdAllocator()
"""The process-wide allocator every invocation draws from."""
