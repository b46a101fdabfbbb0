"""Plain-text rendering of a result document for a terminal: a header, then one section per part."""
from __future__ import annotations

from typing import Any

MAX_CELL = 40


def render_result(doc: dict[str, Any]) -> str:
    """The whole result as readable sections: run facts, error, then the intent's own output."""
    sections = [_header(doc)]
    if doc.get('error'):
        error = doc['error']
        sections.append(_section('Error', _pairs({
            'type': error['type'], 'message': error['message'],
            'retryable': 'yes (the message will be delivered again)' if error['retryable'] else 'no'})))
    result = doc.get('result')
    if isinstance(result, dict):
        sections.extend(_value_sections(result, prefix=''))
    return '\n\n'.join(sections) + '\n'


def _header(doc: dict[str, Any]) -> str:
    title = f'{doc.get("intent") or "message"}: {doc["status"].upper()} in {_ms(doc["durationMs"])}'
    gateway = doc.get('gateway') or {}
    timings = doc.get('timings') or {}
    facts = {
        'account': doc.get('account'),
        'trading mode': doc.get('tradingMode'),
        'dry run': 'yes' if doc.get('dryRun') else 'no',
        'gateway': (f'{gateway.get("host")}:{gateway.get("port")}  clientId {gateway.get("clientId")}  '
                    f'server version {gateway.get("serverVersion")}') if gateway else None,
        'timings': '  '.join(f'{name} {_ms(timings[key])}' for name, key in
                             (('queue', 'queueMs'), ('connect', 'connectMs'), ('intent', 'intentMs'),
                              ('publish', 'publishMs')) if timings.get(key) is not None),
        'started': doc.get('startedAt'),
        'run id': doc.get('runId'),
        'message id': doc.get('messageId'),
        'idempotency key': doc.get('idempotencyKey'),
    }
    return _section(title, _pairs({k: v for k, v in facts.items() if v not in (None, '')}))


def _value_sections(value: dict[str, Any], prefix: str) -> list[str]:
    """Scalars of a dict become one key/value section; lists and dicts get sections of their own."""
    scalars = {k: v for k, v in value.items() if not isinstance(v, (dict, list))}
    sections = [_section(prefix.rstrip('.') or 'Result', _pairs(scalars))] if scalars else []
    for key, item in value.items():
        name = f'{prefix}{key}'
        if isinstance(item, dict) and item and all(_is_flat_dict(v) for v in item.values()):
            rows = [{'name': row_key, **row} for row_key, row in item.items()]
            sections.append(_section(f'{name} ({len(rows)})', _table(rows)))
        elif isinstance(item, dict):
            sections.extend(_value_sections(item, prefix=f'{name}.'))
        elif isinstance(item, list):
            sections.append(_section(f'{name} ({len(item)})', _list_body(item)))
    return sections


def _is_flat_dict(value: Any) -> bool:
    return isinstance(value, dict) and not any(isinstance(v, (dict, list)) for v in value.values())


def _list_body(items: list[Any]) -> str:
    if not items:
        return '  (none)'
    if all(isinstance(item, dict) for item in items):
        return _table([_flatten(item) for item in items])
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


def _table(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    numeric = [all(isinstance(row.get(column), (int, float)) or row.get(column) is None for row in rows)
               for column in columns]
    headers = [column or 'value' for column in columns]
    widths = [max(len(header), *(len(line[i]) for line in cells)) for i, header in enumerate(headers)]

    def line(values: list[str]) -> str:
        return '  ' + '  '.join(value.rjust(width) if is_number else value.ljust(width)
                                for value, width, is_number in zip(values, widths, numeric)).rstrip()

    return '\n'.join([line(headers), line(['-' * width for width in widths]), *(line(row) for row in cells)])


def _pairs(pairs: dict[str, Any]) -> str:
    if not pairs:
        return '  (none)'
    width = max(len(key) for key in pairs)
    return '\n'.join(f'  {key.ljust(width)}  {_cell(value, limit=None)}' for key, value in pairs.items())


def _section(title: str, body: str) -> str:
    return f'{title}\n{"=" * len(title)}\n{body}'


def _cell(value: Any, limit: int | None = MAX_CELL) -> str:
    if value is None:
        text = '-'
    elif isinstance(value, bool):
        text = 'yes' if value else 'no'
    elif isinstance(value, (int, float)):
        text = _number(value)
    elif isinstance(value, (dict, list)):
        text = ', '.join(f'{k}={_cell(v)}' for k, v in value.items()) if isinstance(value, dict) \
            else ', '.join(_cell(v) for v in value)
    else:
        text = str(value)
    if limit is not None and len(text) > limit:
        text = text[:limit - 1] + '…'
    return text


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)       # ids (conId, orderId, clientId) read wrong with separators
    if value != value or value in (float('inf'), float('-inf')):
        return str(value)
    return f'{value:,.2f}' if abs(value) < 1e15 else f'{value:.6g}'


def _ms(value: float) -> str:
    return f'{value:,.1f} ms'
