"""The `health` intent: is the gateway up, ready, on time and connected to its data farms?"""
from __future__ import annotations

import time
from datetime import timezone

from intents.base import Intent, IntentOutput
from lib.problems import problem

MAX_CLOCK_SKEW_SECONDS = 5.0
# Notices the gateway sends when it has lost a farm or its link to IB's servers.
BROKEN_NOTICES = {1100, 2103, 2105, 2110, 2157}


class Health(Intent):
    """Reports gateway facts and flags problems; a scheduled run alerts on a broken gateway.

    An unreachable gateway never gets this far: the run ends as a retryable GatewayUnavailable error.
    """

    name = 'health'
    readonly = True

    async def run(self) -> IntentOutput:
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
        return IntentOutput(result={
            'healthy': not problems,
            'problems': problems,
            'gatewayReachable': True,
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
