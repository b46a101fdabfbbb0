"""notify_result's lifecycle: one result from the `results` topic in, one short message to each sink, each once.

    notify(cloud_event)
      read      the result document (base64 JSON); unreadable → logged, acked (a redelivery reads it no better)
      filter    NOTIFY_STATUSES / NOTIFY_INTENTS (functions/notify_message.py); not wanted → acked
      deliver   for each configured sink (functions/sinks.py): take its delivery in the store (lib/store:
                start_delivery), send, record sent / rejected / failed (end_delivery)
      conclude  every sink sent or rejected → return (ack); one failed, or busy in another delivery → raise
                NotifyFailed (non-2xx: Pub/Sub delivers the result again, and only the sinks not done are sent)

A sink is tried at most NOTIFY_MAX_ATTEMPTS times (counted in the store, however many deliveries Pub/Sub
makes at once); after that the function still answers non-2xx without sending, so the subscription's
dead-letter policy moves the result to its dead-letter topic. A sink that rejects (4xx) is not tried again.
"""
from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from functions.contract import RESULT_SCHEMA, read_envelope
from functions.notify_message import message, passes
from functions.sinks import Sink, configured_sinks, send
from lib import log
from lib.config import LEASE_MARGIN_SECONDS, ConfigError, NotifySettings
from lib.store import Store, open_store

logger = log.get_logger(__name__)


class NotifyFailed(RuntimeError):
    """A sink has not taken the result yet: raised so the function answers non-2xx and Pub/Sub redelivers."""


@dataclass(frozen=True)
class Notified:
    """What one delivery of a result did: the result's id and each sink's answer (none when filtered out)."""

    result_id: str | None
    sinks: dict[str, str]      # sink -> sent | rejected | failed | done (earlier) | busy (another delivery) | gave-up


def notify(cloud_event: Any, settings: NotifySettings | None = None, *, store: Store | None = None) -> Notified:
    """Send the result the CloudEvent carries to every configured sink that has not taken it yet.

    Raises NotifyFailed (after recording every sink's answer) while some sink has not taken it.
    """
    log.ensure_configured()
    settings = settings or _settings_from_env()
    envelope = read_envelope(cloud_event)
    doc = _document(envelope.data)
    if doc is None:
        logger.error('message %s on the results topic is not a result document; acked, nothing sent',
                     envelope.message_id)
        return Notified(None, {})
    result_id = str(doc.get('runId') or envelope.message_id)
    with log.bind(runId=doc.get('runId'), intent=doc.get('intent'), messageId=envelope.message_id):
        if not passes(doc, settings):
            return Notified(result_id, {})
        sinks = configured_sinks(settings)
        if not sinks:
            logger.warning('a %s result passed the filters, but no sink is configured (NOTIFY_WEBHOOK_URL, '
                           'NOTIFY_SLACK_WEBHOOK_URL, NOTIFY_TELEGRAM_BOT_TOKEN)', doc.get('status'))
            return Notified(result_id, {})
        text = message(doc)
        store = store or open_store(settings.store)
        holder = str(uuid.uuid4())
        answers = {sink.name: _deliver(store, sink, text, doc, result_id, holder, settings) for sink in sinks}
        open_sinks = sorted(name for name, answer in answers.items() if answer in ('failed', 'busy', 'gave-up'))
        level = 'warning' if open_sinks else 'info'
        getattr(logger, level)('notified %s %s: %s', doc.get('intent'), doc.get('status'),
                               ', '.join(f'{name} {answer}' for name, answer in answers.items()),
                               extra={'fields': {'sinks': answers}})
        if open_sinks:
            raise NotifyFailed(f'not yet taken by {", ".join(open_sinks)}: Pub/Sub delivers the result again')
        return Notified(result_id, answers)


def _deliver(store: Store, sink: Sink, text: str, doc: dict[str, Any], result_id: str, holder: str,
             settings: NotifySettings) -> str:
    """One sink: take its delivery, send unless done, busy or out of attempts, record the answer."""
    lease = 3 * settings.timeout + LEASE_MARGIN_SECONDS      # urllib's timeout is per step: connect, send, read
    start = store.start_delivery(result_id, sink.name, holder, lease, _now())
    if not start.held:
        return 'done' if start.delivery.state in ('sent', 'rejected') else 'busy'
    if start.delivery.attempts > settings.max_attempts:
        store.end_delivery(result_id, sink.name, holder, 'failed',
                           f'gave up after {settings.max_attempts} attempts (NOTIFY_MAX_ATTEMPTS)', _now())
        logger.error('%s: gave up after %d attempts, last: %s; the result goes to the dead-letter topic',
                     sink.name, settings.max_attempts, start.delivery.detail)
        return 'gave-up'
    sent = send(sink, text, doc, settings.timeout)
    if not store.end_delivery(result_id, sink.name, holder, sent.state, sent.detail, _now()):
        logger.warning('%s: the delivery lease ran out while sending (%s); another delivery took it over',
                       sink.name, sent.detail)
    if sent.state == 'rejected':
        logger.error('%s refused the notification, not retried: %s', sink.name, sent.detail)
    elif sent.state == 'failed':
        logger.warning('%s: attempt %d failed: %s', sink.name, start.delivery.attempts, sent.detail)
    return sent.state


def _document(data: str | None) -> dict[str, Any] | None:
    """The result document in the message data, or None when it is not one."""
    if not data:
        return None
    try:
        doc = json.loads(base64.b64decode(data, validate=True).decode('utf-8'))
    except (binascii.Error, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get('schema') != RESULT_SCHEMA or not isinstance(doc.get('status'), str):
        return None
    doc.setdefault('durationMs', 0.0)
    return doc


def checked_intents(settings: NotifySettings) -> NotifySettings:
    """`settings`, or ConfigError when NOTIFY_INTENTS names an intent that does not exist (it would filter out
    every result of the intent meant, silently)."""
    from intents.registry import intent_names

    unknown = sorted((settings.intents or frozenset()) - set(intent_names()))
    if unknown:
        raise ConfigError(f'NOTIFY_INTENTS is invalid: unknown {", ".join(unknown)}; '
                          f'expected some of {", ".join(intent_names())}')
    return settings


def _settings_from_env() -> NotifySettings:
    try:
        return checked_intents(NotifySettings.from_env())
    except ConfigError as exc:
        logger.critical('notification settings are invalid, so every result fails until they are fixed: %s', exc)
        raise


def _now() -> datetime:
    return datetime.now(timezone.utc)
