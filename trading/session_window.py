"""Session windows: run only within the last N seconds before today's close, or the first N after the open.

A request's `window` makes a run conditional on the trading session of the contracts it would trade,
judged on the gateway's clock against the liquid hours the gateway reports (the same text
`trading.market_hours` reads). With several contracts the earliest close counts for `beforeClose` and
the latest open for `afterOpen`: the window is the part of the day in which every one of them trades.
Pure: no I/O, the caller fetches the hours and the time.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from trading.market_hours import Span, sessions
from lib.times import iso


@dataclass(frozen=True)
class SessionWindow:
    """Exactly one of the two is set, in seconds (> 0)."""

    before_close: float | None = None
    after_open: float | None = None

    def describe(self) -> dict:
        """The window as the request wrote it."""
        return {'beforeClose': self.before_close} if self.before_close is not None else {'afterOpen': self.after_open}


@dataclass(frozen=True)
class ContractHours:
    """What the gateway reports of one contract's hours."""

    name: str
    liquid_hours: str
    time_zone: str


@dataclass(frozen=True)
class TodaysSession:
    """One contract's session of the day (UTC instants) in its exchange's zone."""

    contract: ContractHours
    opens_at: datetime
    closes_at: datetime

    def describe(self) -> dict:
        zone = ZoneInfo(self.contract.time_zone)
        return {'contract': self.contract.name, 'timeZone': self.contract.time_zone,
                'open': {'exchange': _local(self.opens_at, zone), 'utc': iso(self.opens_at)},
                'close': {'exchange': _local(self.closes_at, zone), 'utc': iso(self.closes_at)}}


@dataclass(frozen=True)
class Verdict:
    """Whether a run is inside its window, why, and the session that decided it."""

    inside: bool
    reason: str
    window: SessionWindow
    now: datetime
    deciding: TodaysSession | None        # the contract whose open or close set the window
    contracts: int                        # how many contracts' hours were weighed

    def describe(self) -> dict:
        """The `window` part of a result."""
        rule = ('the earliest close' if self.window.before_close is not None else 'the latest open')
        described = {'requested': self.window.describe(), 'inside': self.inside, 'reason': self.reason,
                     'gatewayTime': iso(self.now), 'contracts': self.contracts,
                     'rule': f'{rule} among the {self.contracts} contract(s) the run would trade'}
        if self.deciding is not None:
            described['session'] = self.deciding.describe()
        return described


def judge(window: SessionWindow, hours: list[ContractHours], now: datetime) -> Verdict:
    """Is `now` (the gateway's clock) within `window` of today's session of the contracts in `hours`?"""
    now = now.astimezone(timezone.utc)
    today = [s for s in (todays_session(h, now) for h in hours) if s is not None]
    if not today:
        names = ', '.join(h.name for h in hours) or 'no contract'
        return Verdict(False, f'no trading session today for {names}', window, now, None, len(hours))
    if window.before_close is not None:
        deciding = min(today, key=lambda s: s.closes_at)
        left = (deciding.closes_at - now).total_seconds()
        inside = deciding.opens_at <= now < deciding.closes_at and left <= window.before_close
        reason = _before_close_reason(deciding, now, left, window.before_close, inside)
    else:
        deciding = max(today, key=lambda s: s.opens_at)
        since = (now - deciding.opens_at).total_seconds()
        inside = deciding.opens_at <= now < deciding.closes_at and since < window.after_open
        reason = _after_open_reason(deciding, now, since, window.after_open, inside)
    return Verdict(inside, reason, window, now, deciding, len(hours))


def todays_session(hours: ContractHours, now: datetime) -> TodaysSession | None:
    """The session open at `now`, else the one that ends today (exchange date), else None (closed today)."""
    spans = sessions(hours.liquid_hours, hours.time_zone)
    zone = ZoneInfo(hours.time_zone)
    current = [span for span in spans if span[0] <= now < span[1]]
    today = now.astimezone(zone).date()
    ending_today = [span for span in spans if span[1].astimezone(zone).date() == today]
    chosen: Span | None = (current or ending_today[-1:] or [None])[0]
    return None if chosen is None else TodaysSession(hours, *chosen)


def _before_close_reason(session: TodaysSession, now: datetime, left: float, seconds: float, inside: bool) -> str:
    close = _clock(session.closes_at, ZoneInfo(session.contract.time_zone))
    name = session.contract.name
    if inside:
        return f'within {seconds:g} s of the {close} close of {name} ({left:.0f} s left)'
    if now >= session.closes_at:
        return f'after the {close} close of {name}'
    if now < session.opens_at:
        return f'before the open of {name}; not within {seconds:g} s of the {close} close'
    return f'not within {seconds:g} s of the {close} close of {name} ({left:.0f} s left)'


def _after_open_reason(session: TodaysSession, now: datetime, since: float, seconds: float, inside: bool) -> str:
    opened = _clock(session.opens_at, ZoneInfo(session.contract.time_zone))
    name = session.contract.name
    if inside:
        return f'within {seconds:g} s after the {opened} open of {name} ({since:.0f} s in)'
    if now < session.opens_at:
        return f'before the {opened} open of {name}'
    if now >= session.closes_at:
        return f'after the close of {name}; not within {seconds:g} s after the {opened} open'
    return f'not within {seconds:g} s after the {opened} open of {name} ({since:.0f} s in)'


def _local(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime('%Y-%m-%d %H:%M %Z')


def _clock(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime('%H:%M %Z')
