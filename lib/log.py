"""Logging: JSON lines Cloud Logging understands, labels bound per run, secrets masked.

One JSON object per line: ``severity``, ``message``, ``time`` and the labels bound with `bind`
under ``logging.googleapis.com/labels``. On a terminal the same records read as plain text.
Values of environment variables whose names look secret are masked in every line written: in the
record's text and fields before they are encoded, and again in the encoded line in every form an encoder
may have turned them into (JSON escapes, Python repr escapes, percent- and base64-encoding).
"""
from __future__ import annotations

import base64
import contextlib
import contextvars
import functools
import json as jsonlib
import logging
import sys
import threading
import traceback
import urllib.parse
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping, TextIO

from lib.config import LoggingSettings, environment

LABELS_KEY = 'logging.googleapis.com/labels'
# The IB client libraries log every connect, order update and fill at INFO; IB_CLIENT_LOG_LEVEL turns them up.
CLIENT_LIBRARY_LOGGERS = ('ib_insync', 'ib_async')
DEFAULT_CLIENT_LOG_LEVEL = 'WARNING'
# WEBHOOK: a webhook URL is its own credential (NOTIFY_WEBHOOK_URL, NOTIFY_SLACK_WEBHOOK_URL).
SECRET_NAME_PARTS = ('PASSWORD', 'SECRET', 'TOKEN', 'KEY', 'CREDENTIAL', 'WEBHOOK')
MASK = '***'
# Shorter values would mask ordinary words and digits everywhere; no real secret is that short.
MIN_SECRET_LENGTH = 4

_labels: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar('log_labels', default={})
_configure_lock = threading.RLock()


def get_logger(name: str) -> logging.Logger:
    """The logger for a module; records carry the labels bound where they are emitted."""
    return logging.getLogger(name)


@contextlib.contextmanager
def bind(**labels: object) -> Iterator[None]:
    """Add labels (runId, intent, messageId, clientId, ...) to every record logged inside the block.

    Labels live in a context variable, so they follow `contextvars.copy_context()` into threads.
    None values are left out.
    """
    merged = {**_labels.get(), **{k: str(v) for k, v in labels.items() if v is not None}}
    token = _labels.set(merged)
    try:
        yield
    finally:
        _labels.reset(token)


def current_labels() -> dict[str, str]:
    """The labels bound in the current context."""
    return dict(_labels.get())


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names contain PASSWORD, SECRET, TOKEN, KEY, CREDENTIAL or WEBHOOK."""
    env = environment() if environ is None else environ
    names = _secret_names(tuple(env))
    found = {value for value in (env.get(name, '') for name in names) if len(value) >= MIN_SECRET_LENGTH}
    return sorted(found, key=len, reverse=True)   # longest first, so a secret containing another is masked whole


@functools.lru_cache(maxsize=8)
def _secret_names(names: tuple[str, ...]) -> tuple[str, ...]:
    # Every log line is redacted: matching the names once per set of variables keeps that cheap,
    # while the values are still read at each call, so late-set secrets count too.
    return tuple(name for name in names if any(part in name.upper() for part in SECRET_NAME_PARTS))


def redact(text: str) -> str:
    """Mask every secret value found in the environment (read now, so late-set secrets count too).

    Each value is masked as written and in its encoded forms (see `_text_forms`, `_encoded_forms`), so a
    secret that a JSON or repr encoder escaped is still found.
    """
    for form in _encoded_forms(tuple(secret_values())):
        if form in text:
            text = text.replace(form, MASK)
    return text


def mask(value: Any) -> Any:
    """`value` with every secret masked in its strings, keys included, through dicts, lists and tuples.

    Use it on a document before it is encoded; `redact` is the last line of defence on the encoded text.
    """
    secrets = secret_values()
    if not secrets:
        return value
    return _mask(value, _text_forms(tuple(secrets)))


def mask_json(text: str) -> str:
    """A JSON document with every secret masked in its decoded strings, then in its encoded text."""
    forms = _encoded_forms(tuple(secret_values()))
    if not any(form in text for form in forms):
        return text
    masked = jsonlib.dumps(mask(jsonlib.loads(text)), ensure_ascii=False, separators=(',', ':'))
    return redact(masked)


def _mask(value: Any, forms: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        for form in forms:
            if form in value:
                value = value.replace(form, MASK)
        return value
    if isinstance(value, Mapping):
        return {_mask(k, forms): _mask(v, forms) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_mask(item, forms) for item in value)
    return value


@functools.lru_cache(maxsize=8)
def _text_forms(secrets: tuple[str, ...]) -> tuple[str, ...]:
    # A value and what code makes of it inside a message: the inside of a Python repr or ascii()
    # (exception messages), percent-encoding (URLs) and base64 (basic auth). Longest first, so a form
    # that contains another is masked whole.
    forms: set[str] = set()
    for secret in secrets:
        raw = secret.encode('utf-8', 'surrogatepass')
        forms.update({
            secret,
            repr(secret)[1:-1],
            ascii(secret)[1:-1],
            urllib.parse.quote(raw, safe=''),
            urllib.parse.quote_plus(raw, safe=''),
            base64.b64encode(raw).decode().rstrip('='),
            base64.urlsafe_b64encode(raw).decode().rstrip('='),
        })
    return _longest_first(forms)


@functools.lru_cache(maxsize=8)
def _encoded_forms(secrets: tuple[str, ...]) -> tuple[str, ...]:
    # The text forms, and each as a JSON encoder writes it, with and without ASCII escapes.
    forms: set[str] = set()
    for form in _text_forms(secrets):
        forms.update({form, jsonlib.dumps(form)[1:-1], jsonlib.dumps(form, ensure_ascii=False)[1:-1]})
    return _longest_first(forms)


def _longest_first(forms: set[str]) -> tuple[str, ...]:
    return tuple(sorted((f for f in forms if len(f) >= MIN_SECRET_LENGTH), key=len, reverse=True))


class _LabelFilter(logging.Filter):
    """Copies the bound labels onto each record in the thread that emits it."""

    def filter(self, record: logging.LogRecord) -> bool:
        explicit = getattr(record, 'labels', None) or {}
        record.labels = {**_labels.get(), **{k: str(v) for k, v in explicit.items() if v is not None}}
        return True


class JsonFormatter(logging.Formatter):
    """One Cloud Logging structured entry per record; `extra={'fields': {...}}` adds payload keys."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f'{message}\n{"".join(traceback.format_exception(*record.exc_info)).rstrip()}'
        entry: dict[str, object] = mask(dict(getattr(record, 'fields', None) or {}))
        entry.update({
            'severity': record.levelname,
            'message': mask(message),
            'time': _iso(record.created),
            'logger': record.name,
            LABELS_KEY: mask(getattr(record, 'labels', {})),
            'logging.googleapis.com/sourceLocation': {
                'file': record.pathname, 'line': str(record.lineno), 'function': record.funcName},
        })
        return jsonlib.dumps(entry, default=str, separators=(',', ':'))


