"""Local runner: `python -m functions run INTENT` sends a Pub/Sub-shaped event through the real handler.

Without IB_GATEWAY_HOST the bundled simulator is started in this process on a free port, so a
fresh machine needs nothing else. `python -m functions render` prints result documents (from stdin)
the way `run` does; `python -m functions schemas` regenerates schemas/*.json.
`python -m functions trading status|on|off` shows or flips trading enabled in the function's store.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import os
import shlex
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
from functions.contract import IntentResult, accepted_keys, request_schema, result_schema
from functions.handler import TransientFailure, handle
from functions import history
from functions.render import documents_in, history_line, render_result
from intents.registry import get_intent, intent_names
from lib import log
from lib.config import ConfigError, HistorySettings, Settings, StoreSettings
from lib.store import StoreUnavailable
from lib.times import parse_instant

SCHEMA_DIR = Path(__file__).resolve().parent.parent / 'schemas'
SUCCESS_STATUSES = ('ok', 'skipped', 'duplicate')
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DEGRADED = 0, 1, 2, 3
LOCAL_PROJECT = 'local'
DEFAULT_SIMULATOR_STATE = Path('.local') / 'simulator.json'
GATEWAY_HINT = ('is IB Gateway or TWS running with the API enabled, and are IB_GATEWAY_HOST and IB_GATEWAY_PORT '
                'right? The usual ports: IB Gateway 4002 (paper) and 4001 (live), TWS 7497 (paper) and 7496 (live).')


class UsageError(Exception):
    """Bad command-line input; printed without a traceback, exit code 2."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m functions`; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == 'schemas':
            return write_schemas(check=args.check)
        if args.command == 'trading':
            from functions.trading_switch import run_trading_command
            return run_trading_command(args.action, as_json=args.json, yes=args.yes, out=sys.stdout, err=sys.stderr)
        if args.command == 'render':
            return render(args)
        if args.command in ('history', 'show'):
            return show_history(args)
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
    if args.fresh and settings.gateway_host:
        raise UsageError('--fresh resets the bundled simulator; unset IB_GATEWAY_HOST to use it')
    log.configure(stream=sys.stderr, level=settings.logging.level or 'WARNING', settings=settings.logging)
    request = {'intent': args.intent, 'params': params, 'dryRun': args.dry_run}
    if args.idempotency_key:
        request['idempotencyKey'] = args.idempotency_key
    if window is not None:
        request['window'] = window
    if args.approval:
        request['approval'] = 'required'

    def output(result: IntentResult, run_settings: Settings) -> None:
        sys.stdout.write(log.mask_json(result.to_json()) + '\n' if args.json
                         else log.redact(render_result(log.mask(result.to_wire()), wide=args.wide)
                                         + _local_approval(result)))
        sys.stdout.flush()
        if run_settings.results_topic:
            publisher.publish_result(result, run_settings)

    with _gateway(settings, args.sim_time, fresh=args.fresh) as run_settings:
        try:
            result = handle(pubsub_push_event(request, project=run_settings.project or LOCAL_PROJECT),
                            run_settings, publish=output)
        except TransientFailure as exc:
            result = exc.result
            if result.error and result.error.type == 'GatewayUnavailable':
                print(f'hint: {GATEWAY_HINT}', file=sys.stderr)
        except publisher.PublishFailed as exc:
            print(f'error: {exc}', file=sys.stderr)
            return EXIT_FAILED
    return exit_code(result)


def _local_approval(result: IntentResult) -> str:
    """For a plan: the command that executes it here, against the same gateway and store."""
    plan = (result.result or {}).get('plan')
    if not isinstance(plan, dict) or not plan.get('planId'):
        return ''
    params = json.dumps({'planId': plan['planId']})
    return f'  or here: ./run execute-plan --params {shlex.quote(params)}\n'


def exit_code(result: IntentResult) -> int:
    """0 clean (ok, skipped, duplicate), 3 degraded (the same, with result.degraded), 1 failed (error, rejected)."""
    if result.status not in SUCCESS_STATUSES:
        return EXIT_FAILED
    return EXIT_DEGRADED if (result.result or {}).get('degraded') else EXIT_OK


def render(args: argparse.Namespace) -> int:
    """Print the result documents read from stdin as `run` prints its own."""
    try:
        documents = documents_in(sys.stdin.read())
    except ValueError as exc:
        raise UsageError(f'cannot read the results on stdin: {exc}') from None
    if not documents:
        raise UsageError('no result documents on stdin (one JSON document per line, or the output of '
                         '`gcloud pubsub subscriptions pull --format=json`)')
    for number, doc in enumerate(documents):
        if number:
            sys.stdout.write('\n')
        sys.stdout.write(log.redact(render_result(log.mask(doc), wide=args.wide)))
    return EXIT_OK


def show_history(args: argparse.Namespace) -> int:
    """`history`: the last runs kept in the store, one line each; `show RUN_ID`: one of them in full."""
    try:
        store = StoreSettings.from_env()
        if args.command == 'show':
            doc = history.find(store, args.run_id)
            if doc is None:
                raise UsageError(f'no run {args.run_id!r} in the history of {_store_name(store)} (kept '
                                 f'{HistorySettings.from_env().days:g} days; `history` lists what is there)')
            sys.stdout.write(json.dumps(doc) + '\n' if args.json
                             else log.redact(render_result(log.mask(doc), wide=args.wide)))
            return EXIT_OK
        docs = history.recent(store, args.last, args.intent)
    except (StoreUnavailable, ConfigError) as exc:
        raise UsageError(f'cannot read the history: {exc}') from None
    if args.json:
        sys.stdout.write(''.join(json.dumps(doc) + '\n' for doc in docs))
        return EXIT_OK
    if not docs:
        print(f'no runs{f" of {args.intent}" if args.intent else ""} in the history of {_store_name(store)}')
        return EXIT_OK
    for doc in docs:
        print(log.redact(history_line(log.mask(doc))))
    return EXIT_OK


