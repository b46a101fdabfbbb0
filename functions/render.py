"""Plain-text rendering of a result document for a terminal: a headline, the run's facts, then its output.

The headline says in a line or two what happened and what matters (status, what went wrong, orders,
net liquidation, positions). Tables fit the terminal (COLUMNS, else the terminal's width): the least
useful columns are dropped first and named under the table; `wide=True` keeps every column and every
section. Whole-number columns print without decimals; timestamps print in New York time with UTC beside.
"""
from __future__ import annotations

import base64
import json
import re
import shutil
import textwrap
from datetime import timezone
from typing import Any
from zoneinfo import ZoneInfo

from lib.times import parse_instant

MAX_CELL = 40
DEFAULT_WIDTH = 120
EXCHANGE_ZONE = ZoneInfo('America/New_York')     # the markets the strategies trade; UTC is printed beside it
# Sections a trader looks at first, in this order; the rest follow in the document's order.
FIRST_SECTIONS = ('problems', 'orders', 'notPlaced', 'alreadyPlaced', 'skipped', 'positions', 'portfolio',
                  'openOrders', 'executions', 'contracts', 'plan')
# Long reference sections shown only with wide=True (a line says how to see them).
WIDE_ONLY_SECTIONS = ('accountValues',)
# Columns dropped first when a table is wider than the terminal, most expendable first.
EXPENDABLE_COLUMNS = ('conId', 'secType', 'exchange', 'lastTradeDateOrContractMonth', 'currency', 'tif', 'algo',
                      'reduceOnly', 'orderId', 'clientId', 'permId', 'acknowledged', 'messages', 'remaining',
                      'expectedPrice', 'localSymbol', 'notional', 'lmtPrice', 'orderType', 'byStrategy')
WIDE_HINT = '--wide shows them'
NO_BREAK = '\0'            # joins words textwrap must keep on one line
# Numbers that name things: printed as they are, without thousands separators.
ID_KEYS = ('conId', 'orderId', 'clientId', 'permId', 'serverVersion', 'port', 'attempt')
_TIMESTAMP = re.compile(r'^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$')


def render_result(doc: dict[str, Any], *, width: int | None = None, wide: bool = False) -> str:
    """The whole result as readable sections: headline, run facts, error, then the intent's own output."""
    width = width or terminal_width()
    sections = [headline(doc, width), _section('Run', _pairs(_facts(doc), width))]
    if doc.get('error'):
        error = doc['error']
        sections.append(_section('Error', _pairs({
            'type': error['type'], 'message': error['message'],
            'retryable': _retry_text(doc) if error['retryable'] else 'no'}, width)))
    result = doc.get('result')
    if isinstance(result, dict):
        sections.extend(_value_sections(_ordered(result), '', width, wide))
    plan = result.get('plan') if isinstance(result, dict) else None
    if isinstance(plan, dict) and plan.get('approve'):   # last and unwrapped, so it can be copied whole
        sections.append(_section('To approve', f'  {plan["approve"]}'))
    return '\n\n'.join(sections) + '\n'


def terminal_width() -> int:
    """COLUMNS when set, else the terminal's width, else DEFAULT_WIDTH."""
    return max(40, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)


def headline(doc: dict[str, Any], width: int | None = None) -> str:
    """`intent: STATUS in N ms — what happened`, then the figures that matter, one line each.

    What happened names what went wrong first: the error, else (a degraded run) the first problem and how
    many there are; the first line is cut to `width` (default: the terminal's).
    """
    result = doc.get('result') if isinstance(doc.get('result'), dict) else {}
    title = f'{doc.get("intent") or "message"}: {doc["status"].upper()} in {_ms(doc["durationMs"])}'
    what = _what_happened(doc, result)
    went_wrong = _what_went_wrong(doc, result)
    what = '; '.join(part for part in (what, went_wrong) if part)
    first = f'{title} — {what}' if what else title
    limit = width or terminal_width()
    lines = [first if len(first) <= limit else first[:limit - 1] + '…']
    figures = _figures(result)
    if figures:
        lines.append('  ' + '  ·  '.join(figures))
    problems = result.get('problems') or []
    for problem in problems[:3]:
        lines.append(f'  ! {_problem_text(problem)}')
    if len(problems) > 3:
        lines.append(f'  ! … and {len(problems) - 3} more problems (below)')
    return '\n'.join(lines)


