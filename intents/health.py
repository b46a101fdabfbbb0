"""The `health` intent: is the gateway up, ready, on time and connected to its data farms?"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

from intents.base import Intent
from intents.outcome import Outcome
from lib import log
from trading.idempotency import stuck_claims
from lib.problems import problem
from lib.store import StoreUnavailable
from lib.times import iso

logger = log.get_logger(__name__)

MAX_CLOCK_SKEW_SECONDS = 5.0
# Notices the gateway sends when it has lost a farm or its link to IB's servers.
BROKEN_NOTICES = {1100, 2103, 2105, 2110, 2157}


class Health(Intent):
    """Reports gateway facts and flags problems; a scheduled run alerts on a broken gateway.

    It also lists stuck claims: order-placing runs still 'running' long after their lease ended
    (trading.idempotency.STUCK_AFTER_SECONDS), which no redelivery will take over any more.
    An unreachable gateway never gets this far: the run ends as a retryable GatewayUnavailable error.
    """

    name = 'health'
    uses_store = True

    async def run(self) -> Outcome:
        session = self.session
        sent = time.time()
        gateway_time = await self.ib.reqCurrentTimeAsync()
        received = time.time()
        # reqCurrentTime has one-second resolution; compare against the middle of the round trip
        skew = gateway_time.timestamp() - (sent + received) / 2
        problems = [problem('gateway-notice', f'{n["code"]}: {n["message"]}')
                    for n in session.notices if n['code'] in BROKEN_NOTICES]
        if abs(skew) > MAX_CLOCK_SKEW_SECONDS:
            problems.append(problem('clock-skew', f'gateway clock is {skew:+.1f}s off the wall clock'))
        api_ready = self.ib.client.isReady()
        if not api_ready:
            problems.append(problem('api-not-ready', 'API connection is not ready'))
        stuck = await self._stuck_claims(problems)
        return Outcome.ok({
            'healthy': not problems,
            'stuckClaims': stuck,
            'problems': problems,
            'apiReady': api_ready,
            'serverVersion': session.server_version,
            'managedAccounts': session.managed_accounts,
            'account': session.account,
            'gatewayTime': gateway_time.astimezone(timezone.utc).isoformat(),
            'clockSkewSeconds': round(skew, 3),
            'roundTripMs': round((received - sent) * 1000, 1),
            'connectMs': round(session.connect_ms, 1),
            'connectAttempts': session.attempts,
            'farmNotices': session.notices,
        })

    async def _stuck_claims(self, problems: list[dict]) -> list[dict] | None:
        """Stuck claims as {key, runId, leaseUntil}; None (and a problem) when the store cannot say."""
        store = self.context.store
        if store is None:
            return None
        try:
            records = await asyncio.to_thread(stuck_claims, store, datetime.now(timezone.utc))
        except StoreUnavailable as exc:
            problems.append(problem('store-unreadable', f'state store unreadable, stuck claims unknown: {exc}'))
            return None
        for record in records:
            # the deploy's stuck-claim alert policy matches the stuckClaim field of this line
            logger.error('stuck claim %s: run %s still running, lease ended %s', record.key, record.run_id,
                         iso(record.lease_until),
                         extra={'fields': {'stuckClaim': record.key, 'stuckRunId': record.run_id}})
            problems.append(problem('stuck-claim', f'stuck claim {record.key}: run {record.run_id} still running, its '
                                                   f'lease ended {iso(record.lease_until)}; check the broker for its '
                                                   'orders, then finish or delete it'))
        return [{'key': r.key, 'runId': r.run_id, 'attempt': r.attempt, 'claimedAt': iso(r.created_at),
                 'leaseUntil': iso(r.lease_until)} for r in records]
