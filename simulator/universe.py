"""The simulated contract universe and its trading hours.

Built in: a few US stocks and ETFs, four IDEALPRO forex pairs and quarterly CME equity-index futures; more
instruments can come from a JSON file. Sessions are computed from the NYSE calendar (`trading/exchange_calendar.py`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

from trading.exchange_calendar import REGULAR_CLOSE, is_trading_day, regular_session
from .clock import as_utc
from .model import Instrument

Span = tuple[datetime, datetime]     # (start, end) of a session, tz-aware

_STOCKS = (  # symbol, conId, primaryExchange, longName, basePrice, volatility
    ('SPY', 756733, 'ARCA', 'SPDR S&P 500 ETF TRUST', 600.0, 0.16),
    ('VIXY', 276435361, 'BATS', 'PROSHARES VIX SHORT-TERM FUTURES ETF', 40.0, 0.75),
    ('QQQ', 320227571, 'NASDAQ', 'INVESCO QQQ TRUST SERIES 1', 520.0, 0.20),
    ('AAPL', 265598, 'NASDAQ', 'APPLE INC', 230.0, 0.28),
    ('MSFT', 272093, 'NASDAQ', 'MICROSOFT CORP', 430.0, 0.25),
    ('TLT', 15547841, 'NASDAQ', 'ISHARES 20+ YEAR TREASURY BOND ETF', 90.0, 0.14),
    ('GLD', 51529211, 'ARCA', 'SPDR GOLD SHARES', 300.0, 0.16),
)
_FOREX = (  # pair, conId, longName, basePrice, volatility
    ('EUR.USD', 12087792, 'European Monetary Union Euro', 1.16, 0.07),
    ('GBP.USD', 12087797, 'British pound', 1.33, 0.08),
    ('USD.JPY', 15016059, 'US Dollar', 155.0, 0.10),
    ('USD.CHF', 12087820, 'US Dollar', 0.80, 0.08),
)
_FUTURES = (  # symbol, longName, multiplier, basePrice, volatility
    ('ES', 'E-mini S&P 500', '50', 6050.0, 0.17),
    ('MNQ', 'Micro E-Mini Nasdaq-100 Index', '2', 21500.0, 0.22),
)
_MONTH_CODES = 'FGHJKMNQUVXZ'
_SEARCH_DAYS = 14       # longest stretch searched for the next session (holidays never close more than 4 days)


def quarterly_expiry(year: int, month: int) -> date:
    """Last trading day of an equity-index future: the third Friday, or the trading day before a holiday Friday."""
    first = date(year, month, 1)
    day = first + timedelta(days=(4 - first.weekday()) % 7 + 14)
    while not is_trading_day(day):
        day -= timedelta(days=1)
    return day


def _stable_id(text: str) -> int:
    """A conId derived from `text`, the same in every process (unlike hash())."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], 'big') % 900_000_000 + 100_000_000


def _builtins(today: date) -> list[Instrument]:
    stocks = [Instrument(conId, symbol, 'STK', 'SMART', primary, 'USD', symbol, symbol, name,
                         basePrice=price, volatility=vol)
              for symbol, conId, primary, name, price, vol in _STOCKS]
    forex = [Instrument(conId, pair[:3], 'CASH', 'IDEALPRO', '', pair[4:], pair, pair, name,
                        minTick=0.005 if 'JPY' in pair else 0.00005, session='forex', basePrice=price, volatility=vol)
             for pair, conId, name, price, vol in _FOREX]
    quarters = [(year, month) for year in range(today.year - 1, today.year + 3) for month in (3, 6, 9, 12)]
    expiries = [quarterly_expiry(*q) for q in quarters]
    front = next(i for i, expiry in enumerate(expiries) if expiry >= today)
    futures = [Instrument(_stable_id(f'FUT:{symbol}:{expiry:%Y%m%d}'), symbol, 'FUT', 'CME', '', 'USD',
                          f'{symbol}{_MONTH_CODES[expiry.month - 1]}{expiry.year % 10}', symbol, name,
                          lastTradeDateOrContractMonth=f'{expiry:%Y%m%d}', multiplier=multiplier, minTick=0.25,
                          timeZoneId='US/Central', session='future', basePrice=price, volatility=vol)
               for symbol, name, multiplier, price, vol in _FUTURES
               for expiry in expiries[front - 2:front + 4]]
    return stocks + forex + futures