def _what_happened(doc: dict[str, Any], result: dict[str, Any]) -> str:
    error = doc.get('error')
    if error:
        return f'{error["type"]}: {_one_line(error["message"])}'
    orders = result.get('orders') or []
    plan = result.get('plan') if isinstance(result.get('plan'), dict) else None
    if plan:
        return (f'{len(plan.get("orders") or [])} order(s) planned, none placed until approved '
                f'(plan {plan.get("planId")}, expires {plan.get("expiresAt")})')
    if doc.get('dryRun') and orders:
        return f'{len(orders)} order(s) planned, none placed (dry run)'
    if orders:
        filled = sum(1 for order in orders if order.get('status') == 'Filled')
        return f'{len(orders)} order(s) placed, {filled} filled'
    if result.get('reason'):
        return _one_line(result['reason'])
    if result.get('healthy') is False:
        return 'unhealthy'
    return ''


def _what_went_wrong(doc: dict[str, Any], result: dict[str, Any]) -> str:
    """For a run without an error that still had problems: how many, and the first one."""
    problems = result.get('problems') or []
    if doc.get('error') or not problems:
        return ''
    count = f'{len(problems)} problems, first' if len(problems) > 1 else 'problem'
    return f'{count}: {_one_line(_problem_text(problems[0]))}'


def _figures(result: dict[str, Any]) -> list[str]:
    """NLV, cash, day P&L and positions, from whichever part of the result reports them."""
    account = result.get('account') if isinstance(result.get('account'), dict) else {}
    summary = result.get('summary') if isinstance(result.get('summary'), dict) else {}
    nlv, currency = _tagged(summary, 'NetLiquidation')
    if 'netLiquidation' in account:
        nlv, currency = account['netLiquidation'], account.get('baseCurrency')
    figures = []
    if nlv is not None:
        figures.append(f'NLV {_number(nlv, whole=_is_whole(nlv))} {currency or ""}'.rstrip())
    cash, _ = _tagged(summary, 'TotalCashValue')
    if cash is not None:
        figures.append(f'cash {_number(cash, whole=_is_whole(cash))}')
    equity, _ = _tagged(summary, 'EquityWithLoanValue')
    previous, _ = _tagged(summary, 'PreviousDayEquityWithLoanValue')
    if equity is not None and previous is not None:
        figures.append(f'day P&L {_number(equity - previous)}')
    if isinstance(result.get('positions'), list):
        figures.append(f'{len(result["positions"])} position(s)')
    return figures


def _retry_text(doc: dict[str, Any]) -> str:
    if str(doc.get('messageId') or '').startswith('local-'):
        return 'yes (a retry could succeed; run it again)'
    return 'yes (Pub/Sub delivers the message again)'


def _facts(doc: dict[str, Any]) -> dict[str, Any]:
    gateway = doc.get('gateway') or {}
    timings = doc.get('timings') or {}
    facts = {
        'account': doc.get('account'),
        'trading mode': doc.get('tradingMode'),
        'dry run': 'yes' if doc.get('dryRun') else 'no',
        'gateway': (f'{gateway.get("host")}:{gateway.get("port")}  clientId {gateway.get("clientId")}  '
                    f'server version {gateway.get("serverVersion")}') if gateway else None,
        'timings': '  '.join(f'{name} {_ms(timings[key])}' for name, key in
                             (('queue', 'queueMs'), ('connect', 'connectMs'), ('intent', 'intentMs'))
                             if timings.get(key) is not None),
        'started': doc.get('startedAt'),
        'run id': doc.get('runId'),
        'message id': doc.get('messageId'),
        'idempotency key': doc.get('idempotencyKey'),
    }
    return {k: v for k, v in facts.items() if v not in (None, '')}


def _ordered(result: dict[str, Any]) -> dict[str, Any]:
    first = {key: result[key] for key in FIRST_SECTIONS if key in result}
    return {**first, **{key: value for key, value in result.items() if key not in first}}


