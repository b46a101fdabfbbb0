"""Local runner: `python -m functions run INTENT` sends a Pub/Sub-shaped event through the real handler.

Without IB_GATEWAY_HOST the bundled simulator is started in this process on a free port, so a
fresh machine needs nothing else. `python -m functions schemas` regenerates schemas/*.json.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import os
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from cloudevents.http import CloudEvent
from functions_framework import event_conversion
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

import lib.ibapi  # noqa: F401  (main thread import, see lib/ibapi.py)
from functions import publisher
from functions.contract import IntentResult, request_schema, result_schema
from functions.handler import TransientFailure, handle
from functions.render import render_result
from lib import log
from lib.config import ConfigError, Settings

SCHEMA_DIR = Path(__file__).resolve().parent.parent / 'schemas'
SUCCESS_STATUSES = ('ok', 'skipped', 'duplicate')
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DEGRADED = 0, 1, 2, 3
LOCAL_PROJECT = 'local'


class UsageError(Exception):
    """Bad command-line input; printed without a traceback, exit code 2."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m functions`; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == 'schemas':
            return write_schemas(check=args.check)
        return run(args)
    except UsageError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    """Run one intent through the handler and print its result; the exit code says how it went (exit_code)."""
    params = _parse_params(args.params)
    window = _parse_object(args.window, '--window', '\'{"beforeClose": 900}\'') if args.window else None
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if args.sim_time and settings.gateway_host:
        raise UsageError('--sim-time needs the bundled simulator; unset IB_GATEWAY_HOST to use it')
    log.configure(stream=sys.stderr, level=os.environ.get('LOG_LEVEL') or 'WARNING')
    request = {'intent': args.intent, 'params': params, 'dryRun': args.dry_run}
    if args.idempotency_key:
        request['idempotencyKey'] = args.idempotency_key
    if window is not None:
        request['window'] = window

    def output(result: IntentResult, run_settings: Settings) -> None:
        sys.stdout.write(log.mask_json(result.to_json()) + '\n' if args.json
                         else log.redact(render_result(log.mask(result.to_wire()))))
        sys.stdout.flush()
        if run_settings.results_topic:
            publisher.publish_result(result, run_settings)

    with _gateway(settings, args.sim_time) as run_settings:
        try:
            result = handle(pubsub_push_event(request, project=run_settings.project or LOCAL_PROJECT),
                            run_settings, publish=output)
        except TransientFailure as exc:
            result = exc.result
        except publisher.PublishFailed as exc:
            print(f'error: {exc}', file=sys.stderr)
            return EXIT_FAILED
    return exit_code(result)


def exit_code(result: IntentResult) -> int:
    """0 clean (ok, skipped, duplicate), 3 degraded (the same, with result.degraded), 1 failed (error, rejected)."""
    if result.status not in SUCCESS_STATUSES:
        return EXIT_FAILED
    return EXIT_DEGRADED if (result.result or {}).get('degraded') else EXIT_OK


def pubsub_push_event(request: dict[str, Any], *, project: str, topic: str = 'intents',
                      attributes: dict[str, str] | None = None) -> CloudEvent:
    """The CloudEvent functions-framework makes of a Pub/Sub push carrying `request` as data."""
    now = datetime.now(timezone.utc).isoformat(timespec='milliseconds').replace('+00:00', 'Z')
    message_id = f'local-{uuid.uuid4().hex[:16]}'
    body = {
        'subscription': f'projects/{project}/subscriptions/{topic}-local',
        'message': {
            'data': base64.b64encode(json.dumps(request).encode('utf-8')).decode('ascii'),
            'attributes': attributes or {},
            'messageId': message_id,
            'publishTime': now,
        },
    }
    http_request = Request(EnvironBuilder(path=f'/projects/{project}/topics/{topic}', method='POST',
                                          json=body).get_environ())
    return event_conversion.background_event_to_cloud_event(http_request)


def write_schemas(check: bool = False) -> int:
    """Write schemas/*.json from the models; with check, report drift instead of writing."""
    stale = []
    for name, schema in (('intent-request.schema.json', request_schema()),
                         ('intent-result.schema.json', result_schema())):
        path = SCHEMA_DIR / name
        text = json.dumps(schema, indent=2) + '\n'
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        SCHEMA_DIR.mkdir(exist_ok=True)
        path.write_text(text)
        print(f'wrote {path}')
    if stale:
        print('out of date (run `python -m functions schemas`): ' + ', '.join(stale), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


@contextlib.contextmanager
def _gateway(settings: Settings, sim_time: datetime | None) -> Iterator[Settings]:
    """The settings to run with: as given, or pointing at a simulator started here for the run."""
    if settings.gateway_host:
        yield settings
        return
    from simulator import Simulator   # only local runs without a gateway need it

    with Simulator(time=sim_time) as sim:
        print(f'no IB_GATEWAY_HOST: using the bundled simulator on {sim.host}:{sim.port}', file=sys.stderr)
        yield dataclasses.replace(settings, gateway_host=sim.host, gateway_port=sim.port)


def _parse_params(raw: str) -> dict[str, Any]:
    return _parse_object(raw, '--params', '\'{"key": 1}\'')


def _parse_object(raw: str, option: str, example: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageError(f'{option} is not valid JSON ({exc}): {raw!r}') from None
    if not isinstance(value, dict):
        raise UsageError(f'{option} must be a JSON object like {example}, got {type(value).__name__}')
    return value


def _iso_time(raw: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(raw.replace('Z', '+00:00'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'not an ISO 8601 time: {raw!r}') from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m functions', description=__doc__.split('\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)
    run_cmd = commands.add_parser('run', help='run one intent locally, exactly as a Pub/Sub message would')
    run_cmd.add_argument('intent', help='intent name, e.g. summary or health')
    run_cmd.add_argument('--params', default='{}', help='intent parameters as a JSON object')
    run_cmd.add_argument('--dry-run', action='store_true', help='plan and report, place no orders')
    run_cmd.add_argument('--json', action='store_true', help='print the result document only, as one JSON line')
    run_cmd.add_argument('--idempotency-key', help='business key of the request')
    run_cmd.add_argument('--window', help='run only within part of the trading session, as JSON: '
                                          '\'{"beforeClose": 900}\' or \'{"afterOpen": 600}\' (seconds)')
    run_cmd.add_argument('--sim-time', type=_iso_time,
                         help="simulated gateway clock for the bundled simulator (ISO 8601; no offset means UTC)")
    schemas_cmd = commands.add_parser('schemas', help='regenerate schemas/*.json from the message models')
    schemas_cmd.add_argument('--check', action='store_true', help='only report whether the files are up to date')
    return parser


if __name__ == '__main__':
    sys.exit(main())
