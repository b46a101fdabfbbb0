"""The message contract: what an intent request and its result look like on the wire.

Field names are camelCase on the wire and snake_case in Python. `decode_message` turns the
CloudEvent functions-framework hands us into a validated `IntentRequest` plus the Pub/Sub
envelope (messageId, publishTime, attributes).
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from intents.outcome import Status
from lib.times import parse_instant
from trading.session_window import SessionWindow

RESULT_SCHEMA = 'intent-result/v1'
MAX_MESSAGE_ID_CHARS = 200          # Pub/Sub's are ~16 digits; a longer one is cut, not echoed whole
INTENT_NAME_PATTERN = r'^[a-z][a-z0-9_-]{0,63}$'


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in code; unknown keys are an error."""

    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=to_camel),
        field_title_generator=lambda name, _info: to_camel(name.rstrip('_')),
        populate_by_name=True,
        extra='forbid',
        strict=True,
        json_schema_serialization_defaults_required=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-compatible dict with camelCase keys."""
        return self.model_dump(mode='json', by_alias=True)

    def to_json(self) -> str:
        """One line of JSON with camelCase keys."""
        return self.model_dump_json(by_alias=True)


class Window(WireModel):
    """Run only within part of today's trading session of the contracts the run would trade."""

    model_config = ConfigDict(title='Window')

    before_close: float | None = Field(None, gt=0, allow_inf_nan=False,
                                       description="Run only within this many seconds before today's close.")
    after_open: float | None = Field(None, gt=0, allow_inf_nan=False,
                                     description="Run only within this many seconds after today's open.")

    @model_validator(mode='after')
    def _exactly_one(self) -> Window:
        if (self.before_close is None) == (self.after_open is None):
            raise ValueError('give exactly one of beforeClose or afterOpen (seconds > 0)')
        return self

    def session_window(self) -> SessionWindow:
        """The runtime's form of this window."""
        return SessionWindow(before_close=self.before_close, after_open=self.after_open)


class IntentRequest(WireModel):
    """The data of a message on the intents topic."""

    model_config = ConfigDict(title='IntentRequest')

    intent: str = Field(pattern=INTENT_NAME_PATTERN,
                        description='Name of a registered intent, e.g. "summary" or "health".')
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="The intent's parameters; each intent declares the keys it accepts.")
    dry_run: bool = Field(False, description='Plan and report, but place no orders.')
    idempotency_key: str | None = Field(None, min_length=1, max_length=256,
                                        description='Business key: a second request with the same key does not act again.')
    max_age_seconds: float | None = Field(None, gt=0, allow_inf_nan=False,
                                          description='Reject, never run, a message published longer ago than this '
                                                      '(order intents: ORDER_MAX_AGE_SECONDS applies too).')
    approval: Literal['none', 'required'] = Field(
        'none', description='"required": plan only (account lease, targets, limits, market hours, whatIf), store the '
                            'plan and publish it with the command that approves it; nothing is placed until an '
                            'execute-plan request names it. Order-placing intents only (allocation, close-all, '
                            'cash-balancer); a trading config that requires approval wins over "none".')
    window: Window | None = Field(None, description='Run only within this part of the trading session, judged on '
                                                    "the gateway's clock against the liquid hours it reports; "
                                                    'outside it the result is skipped and nothing is placed.')


class Timings(WireModel):
    """Where the time went, in milliseconds."""

    queue_ms: float | None = Field(None, description="From the message's publishTime to the start of this run.")
    connect_ms: float | None = Field(None, description='Connecting to the gateway, clientId retries included.')
    intent_ms: float | None = Field(None, description='Running the intent once connected.')


class Gateway(WireModel):
    """The gateway connection the run used."""

    host: str | None = None
    port: int | None = None
    client_id: int | None = None
    server_version: int | None = None


class ErrorInfo(WireModel):
    """Why a run did not succeed, and whether delivering the message again could help."""

    type: str
    message: str
    retryable: bool


