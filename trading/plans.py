"""Plans: what an order-placing run with `approval: "required"` would place, kept until approved or discarded.

A planning run does everything a real run does up to placing (account lease, targets, risk limits with its own
policy, market hours, whatIf), then stores the plan under its planId and places nothing. `execute-plan` places
the planned orders (all, or a subset by orderRef) with their planned orderRefs, if the plan still holds
(`unmet`: not discarded, not expired, positions and our working orders on its contracts as at planning, every
price within the band its intent's policy applied, markets open); otherwise it is rejected with every reason.

PLAN_TTL_SECONDS (900, lib.config.Settings.plan_ttl_seconds): how long a plan can be executed after it was made.
"""
from __future__ import annotations

import hashlib
import json
import shlex
from datetime import datetime, timedelta
from typing import Any

from lib.times import parse_instant

EXECUTE_PLAN = 'execute-plan'
# an execution refused before placing anything: its key stays open, so the same execution can be asked again once
# what refused it has passed (trading enabled, the market open, a price back within its band)
PLAN_REJECTED = 'PlanRejected'


def plan_id(account: str, run_id: str, orders: list[dict]) -> str:
    """A hash of the account, the planning run's id and its orders (as JSON, keys sorted)."""
    canonical = json.dumps({'account': account, 'runId': run_id, 'orders': orders}, sort_keys=True,
                           separators=(',', ':'), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def approve_command(plan: str, topic: str | None, project: str | None, orders: list[str] | None = None) -> str:
    """The gcloud command that approves (executes) the plan, quoted for a POSIX shell."""
    params: dict[str, Any] = {'planId': plan}
    if orders is not None:
        params['orders'] = orders
    message = json.dumps({'intent': EXECUTE_PLAN, 'params': params}, separators=(',', ':'))
    topic = topic or 'intents'
    words = ['gcloud', 'pubsub', 'topics', 'publish', topic, f'--message={message}']
    if project and not topic.startswith('projects/'):
        words.append(f'--project={project}')
    return ' '.join(shlex.quote(word) for word in words)


def expires_at(now: datetime, ttl_seconds: float) -> datetime:
    return now + timedelta(seconds=ttl_seconds)


def execute_key(plan: str, orders: list[str] | None, discard: bool) -> str:
    """execute-plan's idempotency key: the plan and the sorted subset (`*`: every order); a discard its own."""
    if discard:
        return f'discard:{plan}'
    return f'execute:{plan}:' + (','.join(sorted(orders)) if orders else '*')


def working_entry(order_ref: str, perm_id: int | None, action: str, remaining: float) -> dict:
    """One of our working orders as a plan remembers it."""
    return {'orderRef': order_ref, 'permId': perm_id, 'action': action, 'remaining': remaining}


def describe_working(entries: list[dict]) -> list[tuple]:
    """Working orders in a comparable form (order independent)."""
    return sorted((e['orderRef'], e['permId'], e['action'], float(e['remaining'])) for e in entries)


def plan_state(plan: dict, now: datetime) -> list[str]:
    """Why the plan as stored cannot be executed at `now` (wall clock): discarded, expired."""
    reasons = []
    if plan.get('discarded'):
        reasons.append(f'discarded at {plan["discarded"]["at"]} by run {plan["discarded"]["runId"]}')
    if now > parse_instant(plan['expiresAt']):
        reasons.append(f'expired at {plan["expiresAt"]} (PLAN_TTL_SECONDS after planning)')
    return reasons
