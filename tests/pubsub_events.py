"""Pub/Sub messages as the function receives them: the one place tests build them.

A message reaches a Cloud Function over HTTP in one of two shapes: Eventarc POSTs a binary-mode
CloudEvent (`ce-*` headers, the body `{"message": PubsubMessage, "subscription": ...}`), and a push
subscription aimed straight at the function POSTs the raw push body. functions-framework turns both
into the CloudEvent our handler gets: `cloudevents.http.from_http` for the first, and when that fails
`event_conversion.background_event_to_cloud_event` (functions_framework/__init__.py,
`_cloud_event_view_func_wrapper`). `pubsub_event` builds the HTTP request and converts it with that
same code, so a test's event is what the framework would hand the function. The parts (`pubsub_message`,
`push_body`, `eventarc_headers`) are what tests that POST to a real server send.
"""
from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timezone
from typing import Any

from cloudevents.exceptions import InvalidRequiredFields, MissingRequiredFields
from cloudevents.http import CloudEvent, from_http
from functions_framework import event_conversion
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from tests.emulators import PROJECT

TOPIC = 'intents'
EVENT_TYPE = 'google.cloud.pubsub.topic.v1.messagePublished'


def b64(data: Any) -> str:
    """Base64 of raw bytes, or of any other value as UTF-8 JSON: the `data` of a Pub/Sub message."""
    raw = data if isinstance(data, bytes) else json.dumps(data).encode('utf-8')
    return base64.b64encode(raw).decode('ascii')


def new_message_id() -> str:
    """A fresh messageId, digits like Pub/Sub's."""
    return str(uuid.uuid4().int)[:16]


def timestamp(when: datetime | None = None) -> str:
    """`when` (default now) as Pub/Sub writes publishTime: RFC 3339, milliseconds, Z."""
    return (when or datetime.now(timezone.utc)).isoformat(timespec='milliseconds').replace('+00:00', 'Z')


def pubsub_message(data: str | None, *, message_id: str | None = None, published: datetime | None = None,
                   attributes: dict[str, str] | None = None, snake_case: bool = False) -> dict[str, Any]:
    """A PubsubMessage as push bodies and Eventarc events carry it; `data` (base64 text) goes in as given,
    so tests can send garbage, and None leaves it out (a message of attributes only).

    snake_case adds the emulator's duplicates (`message_id`, `publish_time`) beside the camelCase keys.
    """
    message_id = message_id or new_message_id()
    stamp = timestamp(published)
    message: dict[str, Any] = {'attributes': attributes or {}, 'messageId': message_id, 'publishTime': stamp}
    if snake_case:
        message.update(message_id=message_id, publish_time=stamp)
    if data is not None:
        message['data'] = data
    return message


def push_body(message: dict[str, Any], *, project: str = PROJECT, topic: str = TOPIC) -> dict[str, Any]:
    """The body a push subscription (or Eventarc) POSTs for `message`."""
    return {'message': message, 'subscription': f'projects/{project}/subscriptions/{topic}-push'}


def eventarc_headers(event_id: str, time: str | None = None, *, project: str = PROJECT,
                     topic: str = TOPIC) -> dict[str, str]:
    """The `ce-*` headers of Eventarc's binary-mode CloudEvent for a message published on `topic`."""
    headers = {'Content-Type': 'application/json', 'ce-id': event_id, 'ce-specversion': '1.0',
               'ce-type': EVENT_TYPE, 'ce-source': f'//pubsub.googleapis.com/projects/{project}/topics/{topic}'}
    if time is not None:
        headers['ce-time'] = time
    return headers


def received_event(headers: dict[str, str], body: Any, path: str = '/') -> CloudEvent:
    """The CloudEvent functions-framework makes of a POST of `body` (JSON) with `headers` to `path`."""
    data = json.dumps(body).encode('utf-8')
    try:
        return from_http(headers, data)
    except (MissingRequiredFields, InvalidRequiredFields):
        request = Request(EnvironBuilder(path=path, method='POST', data=data, headers=headers).get_environ())
        return event_conversion.background_event_to_cloud_event(request)


def eventarc_event(body: Any, *, event_id: str | None = None, time: str | None = None, project: str = PROJECT,
                   topic: str = TOPIC) -> CloudEvent:
    """Eventarc's CloudEvent carrying `body` as given (any JSON value, for hostile envelopes)."""
    headers = eventarc_headers(event_id or new_message_id(), time, project=project, topic=topic)
    return received_event(headers, body)


def pubsub_event(data: str | None, *, message_id: str | None = None, published: datetime | None = None,
                 attributes: dict[str, str] | None = None, push: bool = False, project: str = PROJECT,
                 topic: str = TOPIC) -> CloudEvent:
    """The CloudEvent the function receives for one Pub/Sub message with `data` (base64 text, see `b64`).

    By default as Eventarc delivers it; with push, what functions-framework converts a push
    subscription's body into (that conversion refuses a message without data).
    """
    message = pubsub_message(data, message_id=message_id, published=published, attributes=attributes)
    body = push_body(message, project=project, topic=topic)
    if push:
        return received_event({'Content-Type': 'application/json'}, body, f'/projects/{project}/topics/{topic}')
    headers = eventarc_headers(message['messageId'], message['publishTime'], project=project, topic=topic)
    return received_event(headers, body)


def request_event(request: Any, **kwargs: Any) -> CloudEvent:
    """`pubsub_event` for a request document (sent as base64 JSON)."""
    return pubsub_event(b64(request), **kwargs)