def _same(wanted: str, actual: str) -> bool:
    return not wanted or wanted.upper() == actual.upper()


class Universe:
    """The instruments the simulated gateway knows, with their exchange sessions."""

    def __init__(self, today: date, extra_file: str | Path | None = None) -> None:
        self.today = today
        self._by_id: dict[int, Instrument] = {}
        for inst in _builtins(today):
            self._by_id[inst.conId] = inst
        for inst in load_instruments(extra_file) if extra_file else []:
            self._add_extra(inst, extra_file)

    def _add_extra(self, inst: Instrument, source) -> None:
        name = f'{source}: {inst.symbol} (conId {inst.conId})'
        if inst.conId in self._by_id:
            raise ValueError(f'{name}: conId already used by {self._by_id[inst.conId].localSymbol}')
        if inst.secType == 'STK' and self.resolve(symbol=inst.symbol, secType='STK', currency=inst.currency):
            raise ValueError(f'{name}: a {inst.currency} stock {inst.symbol} exists already (it would be ambiguous)')
        self._by_id[inst.conId] = inst

    def _expired(self, inst: Instrument) -> bool:
        expiry = inst.lastTradeDateOrContractMonth
        return inst.secType == 'FUT' and datetime.strptime(expiry, '%Y%m%d').date() < self.today

    def get(self, conId: int) -> Instrument | None:
        """The instrument with this conId, expired futures included."""
        return self._by_id.get(conId)

    def all(self) -> list[Instrument]:
        """Every instrument that is not expired."""
        return [inst for inst in self._by_id.values() if not self._expired(inst)]

    def resolve(self, *, conId: int = 0, symbol: str = '', secType: str = '', exchange: str = '',
                primaryExchange: str = '', currency: str = '', lastTradeDateOrContractMonth: str = '',
                localSymbol: str = '', tradingClass: str = '', includeExpired: bool = False) -> list[Instrument]:
        """The instruments a contract description matches, as reqContractDetails lists them.

        A non-zero conId matches by conId alone. Otherwise every given field must match (text case-insensitively);
        exchange may also be SMART or the primary exchange; an expiry `YYYYMM` matches the contract month.
        """
        if conId:
            inst = self._by_id.get(conId)
            return [inst] if inst else []
        if not symbol and not localSymbol:
            return []
        expiry = lastTradeDateOrContractMonth.split(' ')[0]
        exchange, primary = exchange.upper(), primaryExchange.upper()
        return [inst for inst in self._by_id.values()
                if (includeExpired or not self._expired(inst))
                and _same(symbol, inst.symbol) and _same(secType, inst.secType) and _same(currency, inst.currency)
                and exchange in ('', 'SMART', inst.exchange.upper(), inst.primaryExchange.upper())
                and primary in ('', inst.primaryExchange.upper(), inst.exchange.upper())
                and inst.lastTradeDateOrContractMonth.startswith(expiry)
                and _same(localSymbol, inst.localSymbol) and _same(tradingClass, inst.tradingClass)]

    def sessions(self, inst: Instrument, day: date) -> tuple[Span | None, Span | None]:
        """(trading, liquid) sessions of trading date `day` in the instrument's zone; None when closed."""
        return _sessions(inst.session, inst.timeZoneId, day)

    def sessions_between(self, inst: Instrument, start: datetime, end: datetime,
                         liquid: bool) -> list[tuple[date, datetime, datetime]]:
        """(trading date, start, end) of the liquid or trading sessions overlapping [start, end], in order."""
        start, end = as_utc(start), as_utc(end)
        tz = ZoneInfo(inst.timeZoneId)
        first, last = start.astimezone(tz).date() - timedelta(days=1), end.astimezone(tz).date() + timedelta(days=1)
        spans = _day_spans(inst.session, inst.timeZoneId, first, last, liquid)
        return [span for span in spans if span[1] <= end and span[2] >= start]

    def hours(self, inst: Instrument, now: datetime) -> tuple[str, str]:
        """(tradingHours, liquidHours) in IB's format for 7 days from `now`'s date in the instrument's zone."""
        first = as_utc(now).astimezone(ZoneInfo(inst.timeZoneId)).date()
        days = [first + timedelta(days=i) for i in range(7)]
        trading, liquid = zip(*(self.sessions(inst, day) for day in days))
        return _format_hours(days, trading), _format_hours(days, liquid)

    def is_liquid(self, inst: Instrument, at: datetime) -> bool:
        """True inside the liquid (regular) hours."""
        return any(s <= as_utc(at) < e for _, s, e in self.sessions_between(inst, at, at, liquid=True))

    def is_trading(self, inst: Instrument, at: datetime) -> bool:
        """True inside the trading hours, extended hours included."""
        return any(s <= as_utc(at) < e for _, s, e in self.sessions_between(inst, at, at, liquid=False))

    def liquid_session_end(self, inst: Instrument, at: datetime) -> datetime | None:
        """End (UTC) of the liquid session containing `at` or, outside one, of the next one."""
        at = as_utc(at)
        ends = [e for _, _, e in self.sessions_between(inst, at, at + timedelta(days=_SEARCH_DAYS), True) if e > at]
        return as_utc(ends[0]) if ends else None

    def next_liquid_open(self, inst: Instrument, at: datetime) -> datetime | None:
        """Start (UTC) of the first liquid session beginning after `at`."""
        at = as_utc(at)
        opens = [s for _, s, _ in self.sessions_between(inst, at, at + timedelta(days=_SEARCH_DAYS), True) if s > at]
        return as_utc(opens[0]) if opens else None