def _store_name(store: StoreSettings) -> str:
    if store.backend == 'firestore':
        return f'Firestore {store.project}/{store.database}'
    return store.sqlite_path


def intents_help() -> str:
    """Every intent with a line of what it does and its params (wire names, types, defaults, meaning)."""
    lines = ['intents (params as --params JSON; the README has the details):']
    for name in intent_names():
        cls = get_intent(name)
        about = (sys.modules[cls.__module__].__doc__ or '').strip().split('\n')[0]
        about = about.split(':', 1)[1].strip() if about.startswith('The `') and ':' in about else about
        lines.append(f'  {name:<22}{about}')
        for field_name, field in cls.Params.model_fields.items():
            wire = field.alias or field_name
            default = '' if field.is_required() else f' = {json.dumps(field.get_default(call_default_factory=True))}'
            keys = accepted_keys(cls.Params, (wire,))
            shape = f'  {{{", ".join(keys)}}}' if keys else ''
            lines.append(f'      {wire}{default}{shape}' + (f'  {field.description}' if field.description else ''))
    return '\n'.join(lines)


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
def _gateway(settings: Settings, sim_time: datetime | None, fresh: bool = False) -> Iterator[Settings]:
    """The settings to run with: as given, or pointing at a simulator started here for the run.

    The bundled simulator keeps its accounts, orders and executions in SIMULATOR_STATE (default
    .local/simulator.json), so `./run allocation` then `./run summary` shows the positions; `fresh`
    starts it from a clean account.
    """
    if settings.gateway_host:
        yield settings
        return
    from simulator import Simulator   # only local runs without a gateway need it

    state = Path(os.environ.get('SIMULATOR_STATE') or DEFAULT_SIMULATOR_STATE)
    if fresh and state.exists():
        state.unlink()
        print(f'--fresh: removed the simulator state {state}', file=sys.stderr)
    state.parent.mkdir(parents=True, exist_ok=True)
    with Simulator(time=sim_time, state_file=state) as sim:
        print(f'no IB_GATEWAY_HOST: using the bundled simulator (a paper IB Gateway, not IB) on {sim.host}:'
              f'{sim.port}; its state is kept in {state} (--fresh for a clean account)', file=sys.stderr)
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


def _count(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f'expected a whole number from 1 to 1000, got {raw!r}')
    return value


def _iso_time(raw: str) -> datetime:
    try:
        return parse_instant(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not an ISO 8601 time: {raw!r}') from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m functions', description=__doc__.split('\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)
    run_cmd = commands.add_parser('run', help='run one intent locally, exactly as a Pub/Sub message would',
                                  epilog=intents_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    run_cmd.add_argument('intent', help='intent name, e.g. summary or health')
    run_cmd.add_argument('--params', default='{}', help='intent parameters as a JSON object')
    run_cmd.add_argument('--dry-run', action='store_true', help='plan and report, place no orders')
    run_cmd.add_argument('--json', action='store_true', help='print the result document only, as one JSON line')
    run_cmd.add_argument('--wide', action='store_true', help='every column and section, however wide')
    run_cmd.add_argument('--approval', action='store_true',
                         help='approval "required": plan only (allocation, close-all, cash-balancer), print the plan '
                              'and the command that executes it')
    run_cmd.add_argument('--idempotency-key', help='business key of the request')
    run_cmd.add_argument('--window', help='run only within part of the trading session, as JSON: '
                                          '\'{"beforeClose": 900}\' or \'{"afterOpen": 600}\' (seconds)')
    run_cmd.add_argument('--fresh', action='store_true',
                         help='start the bundled simulator from a clean account (its state is kept between runs)')
    run_cmd.add_argument('--sim-time', type=_iso_time,
                         help="simulated gateway clock for the bundled simulator (ISO 8601; no offset means UTC)")
    render_cmd = commands.add_parser('render', help='print result documents from stdin as `run` does (one JSON '
                                                    'per line, or `gcloud pubsub subscriptions pull --format=json`)')
    render_cmd.add_argument('--wide', action='store_true', help='every column and section, however wide')
    history_cmd = commands.add_parser('history', help='the last runs kept in the store (STORE_BACKEND, SQLITE_PATH '
                                                      'or GOOGLE_CLOUD_PROJECT/FIRESTORE_DATABASE, as the function)')
    history_cmd.add_argument('--last', type=_count, default=20, help='how many runs (default 20)')
    history_cmd.add_argument('--intent', help='only runs of this intent')
    history_cmd.add_argument('--json', action='store_true', help='one result document per line')
    show_cmd = commands.add_parser('show', help='one run of the history in full, as `run` prints it')
    show_cmd.add_argument('run_id', help='the runId, as `history` lists it')
    show_cmd.add_argument('--json', action='store_true', help='the result document as one JSON line')
    show_cmd.add_argument('--wide', action='store_true', help='every column and section, however wide')
    schemas_cmd = commands.add_parser('schemas', help='regenerate schemas/*.json from the message models')
    schemas_cmd.add_argument('--check', action='store_true', help='only report whether the files are up to date')
    trading_cmd = commands.add_parser('trading', help="show or flip trading enabled in the function's store")
    trading_cmd.add_argument('action', choices=('status', 'on', 'off'),
                             help='status: each source and the effective value; on / off: write it to the store')
    trading_cmd.add_argument('--json', action='store_true', help='print one JSON object')
    trading_cmd.add_argument('--yes', action='store_true', help='confirm `on` in live mode')
    return parser


if __name__ == '__main__':
    sys.exit(main())
