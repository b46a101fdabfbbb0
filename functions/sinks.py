"""Where notifications go: a generic JSON webhook, a Slack incoming webhook, a Telegram bot.

Each sink is a URL and the JSON body its service expects:

| sink | settings | body |
|---|---|---|
| `webhook` | NOTIFY_WEBHOOK_URL | `{"text": message, "result": the result document}` |
| `slack` | NOTIFY_SLACK_WEBHOOK_URL | `{"text": message}` (Slack incoming webhooks; &, <, > escaped) |
| `telegram` | NOTIFY_TELEGRAM_BOT_TOKEN, NOTIFY_TELEGRAM_CHAT_ID | `{"chat_id": ..., "text": message}` POSTed to the Bot API's `sendMessage` (NOTIFY_TELEGRAM_API_BASE, default https://api.telegram.org) |

`send` answers what Pub/Sub's rules make of it: `sent` (2xx), `rejected` (the sink refused this request
for good: 3xx, 4xx; a retry would be refused again) or `failed` (5xx, 408, 425, 429, a timeout, a refused
or broken connection: a retry may succeed). Redirects are not followed: a webhook that moved is a
configuration to fix, and a redirected POST would lose its body.
"""
from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Literal

from lib import log
from lib.config import NotifySettings

SendState = Literal['sent', 'rejected', 'failed']
# 4xx answers that mean "not now" rather than "never" (RFC 9110 408, RFC 8470 425, RFC 6585 429).
RETRYABLE_4XX = frozenset({408, 425, 429})
MAX_DETAIL_CHARS = 300


@dataclass(frozen=True)
class Sink:
    """One configured destination: its name, its URL (a secret: kept out of repr) and its wire format."""

    name: str
    url: str = field(repr=False)
    chat_id: str | None = None

    def body(self, text: str, doc: dict[str, Any]) -> dict[str, Any]:
        """The JSON body this sink's service expects for `text` about the result `doc`."""
        if self.name == 'webhook':
            return {'text': text, 'result': log.mask(doc)}
        if self.name == 'telegram':
            return {'chat_id': self.chat_id, 'text': text, 'disable_web_page_preview': True}
        return {'text': _slack_escaped(text)}


@dataclass(frozen=True)
class Sent:
    """How one send went: sent, rejected or failed, and a line saying why (secrets masked)."""

    state: SendState
    detail: str


def _slack_escaped(text: str) -> str:
    # Slack parses <...> (mentions such as <!channel>, links) and wants &, <, > as entities otherwise
    # (api.slack.com/reference/surfaces/formatting#escaping): a result's text is shown, never parsed
    return text.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')


def configured_sinks(settings: NotifySettings) -> list[Sink]:
    """The sinks the settings configure, in a fixed order."""
    sinks = []
    if settings.webhook_url:
        sinks.append(Sink('webhook', settings.webhook_url))
    if settings.slack_webhook_url:
        sinks.append(Sink('slack', settings.slack_webhook_url))
    if settings.telegram_bot_token and settings.telegram_chat_id:
        sinks.append(Sink('telegram', f'{settings.telegram_api_base}/bot{settings.telegram_bot_token}/sendMessage',
                          chat_id=settings.telegram_chat_id))
    return sinks


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None      # the 3xx answer then raises HTTPError, and counts as rejected


_OPENER = urllib.request.build_opener(_NoRedirects)


def send(sink: Sink, text: str, doc: dict[str, Any], timeout: float) -> Sent:
    """POST the sink's body once, waiting at most `timeout` for each step of the exchange."""
    # ASCII escapes: a lone surrogate in a result (JSON allows it) still makes a body, which the sink may refuse
    data = json.dumps(sink.body(text, doc)).encode('ascii')
    request = urllib.request.Request(sink.url, data=data, method='POST',
                                     headers={'Content-Type': 'application/json; charset=utf-8',
                                              'User-Agent': 'ib-jobs-notify'})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(64 * 1024)
            return Sent('sent', f'HTTP {response.status}')
    except urllib.error.HTTPError as exc:
        answer = _answer(exc)
        state: SendState = 'failed' if exc.code >= 500 or exc.code in RETRYABLE_4XX else 'rejected'
        return Sent(state, _detail(sink, f'HTTP {exc.code}{": " + answer if answer else ""}'))
    except (TimeoutError, socket.timeout):
        return Sent('failed', f'no answer within {timeout:g} s')
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return Sent('failed', f'no answer within {timeout:g} s')
        return Sent('failed', _detail(sink, f'{type(reason).__name__}: {reason}'))
    except (OSError, ValueError, http.client.HTTPException) as exc:   # a broken connection, an unusable URL, not HTTP
        return Sent('failed', _detail(sink, f'{type(exc).__name__}: {exc}'))


def _answer(exc: urllib.error.HTTPError) -> str:
    try:
        return exc.read(MAX_DETAIL_CHARS).decode('utf-8', 'replace').strip()
    except Exception:   # the body of an error answer is a courtesy
        return ''


def _detail(sink: Sink, text: str) -> str:
    # a sink's URL (with its token) can appear in an error text: masked like every logged value; and its path
    # and query alone, which an error page may echo ('Cannot POST /services/T0/B0/...'): for a webhook they are
    # the credential, while the environment knows only the whole URL
    text = ' '.join(text.split())
    parts = urllib.parse.urlsplit(sink.url)
    for form in sorted({sink.url, parts.path, parts.query, urllib.parse.unquote(parts.path)}, key=len, reverse=True):
        if len(form) > 1 and form in text:
            text = text.replace(form, log.MASK)
    text = log.redact(text)
    return text if len(text) <= MAX_DETAIL_CHARS else text[:MAX_DETAIL_CHARS - 1] + '…'