@lru_cache(maxsize=4096)
def _sessions(session: str, zone: str, day: date) -> tuple[Span | None, Span | None]:
    """Universe.sessions, by the only fields it depends on: every price and quote asks for the sessions of the
    days around it, so a portfolio row or a resting order would otherwise recompute the calendar each time."""
    tz = ZoneInfo(zone)

    def at(d: date, hour: int, minute: int = 0) -> datetime:
        return datetime.combine(d, time(hour, minute), tzinfo=tz)

    eve = day - timedelta(days=1)
    if session == 'forex':
        if day.weekday() >= 5 or (day.month, day.day) in ((12, 25), (1, 1)):
            return None, None
        span = (at(eve, 17, 15), at(day, 17))
        return span, span
    regular = regular_session(day)
    if regular is None:
        return None, None
    early = regular[1] != REGULAR_CLOSE
    if session == 'future':     # CME Globex: equity futures halt at 12:15 CT on NYSE early-close days
        trading = (at(eve, 17), at(day, 12, 15) if early else at(day, 16))
        return trading, (at(day, 8, 30), at(day, 12 if early else 15))
    open_, close = (datetime.combine(day, t, tzinfo=tz) for t in regular)
    return (at(day, 4), at(day, 17 if early else 20)), (open_, close)


@lru_cache(maxsize=4096)
def _day_spans(session: str, zone: str, first: date, last: date,
               liquid: bool) -> tuple[tuple[date, datetime, datetime], ...]:
    """(trading date, start, end) of the liquid or trading sessions of the days first..last, in order: every
    price asks for the ten days before it, once per portfolio row and resting order."""
    days = (first + timedelta(days=n) for n in range((last - first).days + 1))
    return tuple((day, *span) for day in days if (span := _sessions(session, zone, day)[1 if liquid else 0]))


def _format_hours(days: list[date], spans) -> str:
    return ';'.join(f'{span[0]:%Y%m%d:%H%M}-{span[1]:%Y%m%d:%H%M}' if span else f'{day:%Y%m%d}:CLOSED'
                    for day, span in zip(days, spans))


