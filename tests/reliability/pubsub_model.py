"""A model of Pub/Sub push delivery, driving the real functions-framework process over HTTP.

The emulator retries a failed push every ~1 s, with no backoff and no dead letters, and never sends a
message twice at once; real Pub/Sub does all of that. This model follows the documented rules instead:

- a push is acknowledged only by a success answer: 102, 200, 201, 202 or 204
  (https://cloud.google.com/pubsub/docs/push, "Receive messages");
- any other answer, a refused or broken connection, or no answer within the ack deadline (the push
  request's timeout) is a negative acknowledgement: the message is delivered again after the retry
  policy's exponential backoff, between minimumBackoff and maximumBackoff (deployed: 10 s and 600 s;
  https://cloud.google.com/pubsub/docs/handling-failures), scaled down by `time_scale` in tests;
- a timed-out push keeps running in the function while the redelivery arrives;
- delivery is at-least-once: a delivery may be duplicated, i.e. sent twice at the same moment
  (`duplicate_chance`); the message counts as acked once any of its pushes is acked;
- after maxDeliveryAttempts (deployed: 10) deliveries without an ack the message is dead-lettered.

Each message is one `Fate`: every push with its answer, and how the message ended. A message the model
acked is never delivered again. This is a model of the transport, not a mock of our code: the process
behind the endpoint is the real function, and results still go to the results topic (the emulator).
"""
from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

ACK_CODES = frozenset({102, 200, 201, 202, 204})


@dataclass(frozen=True)
class DeliveryPolicy:
    """The subscription's settings, as deployed unless a test says otherwise."""

    min_backoff: float = 10.0
    max_backoff: float = 600.0
    max_attempts: int = 10
    ack_deadline: float = 600.0
    time_scale: float = 1.0             # backoffs are multiplied by this (e.g. 0.01 in tests)
    duplicate_chance: float = 0.0       # chance that a delivery is pushed twice at once

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before delivery attempt+1, after `attempt` deliveries were not acked."""
        return min(self.max_backoff, self.min_backoff * 2 ** (attempt - 1)) * self.time_scale


@dataclass(frozen=True)
class Push:
    """One HTTP request of one delivery and its answer (status None: no answer, see `failure`)."""

    attempt: int
    status: int | None
    seconds: float
    failure: str | None = None

    @property
    def acked(self) -> bool:
        return self.status in ACK_CODES


@dataclass
class Fate:
    """How one message fared: its pushes, and whether it ended acked or dead-lettered."""

    message_id: str
    pushes: list[Push] = field(default_factory=list)
    state: str = 'pending'              # pending | acked | dead-lettered

    @property
    def attempts(self) -> int:
        return max((p.attempt for p in self.pushes), default=0)


class PushModel:
    """Delivers messages to `endpoint` (a functions-framework URL) the way a push subscription does."""

    def __init__(self, endpoint: str, policy: DeliveryPolicy, rng: random.Random | None = None,
                 subscription: str = 'projects/test-project/subscriptions/intents-push') -> None:
        self.endpoint = endpoint
        self.policy = policy
        self.rng = rng or random.Random(0)
        self.subscription = subscription
        self._rng_lock = threading.Lock()

    def deliver(self, message: dict[str, Any]) -> Fate:
        """Deliver one PubsubMessage dict (data, attributes, messageId, publishTime) until acked or dead-lettered."""
        fate = Fate(message['messageId'])
        for attempt in range(1, self.policy.max_attempts + 1):
            copies = 2 if self._chance(self.policy.duplicate_chance) else 1
            pushes = self._push_at_once(message, attempt, copies)
            fate.pushes.extend(pushes)
            if any(p.acked for p in pushes):
                fate.state = 'acked'
                return fate
            if attempt < self.policy.max_attempts:
                time.sleep(self.policy.backoff(attempt))
        fate.state = 'dead-lettered'
        return fate

    def deliver_all(self, messages: list[dict[str, Any]]) -> list[Fate]:
        """Deliver several messages at the same time (each on its own schedule)."""
        if not messages:
            return []
        with ThreadPoolExecutor(len(messages)) as pool:
            return list(pool.map(self.deliver, messages))

    def _push_at_once(self, message: dict[str, Any], attempt: int, copies: int) -> list[Push]:
        if copies == 1:
            return [self._push(message, attempt)]
        start = threading.Barrier(copies)

        def one(_: int) -> Push:
            start.wait()
            return self._push(message, attempt)

        with ThreadPoolExecutor(copies) as pool:
            return list(pool.map(one, range(copies)))

    def _push(self, message: dict[str, Any], attempt: int) -> Push:
        body = {'message': {**message, 'message_id': message['messageId'],
                            'publish_time': message['publishTime']},
                'subscription': self.subscription}
        started = time.monotonic()
        try:
            response = requests.post(self.endpoint, json=body, timeout=self.policy.ack_deadline,
                                     headers={'Content-Type': 'application/json'})
        except requests.Timeout:
            return Push(attempt, None, time.monotonic() - started, 'ack deadline passed')
        except requests.ConnectionError as exc:
            return Push(attempt, None, time.monotonic() - started, f'connection failed: {type(exc).__name__}')
        return Push(attempt, response.status_code, time.monotonic() - started)

    def _chance(self, probability: float) -> bool:
        if probability <= 0:
            return False
        with self._rng_lock:
            return self.rng.random() < probability