# One entry of result.problems (lib/problems.py builds them; README "Problems" says what each code means).
PROBLEM_SCHEMA = {
    'title': 'Problem',
    'description': 'Something that went wrong in a run. Order codes (order-*) make the status error; any other '
                   'code is a strategy or data problem and sets result.degraded.',
    'type': 'object',
    'properties': {
        'code': {'type': 'string', 'description': 'Stable kebab-case code, e.g. order-not-cancelled, no-price.'},
        'message': {'type': 'string'},
        'contract': {'type': 'object', 'description': 'The contract it is about, when it is about one.'},
        'orderRef': {'type': 'string', 'description': 'The order it is about, when it is about one.'},
    },
    'required': ['code', 'message'],
}


class IntentResult(WireModel):
    """The document published on the results topic for every message handled."""

    model_config = ConfigDict(title='IntentResult')

    schema_: Literal['intent-result/v1'] = Field(RESULT_SCHEMA, alias='schema')
    run_id: str = Field(description='Unique id of this run (a redelivered message gets a new one).')
    message_id: str | None = Field(description='Pub/Sub messageId of the request.')
    idempotency_key: str | None = None
    intent: str | None = Field(description='Intent name; null when the message could not be read.')
    status: Status
    dry_run: bool
    trading_mode: Literal['paper', 'live']
    account: str | None
    started_at: datetime
    finished_at: datetime
    duration_ms: float
    timings: Timings
    gateway: Gateway | None
    result: dict[str, Any] | None = Field(
        description='Intent-specific output. Every result the handler publishes has one, with `problems` and '
                    '`degraded`; an order-placing run lists its orders, whatever its status.',
        json_schema_extra={'properties': {'problems': {'type': 'array', 'items': PROBLEM_SCHEMA},
                                          'degraded': {'type': 'boolean'}},
                           'required': ['problems', 'degraded']})
    error: ErrorInfo | None