def _value_sections(value: dict[str, Any], prefix: str, width: int, wide: bool) -> list[str]:
    """Scalars of a dict become one key/value section; lists and dicts get sections of their own."""
    scalars = {k: v for k, v in value.items() if not isinstance(v, (dict, list))}
    sections = [_section(prefix.rstrip('.') or 'Result', _pairs(scalars, width))] if scalars else []
    for key, item in value.items():
        name = f'{prefix}{key}'
        if not wide and key in WIDE_ONLY_SECTIONS and isinstance(item, (dict, list)):
            sections.append(_section(f'{name} ({len(item)})', '  (hidden; --wide shows them)'))
        elif isinstance(item, dict) and item and all(_is_flat_dict(v) for v in item.values()):
            rows = [{'name': row_key, **row} for row_key, row in item.items()]
            sections.append(_section(f'{name} ({len(rows)})', _table(rows, width, wide)))
        elif isinstance(item, dict):
            sections.extend(_value_sections(item, f'{name}.', width, wide))
        elif isinstance(item, list):
            sections.append(_section(f'{name} ({len(item)})', _list_body(item, width, wide)))
    return sections


def _is_flat_dict(value: Any) -> bool:
    return isinstance(value, dict) and not any(isinstance(v, (dict, list)) for v in value.values())


def _list_body(items: list[Any], width: int, wide: bool) -> str:
    if not items:
        return '  (none)'
    if all(isinstance(item, dict) for item in items):
        return _table([_flatten(item) for item in items], width, wide)
    return '\n'.join(f'  {_cell(item)}' for item in items)