class TextFormatter(logging.Formatter):
    """A line a person reads: time, severity, message, labels, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_iso(record.created)[11:23], f'{record.levelname:<7}', mask(record.getMessage())]
        labels = mask(getattr(record, 'labels', {}))
        if labels:
            parts.append(' '.join(f'{k}={v}' for k, v in labels.items()))
        fields = mask(getattr(record, 'fields', None))
        if fields:
            parts.append(jsonlib.dumps(fields, default=str, separators=(',', ':')))
        line = '  '.join(parts)
        if record.exc_info:
            line = f'{line}\n{mask("".join(traceback.format_exception(*record.exc_info)).rstrip())}'
        return line


class _RedactingHandler(logging.Handler):
    """Writes formatted, redacted records to a stream; without one, to whatever sys.stdout is now."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__()
        self._stream = stream
        self.addFilter(_LabelFilter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = self._stream or sys.stdout
            stream.write(redact(self.format(record)) + '\n')
            stream.flush()
        except Exception:
            self.handleError(record)


def configure(json: bool | None = None, stream: TextIO | None = None, level: str | None = None,
              settings: LoggingSettings | None = None) -> None:
    """Route all logging through one redacting handler on the root logger.

    json None: JSON unless the stream is a terminal. stream None: sys.stdout at the time of each
    write. level: else the settings' LOG_LEVEL, default INFO; the IB client library's own loggers
    at IB_CLIENT_LOG_LEVEL, default WARNING. settings None: read from the environment now (the entry's
    first step: see lib.config). Calling it again replaces the previous setup instead of adding a second handler.
    """
    settings = settings if settings is not None else LoggingSettings.from_env()
    with _configure_lock:
        root = logging.getLogger()
        for existing in [h for h in root.handlers if isinstance(h, _RedactingHandler)]:
            root.removeHandler(existing)
        handler = _RedactingHandler(stream)
        target = stream or sys.stdout
        use_json = json if json is not None else not _is_tty(target)
        handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
        root.addHandler(handler)
        root.setLevel((level or settings.level or 'INFO').upper())
        client_level = (settings.client_level or DEFAULT_CLIENT_LOG_LEVEL).upper()
        for name in CLIENT_LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(client_level)


def ensure_configured() -> None:
    """Configure with the defaults unless `configure` already ran in this process."""
    with _configure_lock:
        if not any(isinstance(h, _RedactingHandler) for h in logging.getLogger().handlers):
            configure()


def _is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, 'isatty', None)
    return bool(isatty and isatty())


def _iso(created: float) -> str:
    return datetime.fromtimestamp(created, timezone.utc).isoformat(timespec='microseconds').replace('+00:00', 'Z')