_FIELDS = {f.name: f for f in dataclasses.fields(Instrument)}
_KINDS = {'int': 'an integer', 'str': 'a string', 'float': 'a number'}
_DEFAULT_SESSION = {'STK': 'stock', 'CASH': 'forex', 'FUT': 'future'}


def load_instruments(path: str | Path) -> list[Instrument]:
    """Instruments from a JSON file holding a list of objects with Instrument fields.

    localSymbol, tradingClass and longName default to the symbol, primaryExchange to '', session and
    timeZoneId follow from secType. Raises ValueError naming the first bad entry.
    """
    try:
        entries = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f'{path}: cannot read the contracts file: {e}') from None
    if not isinstance(entries, list):
        raise ValueError(f'{path}: expected a JSON list of instrument objects')
    instruments = [_instrument(entry, f'{path}: entry {i}') for i, entry in enumerate(entries)]
    seen: dict[int, str] = {}
    for inst in instruments:
        if inst.conId in seen:
            raise ValueError(f'{path}: conId {inst.conId} appears twice ({seen[inst.conId]} and {inst.symbol})')
        seen[inst.conId] = inst.symbol
    return instruments


def _instrument(entry, where: str) -> Instrument:
    if not isinstance(entry, dict):
        raise ValueError(f'{where}: expected an object, got {json.dumps(entry)}')
    where = f"{where} ({entry.get('symbol', 'no symbol')})"
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        raise ValueError(f'{where}: unknown field(s) {", ".join(unknown)}')
    values = dict(entry)
    symbol, sec_type = values.get('symbol'), values.get('secType')
    for name in ('localSymbol', 'tradingClass', 'longName'):
        values.setdefault(name, symbol)
    values.setdefault('primaryExchange', '')
    values.setdefault('session', _DEFAULT_SESSION.get(sec_type, 'stock'))
    values.setdefault('timeZoneId', 'US/Central' if sec_type == 'FUT' else 'US/Eastern')
    for name, field in _FIELDS.items():
        if name not in values:
            if field.default is dataclasses.MISSING:
                raise ValueError(f'{where}: missing field {name!r}')
            continue
        value, kind = values[name], field.type
        ok = (not isinstance(value, bool)
              and isinstance(value, {'int': int, 'str': str, 'float': (int, float)}[kind]))
        if not ok:
            raise ValueError(f'{where}: field {name!r} must be {_KINDS[kind]}, got {json.dumps(value)}')
        if kind == 'float':
            values[name] = float(value)
    inst = Instrument(**values)
    _check(dataclasses.asdict(inst), where)
    return inst


def _check(v: dict, where: str) -> None:
    problems = []
    if v['conId'] <= 0:
        problems.append('conId must be positive')
    if not v['symbol']:
        problems.append('symbol must not be empty')
    if v['secType'] not in _DEFAULT_SESSION:
        problems.append(f"secType must be one of {', '.join(_DEFAULT_SESSION)}")
    if v['session'] not in _DEFAULT_SESSION.values():
        problems.append(f"session must be one of {', '.join(_DEFAULT_SESSION.values())}")
    if v['minTick'] <= 0 or v['basePrice'] <= 0 or v['volatility'] < 0:
        problems.append('minTick and basePrice must be positive, volatility not negative')
    if v['secType'] == 'FUT':
        expiry = v['lastTradeDateOrContractMonth']
        try:
            if datetime.strptime(expiry, '%Y%m%d').strftime('%Y%m%d') != expiry:
                raise ValueError(expiry)
        except ValueError:
            problems.append('a future needs lastTradeDateOrContractMonth as a YYYYMMDD date')
        if not re.fullmatch(r'\d+(\.\d+)?', v['multiplier']):
            problems.append('a future needs a numeric multiplier')
    try:
        ZoneInfo(v['timeZoneId'])
    except (ValueError, KeyError, OSError):
        problems.append(f"unknown timeZoneId {v['timeZoneId']!r}")
    if problems:
        raise ValueError(f"{where}: {'; '.join(problems)}")