def _flatten(row: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts of a row become columns of their own, named by their inner key where unambiguous."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            for inner, inner_value in value.items():
                flat[inner if inner not in row and inner not in flat else f'{key}.{inner}'] = inner_value
        else:
            flat[key] = value
    return flat


def _table(rows: list[dict[str, Any]], width: int, wide: bool) -> str:
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    whole = {column: all(_is_whole(row.get(column)) for row in rows) for column in columns}
    numeric = {column: all(isinstance(row.get(column), (int, float)) and not isinstance(row.get(column), bool)
                           or row.get(column) is None for row in rows) for column in columns}
    cells = {column: [_cell(row.get(column), whole=whole[column], plain=column in ID_KEYS) for row in rows]
             for column in columns}
    widths = {column: max(len(column), *(len(text) for text in cells[column])) for column in columns}
    hidden: list[str] = []
    if not wide:
        while len(columns) > 1 and _table_width(columns, widths) > width:
            drop = next((c for c in EXPENDABLE_COLUMNS if c in columns and c != columns[0]), columns[-1])
            columns.remove(drop)
            hidden.append(drop)

    def line(values: list[str]) -> str:
        return '  ' + '  '.join(value.rjust(widths[c]) if numeric[c] else value.ljust(widths[c])
                                for value, c in zip(values, columns)).rstrip()

    lines = [line(columns), line(['-' * widths[c] for c in columns]),
             *(line([cells[c][i] for c in columns]) for i in range(len(rows)))]
    if hidden:
        note = f'({len(hidden)} more column(s): {", ".join(hidden)}; {WIDE_HINT.replace(" ", NO_BREAK)})'
        lines.extend(part.replace(NO_BREAK, ' ')
                     for part in textwrap.wrap(note, width, initial_indent='  ', subsequent_indent='   '))
    return '\n'.join(lines)


def _table_width(columns: list[str], widths: dict[str, int]) -> int:
    return 2 + sum(widths[c] for c in columns) + 2 * (len(columns) - 1)


def _pairs(pairs: dict[str, Any], width: int) -> str:
    if not pairs:
        return '  (none)'
    key_width = max(len(key) for key in pairs)
    indent = ' ' * (key_width + 4)
    lines = []
    for key, value in pairs.items():
        text = _cell(value, limit=None, whole=_is_whole(value), plain=key in ID_KEYS)
        wrapped = textwrap.wrap(text, max(20, width - len(indent)), break_long_words=True) or ['']
        lines.append(f'  {key.ljust(key_width)}  {wrapped[0]}')
        lines.extend(indent + more for more in wrapped[1:])
    return '\n'.join(lines)


def _section(title: str, body: str) -> str:
    return f'{title}\n{"=" * len(title)}\n{body}'


def _cell(value: Any, limit: int | None = MAX_CELL, whole: bool = False, plain: bool = False) -> str:
    if value is None:
        text = '-'
    elif isinstance(value, bool):
        text = 'yes' if value else 'no'
    elif isinstance(value, (int, float)) and plain:
        text = str(value)
    elif isinstance(value, (int, float)):
        text = _number(value, whole=whole)
    elif isinstance(value, (dict, list)):
        text = ', '.join(f'{k}={_cell(v)}' for k, v in value.items()) if isinstance(value, dict) \
            else ', '.join(_cell(v) for v in value)
    elif isinstance(value, str) and _TIMESTAMP.match(value):
        text = _time(value)
    else:
        text = str(value)
    if limit is not None and len(text) > limit:
        text = text[:limit - 1] + '…'
    return text


def _is_whole(value: Any) -> bool:
    """A number with nothing after the point (or nothing at all): share counts, ids, targets."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return value == value and abs(value) < 1e15 and float(value).is_integer()


def _number(value: float, whole: bool = False) -> str:
    if value != value or value in (float('inf'), float('-inf')):
        return str(value)
    if abs(value) >= 1e15:
        return f'{value:.6g}'
    if whole or isinstance(value, int):
        return f'{int(value):,}'
    return f'{value:,.2f}'


def _time(text: str) -> str:
    """An ISO 8601 instant as New York time with UTC beside it."""
    moment = parse_instant(text)
    local = moment.astimezone(EXCHANGE_ZONE)
    utc = moment.astimezone(timezone.utc)
    return f'{local:%Y-%m-%d %H:%M:%S %Z} ({utc:%H:%M:%S} UTC)'


def _tagged(values: dict[str, Any], tag: str) -> tuple[float | None, str | None]:
    """(value, currency) of an account value kept as {tag: {currency: value}}, when it has one currency."""
    by_currency = values.get(tag)
    if not isinstance(by_currency, dict) or len(by_currency) != 1:
        return None, None
    (currency, value), = by_currency.items()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, None
    return float(value), currency or None


def _problem_text(problem: Any) -> str:
    if isinstance(problem, dict):
        where = problem.get('contract') or problem.get('orderRef')
        where = where.get('symbol') if isinstance(where, dict) else where
        text = problem.get('message') or problem.get('code') or str(problem)
        return f'{where}: {text}' if where and str(where) not in str(text) else str(text)
    return _one_line(str(problem))


def _one_line(text: str) -> str:
    first = str(text).strip().splitlines()[0] if str(text).strip() else ''
    return first if len(first) <= 200 else first[:199] + '…'


def _ms(value: float) -> str:
    return f'{value:,.1f} ms'


def documents_in(text: str) -> list[dict[str, Any]]:
    """Result documents in `text`: one JSON document per line, or what `gcloud pubsub subscriptions pull
    --format=json` prints (a JSON list of received messages whose data is a base64 result document).

    Raises ValueError naming the line that is neither.
    """
    stripped = text.strip()
    if not stripped:
        return []
    try:
        whole = json.loads(stripped)
    except json.JSONDecodeError:
        whole = None
    if whole is not None:
        items = whole if isinstance(whole, list) else [whole]
        return [_document(item, f'item {number}') for number, item in enumerate(items, start=1)]
    documents = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                documents.append(_document(json.loads(line), f'line {number}'))
            except json.JSONDecodeError as exc:
                raise ValueError(f'line {number} is not JSON: {exc}') from None
    return documents


def _document(item: Any, where: str) -> dict[str, Any]:
    if isinstance(item, dict) and isinstance(item.get('message'), dict) and 'data' in item['message']:
        try:
            item = json.loads(base64.b64decode(item['message']['data']))
        except (ValueError, TypeError) as exc:
            raise ValueError(f'{where}: the message data is not a base64 JSON document: {exc}') from None
    if not isinstance(item, dict) or item.get('schema') != 'intent-result/v1':
        raise ValueError(f'{where} is not a result document (schema intent-result/v1)')
    return item


def history_line(doc: dict[str, Any]) -> str:
    """One run in a line: when (New York), intent, status, what happened, runId."""
    result = doc.get('result') if isinstance(doc.get('result'), dict) else {}
    when = _time(doc['finishedAt']).split(' (')[0] if doc.get('finishedAt') else '-'
    what = _what_happened(doc, result) or ('degraded' if result.get('degraded') else '')
    status = doc['status'].upper() + (' (degraded)' if result.get('degraded') and doc['status'] == 'ok' else '')
    return f'{when}  {doc.get("intent") or "message":<20}  {status:<10}  {doc["runId"]}  {what}'.rstrip()