class InvalidMessage(ValueError):
    """The message cannot be turned into an IntentRequest; `error_type` names the cause."""

    def __init__(self, error_type: str, message: str, envelope: Envelope, intent: str | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.envelope = envelope
        self.intent = intent


@dataclass(frozen=True)
class Envelope:
    """What Pub/Sub says about the message, independent of its data."""

    message_id: str | None
    publish_time: datetime | None
    attributes: dict[str, str] = field(default_factory=dict)
    data: str | None = None          # base64 as delivered


@dataclass(frozen=True)
class Decoded:
    """A message whose data is a valid request."""

    envelope: Envelope
    request: IntentRequest

    @property
    def message_id(self) -> str | None:
        return self.envelope.message_id

    @property
    def publish_time(self) -> datetime | None:
        return self.envelope.publish_time

    def age_seconds(self, now: datetime) -> float | None:
        """Wall-clock seconds since publication, or None when the publish time is unknown."""
        if self.publish_time is None:
            return None
        return (now - self.publish_time).total_seconds()


def read_envelope(cloud_event: Any) -> Envelope:
    """Messageid, publishTime and attributes from a Pub/Sub CloudEvent (Eventarc or converted push)."""
    data = cloud_event.data if isinstance(cloud_event.data, dict) else {}
    message = data.get('message') if isinstance(data.get('message'), dict) else {}
    attributes = message.get('attributes') if isinstance(message.get('attributes'), dict) else {}
    message_id = message.get('messageId') or message.get('message_id') or _attribute(cloud_event, 'id')
    published = (_parse_time(message.get('publishTime') or message.get('publish_time'))
                 or _parse_time(_attribute(cloud_event, 'time')))
    raw = message.get('data')
    return Envelope(
        message_id=safe_text(str(message_id), MAX_MESSAGE_ID_CHARS) if message_id else None,
        publish_time=published,
        attributes={safe_text(str(k)): safe_text(str(v)) for k, v in attributes.items()},
        data=raw if isinstance(raw, str) else None,
    )


def safe_text(text: str, limit: int | None = None) -> str:
    """`text` as something every encoder takes: lone surrogates become `\\udxxx` escapes, and beyond
    `limit` characters it is cut (marked with an ellipsis). Envelope strings go through here, so every
    message, however hostile its messageId or attributes, ends in a publishable result."""
    safe = text.encode('utf-8', 'backslashreplace').decode('utf-8') if _has_surrogate(text) else text
    if limit is not None and len(safe) > limit:
        safe = safe[:limit - 1] + '…'
    return safe


def _has_surrogate(text: str) -> bool:
    try:
        text.encode('utf-8')
    except UnicodeEncodeError:
        return True
    return False


def decode_message(cloud_event: Any) -> Decoded:
    """Validate the request carried by a Pub/Sub CloudEvent; raise InvalidMessage when it is unusable.

    Data is base64 of UTF-8 JSON. Empty data with an `intent` attribute is a request for that
    intent with no params (what Cloud Scheduler sends most simply).
    """
    envelope = read_envelope(cloud_event)
    if not envelope.data:
        named = envelope.attributes.get('intent')
        if not named:
            raise InvalidMessage('InvalidMessage', 'message has no data and no "intent" attribute', envelope)
        return Decoded(envelope, _validate({'intent': named}, envelope))
    try:
        raw = base64.b64decode(envelope.data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidMessage('InvalidMessage', f'message data is not valid base64: {exc}', envelope) from None
    try:
        payload = json.loads(raw.decode('utf-8'))
    except UnicodeDecodeError as exc:
        raise InvalidMessage('InvalidMessage', f'message data is not UTF-8: {exc}', envelope) from None
    except json.JSONDecodeError as exc:
        raise InvalidMessage('InvalidMessage', f'message data is not JSON: {exc}', envelope) from None
    except RecursionError:
        raise InvalidMessage('InvalidMessage', 'message data is JSON nested too deeply', envelope) from None
    if not isinstance(payload, dict):
        raise InvalidMessage('InvalidMessage',
                             f'message data must be a JSON object, got {type(payload).__name__}', envelope)
    return Decoded(envelope, _validate(payload, envelope))


def describe_validation_error(exc: ValidationError, prefix: str = '', model: type[BaseModel] | None = None) -> str:
    """A one-line summary: `field: problem; field: problem`.

    With the `model` that refused the input, an unknown key's problem lists the keys that model accepts there.
    """
    parts = []
    for error in exc.errors():
        location = '.'.join(str(part) for part in (prefix, *error['loc']) if part != '') or '(root)'
        problem = error['msg']
        if error['type'] == 'extra_forbidden' and model is not None:
            accepted = accepted_keys(model, error['loc'][:-1])
            problem = f'unknown key; accepted keys: {", ".join(accepted)}' if accepted else 'unknown key; none are accepted here'
        parts.append(f'{location}: {problem}')
    return '; '.join(parts)


def accepted_keys(model: type[BaseModel], path: tuple = ()) -> list[str]:
    """The wire names `model` accepts at `path` (a location inside it, as pydantic reports locations)."""
    for part in path:
        if isinstance(part, int):
            continue
        field = next((f for name, f in model.model_fields.items() if part in (name, f.alias)), None)
        nested = _model_in(field.annotation) if field is not None else None
        if nested is None:
            return []
        model = nested
    return sorted(field.alias or name for name, field in model.model_fields.items())


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation like `Model | None` or `list[Model]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in getattr(annotation, '__args__', ()):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def request_schema() -> dict[str, Any]:
    """JSON Schema of the request, as committed in schemas/intent-request.schema.json."""
    return _schema(IntentRequest, mode='validation')


def result_schema() -> dict[str, Any]:
    """JSON Schema of the result, as committed in schemas/intent-result.schema.json."""
    return _schema(IntentResult, mode='serialization')


def _schema(model: type[BaseModel], mode: Literal['validation', 'serialization']) -> dict[str, Any]:
    generated = model.model_json_schema(by_alias=True, mode=mode)
    return {'$schema': 'https://json-schema.org/draft/2020-12/schema', **generated}



def _validate(payload: dict[str, Any], envelope: Envelope) -> IntentRequest:
    try:
        return IntentRequest.model_validate(payload)
    except ValidationError as exc:
        named = payload.get('intent')
        # Only a well-formed name goes into the result: a huge or unencodable one would make it unpublishable.
        well_formed = isinstance(named, str) and re.fullmatch(INTENT_NAME_PATTERN, named)
        raise InvalidMessage('InvalidRequest', describe_validation_error(exc, model=IntentRequest), envelope,
                             intent=named if well_formed else None) from None


def _attribute(cloud_event: Any, name: str) -> Any:
    try:
        return cloud_event[name]
    except KeyError:
        return None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_instant(value)
    except ValueError:
        return None
