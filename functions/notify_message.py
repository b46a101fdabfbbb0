"""What a result says to a person: whether it passes the notify filters, and the one short message about it.

The message starts with the terminal headline (functions/render.py: intent, status, what happened, NLV,
the first problems), then the account, each order placed or planned (action, quantity, symbol, fill price),
the error and whether Pub/Sub delivers the request again, and for a plan its orders and the command that
approves it. Every secret in the environment is masked in it (lib.log.mask), whatever the result carries.
"""
from __future__ import annotations

import re
from typing import Any

from functions.render import headline
from lib import log
from lib.config import NotifySettings

# Telegram refuses texts over 4096 characters; a notification is meant to be short anyway.
MAX_MESSAGE_CHARS = 3500
MAX_ORDER_LINES = 10
# in a str every surrogate code point is a lone one (JSON's escaped pairs decode to one character)
_LONE_SURROGATE = re.compile('[\ud800-\udfff]')


def tags(doc: dict[str, Any]) -> set[str]:
    """The filter tags a result carries: `planned` (it holds a plan), `orders` (the run placed orders)."""
    result = _result(doc)
    found = set()
    if isinstance(result.get('plan'), dict):
        found.add('planned')
    if not doc.get('dryRun') and any(isinstance(order, dict) for order in _list(result.get('orders'))):
        found.add('orders')
    return found


def passes(doc: dict[str, Any], settings: NotifySettings) -> bool:
    """Whether the result is one to send: its intent is wanted, and its status or one of its tags is."""
    if settings.intents is not None and doc.get('intent') not in settings.intents:
        return False
    return doc.get('status') in settings.statuses or bool(tags(doc) & settings.statuses)


def message(doc: dict[str, Any]) -> str:
    """The short text about one result, with every secret of the environment masked.

    A result with a part of the wrong type (published by someone else, or by another version) still makes a
    message: its intent, status and run, saying the rest could not be read (a redelivery reads it no better).
    """
    try:
        text = _full_message(doc)
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        text = (f'{doc.get("intent") or "?"}: {str(doc.get("status")).upper()} — the result document could not be '
                f'read in full ({type(exc).__name__}); see the run in the history'
                + (f'\nrun {doc["runId"]}' if doc.get('runId') else ''))
    # a lone surrogate (JSON allows its escape) is not UTF-8: Slack and Telegram would refuse the text
    return _LONE_SURROGATE.sub('\ufffd', _cut(log.mask(text)))


def _full_message(doc: dict[str, Any]) -> str:
    result = _result(doc)
    lines = [headline(doc, width=300)]
    if doc.get('account'):
        lines.append(f'account {doc["account"]} ({doc.get("tradingMode") or "?"})'
                     + (', dry run' if doc.get('dryRun') else ''))
    orders = [order for order in result.get('orders') or [] if isinstance(order, dict)]
    if orders:
        lines.append(('planned (dry run, nothing placed):' if doc.get('dryRun') else 'orders placed:'))
        lines += _order_lines(orders)
    error = doc.get('error')
    if isinstance(error, dict):
        retry = ('will be retried: Pub/Sub delivers the request again' if error.get('retryable')
                 else 'not retried')
        lines.append(f'error {error.get("type")}: {retry}')
    plan = result.get('plan')
    if isinstance(plan, dict):
        lines += _plan_lines(plan)
    if doc.get('runId'):
        lines.append(f'run {doc["runId"]}')
    return '\n'.join(lines)


def _plan_lines(plan: dict[str, Any]) -> list[str]:
    orders = [order for order in plan.get('orders') or [] if isinstance(order, dict)]
    lines = [f'plan {plan.get("planId")}: {len(orders)} order(s), nothing placed'
             + (f'; expires {plan["expiresAt"]}' if plan.get('expiresAt') else '')]
    lines += _order_lines(orders)
    if plan.get('approve'):
        lines.append(f'approve: {plan["approve"]}')
    return lines


def _order_lines(orders: list[dict[str, Any]]) -> list[str]:
    lines = [f'  {_order_text(order)}' for order in orders[:MAX_ORDER_LINES]]
    if len(orders) > MAX_ORDER_LINES:
        lines.append(f'  … and {len(orders) - MAX_ORDER_LINES} more')
    return lines


def _order_text(order: dict[str, Any]) -> str:
    """`BUY 636 SPY LMT 629.1 — Filled 636 @ 628.72`: what was asked, then what happened to it."""
    contract = order.get('contract') if isinstance(order.get('contract'), dict) else {}
    symbol = contract.get('localSymbol') or contract.get('symbol') or order.get('orderRef') or '?'
    asked = f'{order.get("action") or "?"} {_number(order.get("quantity"))} {symbol}'
    if order.get('orderType') and order.get('orderType') != 'MKT':
        asked += f' {order["orderType"]}'
        if isinstance(order.get('lmtPrice'), (int, float)):
            asked += f' {_number(order["lmtPrice"])}'
    state = []
    if order.get('status'):
        state.append(str(order['status']))
    if isinstance(order.get('filled'), (int, float)) and order['filled']:
        filled = f'filled {_number(order["filled"])}'
        if isinstance(order.get('avgFillPrice'), (int, float)):
            filled += f' @ {_number(order["avgFillPrice"])}'
        state.append(filled)
    elif isinstance(order.get('expectedPrice'), (int, float)):
        state.append(f'ref {_number(order["expectedPrice"])}')
    return f'{asked} — {", ".join(state)}' if state else asked


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if value != value or value in (float('inf'), float('-inf')):
        return str(value)
    return f'{value:,.0f}' if float(value).is_integer() else f'{value:,.4g}' if abs(value) < 1 else f'{value:,.2f}'


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _result(doc: dict[str, Any]) -> dict[str, Any]:
    return doc['result'] if isinstance(doc.get('result'), dict) else {}


def _cut(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS - 1] + '…'
