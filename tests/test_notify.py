"""notify_result against real local HTTP sinks that record what reaches them (no mocks): filters, each sink's
wire format, the message, secrets, and delivery under Pub/Sub's rules (2xx acks, anything else redelivers,
dead letters after maxDeliveryAttempts: tests/reliability/pubsub_model.py) with the per-sink records in the store.
Counts are taken at the recording server."""
from __future__ import annotations

import base64
import copy
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest
from werkzeug.serving import make_server

from functions.contract import result_schema
from functions.notify import NotifyFailed, notify
from lib.config import ConfigError, NotifySettings
from lib.store.sqlite import SqliteStore
from tests.pubsub_events import b64, pubsub_event, pubsub_message
from tests.reliability.pubsub_model import DeliveryPolicy, PushModel

REPO = Path(__file__).resolve().parents[1]
BOT_TOKEN = '123456:AAH-bot-token-zz9'

ORDER = {'orderRef': 'ibj:939f508734:756733', 'contract': {'conId': 756733, 'symbol': 'SPY', 'secType': 'STK',
                                                           'localSymbol': 'SPY', 'exchange': 'SMART', 'currency': 'USD'},
         'action': 'BUY', 'quantity': 636.0, 'orderType': 'MKT', 'lmtPrice': None, 'tif': 'DAY', 'algo': 'Adaptive',
         'strategies': {'spy-macd-vixy': 636.0}, 'expectedPrice': 628.72, 'notional': 399865.92, 'reduceOnly': False,
         'orderId': 12, 'clientId': 953, 'permId': 77001, 'status': 'Filled', 'filled': 636.0, 'remaining': 0.0,
         'avgFillPrice': 628.75, 'acknowledged': True, 'messages': []}


def result_doc(status: str = 'ok', intent: str = 'allocation', **changes: Any) -> dict[str, Any]:
    """A result document as the intents function publishes it (checked against the result schema)."""
    doc = {
        'schema': 'intent-result/v1', 'runId': f'run-{status}-{intent}', 'messageId': '1700000000000001',
        'idempotencyKey': 'auto:2026-12-03T15:45:00Z:f56b57e6889b0510', 'intent': intent, 'status': status,
        'dryRun': False, 'tradingMode': 'paper', 'account': 'DU1234567', 'startedAt': '2026-12-03T20:45:01Z',
        'finishedAt': '2026-12-03T20:45:02Z', 'durationMs': 1234.5,
        'timings': {'queueMs': 3.0, 'connectMs': 4.1, 'intentMs': 1200.0},
        'gateway': {'host': '10.128.0.9', 'port': 4004, 'clientId': 953, 'serverVersion': 176},
        'result': {'account': {'account': 'DU1234567', 'baseCurrency': 'USD', 'netLiquidation': 1000000.0},
                   'orders': [], 'problems': [], 'degraded': False},
        'error': None,
    }
    for key, value in changes.items():
        if key == 'result':
            doc['result'] = {**doc['result'], **value}
        else:
            doc[key] = value
    jsonschema.validate(doc, result_schema())
    return doc


def with_orders(**changes: Any) -> dict[str, Any]:
    return result_doc(result={'orders': [ORDER]}, **changes)


def errored(message: str = 'SPY: order rejected by the gateway', retryable: bool = True) -> dict[str, Any]:
    return result_doc('error', error={'type': 'OrdersRejected', 'message': message, 'retryable': retryable},
                      result={'orders': [{**ORDER, 'status': 'Inactive', 'filled': 0.0, 'avgFillPrice': None}],
                              'problems': [{'code': 'order-rejected', 'message': 'SPY: 201 Order rejected - margin',
                                            'orderRef': ORDER['orderRef']}]})


def planned() -> dict[str, Any]:
    approve = ('gcloud pubsub topics publish ib-jobs-intents '
               '--message=\'{"intent":"execute-plan","params":{"planId":"p-5e1c"}}\'')
    plan = {'planId': 'p-5e1c', 'expiresAt': '2026-12-03T21:00:02Z', 'approve': approve, 'limitsChecked': [],
            'orders': [{k: ORDER[k] for k in ('orderRef', 'contract', 'action', 'quantity', 'orderType', 'lmtPrice',
                                               'expectedPrice')},
                       {**{k: ORDER[k] for k in ('orderRef', 'orderType', 'lmtPrice')}, 'action': 'SELL',
                        'quantity': 40.0, 'contract': {'symbol': 'VIXY', 'localSymbol': 'VIXY'}, 'orderType': 'LMT',
                        'lmtPrice': 80.5, 'expectedPrice': 80.83}]}
    return result_doc(result={'plan': plan})


# --- a recording HTTP sink -----------------------------------------------------------------------------------

class Recorder(ThreadingHTTPServer):
    """Answers by path: /fail 500, /reject 400, /limited 429, /slow holds the answer until released, /delayed
    answers 200 after a moment; anything else 200. Records every request (path and JSON body)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(('127.0.0.1', 0), _Handler)
        self.requests: list[tuple[str, Any, bytes]] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, kwargs={'poll_interval': 0.02}, daemon=True)

    def url(self, path: str) -> str:
        return f'http://127.0.0.1:{self.server_address[1]}{path}'

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for recorded, _, _ in self.requests if recorded == path)

    def bodies(self, path: str) -> list[Any]:
        with self.lock:
            return [body for recorded, body, _ in self.requests if recorded == path]


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:   # noqa: N802 (http.server's name)
        raw = self.rfile.read(int(self.headers.get('Content-Length') or 0))
        with self.server.lock:
            self.server.requests.append((self.path, json.loads(raw), raw))
        if self.path == '/slow':
            self.server.release.wait(30)
        elif self.path == '/delayed':
            self.server.release.wait(0.5)     # long enough that a second delivery arrives while this one sends
        code = {'/fail': 500, '/reject': 400, '/limited': 429}.get(self.path, 200)
        answer = b'{"ok":true}' if code == 200 else b'{"ok":false,"description":"nope"}'
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def sink() -> Iterator[Recorder]:
    server = Recorder()
    server.thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / 'state.sqlite3')
    yield store
    store.close()


def settings_for(sink: Recorder, *, webhook: str | None = '/hook', slack: str | None = '/slack',
                 telegram: bool = True, **env: str) -> NotifySettings:
    values = {'NOTIFY_TIMEOUT_SECONDS': '2', **env}
    if webhook:
        values['NOTIFY_WEBHOOK_URL'] = sink.url(webhook)
    if slack:
        values['NOTIFY_SLACK_WEBHOOK_URL'] = sink.url(slack)
    if telegram:
        values.update(NOTIFY_TELEGRAM_BOT_TOKEN=BOT_TOKEN, NOTIFY_TELEGRAM_CHAT_ID='-100200300',
                      NOTIFY_TELEGRAM_API_BASE=sink.url('/tg/'))
    return NotifySettings.from_env(values)


def event(doc: dict[str, Any]):
    return pubsub_event(b64(doc), topic='results')


TELEGRAM_PATH = f'/tg/bot{BOT_TOKEN}/sendMessage'


# --- filters --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('doc, env, sent', [
    (result_doc('ok', 'summary'), {}, False),
    (result_doc('skipped'), {}, False),
    (result_doc('duplicate'), {}, False),
    (errored(), {}, True),
    (result_doc('rejected', error={'type': 'InvalidParams', 'message': 'params.x: unknown key', 'retryable': False}),
     {}, True),
    (with_orders(), {}, True),                              # tag: orders
    (with_orders(dryRun=True), {}, False),                  # a dry run placed nothing
    (planned(), {}, True),                                  # tag: planned
    (result_doc('ok', 'summary'), {'NOTIFY_STATUSES': 'ok'}, True),
    (errored(), {'NOTIFY_STATUSES': 'rejected'}, False),
    (with_orders(), {'NOTIFY_STATUSES': 'planned'}, False),
    (errored(), {'NOTIFY_INTENTS': 'close-all,cash-balancer'}, False),
    (errored(), {'NOTIFY_INTENTS': 'allocation'}, True),
], ids=lambda value: value.get('status') if isinstance(value, dict) and 'status' in value else None)
def test_only_results_that_pass_the_filters_are_sent(sink, store, doc, env, sent):
    settings = settings_for(sink, slack=None, telegram=False, **env)
    notify(event(doc), settings, store=store)
    assert sink.count('/hook') == (1 if sent else 0)


def test_bad_filter_settings_name_the_variable():
    with pytest.raises(ConfigError, match='NOTIFY_STATUSES.*unknown errors'):
        NotifySettings.from_env({'NOTIFY_STATUSES': 'errors'})
    with pytest.raises(ConfigError, match='NOTIFY_TELEGRAM_BOT_TOKEN and NOTIFY_TELEGRAM_CHAT_ID'):
        NotifySettings.from_env({'NOTIFY_TELEGRAM_BOT_TOKEN': BOT_TOKEN})
    with pytest.raises(ConfigError, match='NOTIFY_SLACK_WEBHOOK_URL') as raised:
        NotifySettings.from_env({'NOTIFY_SLACK_WEBHOOK_URL': 'hooks.slack.com/services/T0/B0/secretpart'})
    assert 'secretpart' not in str(raised.value)
    assert 'hooks' not in repr(NotifySettings.from_env({'NOTIFY_SLACK_WEBHOOK_URL': 'https://hooks.slack.com/x'}))


# --- wire formats and the message -----------------------------------------------------------------------------

def test_each_sink_receives_one_message_in_its_wire_format(sink, store):
    doc = errored()
    answer = notify(event(doc), settings_for(sink), store=store)

    assert answer.sinks == {'webhook': 'sent', 'slack': 'sent', 'telegram': 'sent'}
    [hook], [slack], [telegram] = sink.bodies('/hook'), sink.bodies('/slack'), sink.bodies(TELEGRAM_PATH)
    assert set(hook) == {'text', 'result'} and hook['result'] == doc
    assert slack == {'text': hook['text']}
    assert telegram['chat_id'] == '-100200300' and telegram['text'] == hook['text']
    text = hook['text']
    assert text.startswith('allocation: ERROR')
    for part in ('OrdersRejected: SPY: order rejected by the gateway', 'account DU1234567 (paper)', 'NLV 1,000,000 USD',
                 'BUY 636 SPY — Inactive', '201 Order rejected - margin',
                 'will be retried: Pub/Sub delivers the request again', 'run run-error-allocation'):
        assert part in text, (part, text)
    assert [(d.sink, d.state, d.attempts) for d in store.deliveries('run-error-allocation')] == [
        ('slack', 'sent', 1), ('telegram', 'sent', 1), ('webhook', 'sent', 1)]


def test_the_message_of_placed_orders_gives_the_fill_price_and_of_a_final_error_says_not_retried(sink, store):
    notify(event(with_orders()), settings_for(sink, slack=None, telegram=False), store=store)
    notify(event(errored(retryable=False)), settings_for(sink, slack=None, telegram=False), store=store)
    placed, final = (body['text'] for body in sink.bodies('/hook'))
    assert 'orders placed:\n  BUY 636 SPY — Filled, filled 636 @ 628.75' in placed
    assert 'error OrdersRejected: not retried' in final


def test_a_plan_message_lists_its_orders_and_the_approve_command(sink, store):
    notify(event(planned()), settings_for(sink, webhook=None, telegram=False), store=store)
    [body] = sink.bodies('/slack')
    text = body['text']
    assert 'plan p-5e1c: 2 order(s), nothing placed; expires 2026-12-03T21:00:02Z' in text
    assert '  BUY 636 SPY — ref 628.72' in text and '  SELL 40 VIXY LMT 80.50 — ref 80.83' in text
    assert ('approve: gcloud pubsub topics publish ib-jobs-intents '
            '--message=\'{"intent":"execute-plan","params":{"planId":"p-5e1c"}}\'') in text


def test_a_real_rejected_result_of_the_intents_function_is_sent(sink, store, capsys):
    from functions.handler import handle
    from lib.config import Settings, StoreSettings
    from tests.pubsub_events import request_event

    settings = Settings(store=StoreSettings(sqlite_path=str(store.path)))
    doc = handle(request_event({'intent': 'allocation', 'params': {'bogus': 1}}), settings).to_wire()
    notify(event(json.loads(json.dumps(doc))), settings_for(sink, slack=None, telegram=False), store=store)
    [body] = sink.bodies('/hook')
    assert body['text'].startswith('allocation: REJECTED') and 'InvalidParams' in body['text']
    assert 'error InvalidParams: not retried' in body['text']


SECRET = 'pw"Zq9\\!x7#sécret/+'


def secret_forms(secret: str) -> set[str]:
    """The secret as written and as encoders write it: JSON (ASCII-escaped or not), repr, percent, base64."""
    raw = secret.encode('utf-8')
    forms = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], repr(secret)[1:-1],
             ascii(secret)[1:-1], urllib.parse.quote(raw, safe=''), urllib.parse.quote_plus(raw, safe=''),
             base64.b64encode(raw).decode().rstrip('='), base64.urlsafe_b64encode(raw).decode().rstrip('=')}
    return forms


def test_no_secret_of_the_environment_reaches_any_sink_in_any_encoding(sink, store, monkeypatch):
    monkeypatch.setenv('IB_PASSWORD', SECRET)
    monkeypatch.setenv('NOTIFY_TELEGRAM_BOT_TOKEN', BOT_TOKEN)
    raw = SECRET.encode()
    leaked = (f'login failed for {SECRET} (repr {SECRET!r}, ascii {ascii(SECRET)}, json {json.dumps(SECRET)}, '
              f'url {urllib.parse.quote(raw, safe="")}, basic {base64.b64encode(raw).decode()}, '
              f'token {BOT_TOKEN})')
    doc = errored(message=leaked)
    doc['result']['problems'][0]['message'] = f'{SECRET} in a problem'
    doc['account'] = SECRET
    notify(event(doc), settings_for(sink), store=store)

    assert len(sink.requests) == 3
    for _, _, body in sink.requests:
        text = body.decode('utf-8')
        found = [form for form in secret_forms(SECRET) | secret_forms(BOT_TOKEN) if form in text]
        assert found == [], f'secret in a sink body: {found}'
    assert '***' in sink.bodies('/slack')[0]['text']


def test_odd_unicode_and_huge_values_still_make_one_short_message(sink, store):
    doc = errored(message='\udc80 lone surrogate, emoji 🚀, RTL \u202e, NUL \x00 ' + 'x' * 100_000)
    notify(event(doc), settings_for(sink, telegram=False), store=store)
    [hook], [slack] = sink.bodies('/hook'), sink.bodies('/slack')
    assert '🚀' in slack['text'] and len(slack['text']) <= 3500
    assert hook['result']['error']['message'] == doc['error']['message']


# --- delivery: per-sink records, retries, rejections, timeouts --------------------------------------------------

def test_a_failing_sink_is_sent_again_on_redelivery_and_only_it(sink, store):
    settings = settings_for(sink, webhook='/hook', slack='/fail', telegram=False)
    doc = errored()
    for delivery in range(1, 3):
        with pytest.raises(NotifyFailed, match='slack'):
            notify(event(doc), settings, store=store)
        assert (sink.count('/hook'), sink.count('/fail')) == (1, delivery)
    states = {d.sink: (d.state, d.attempts, d.detail) for d in store.deliveries(doc['runId'])}
    assert states == {'webhook': ('sent', 1, 'HTTP 200'), 'slack': ('failed', 2, 'HTTP 500: {"ok":false,"description":"nope"}')}


def test_a_rejecting_sink_is_recorded_and_not_retried(sink, store):
    settings = settings_for(sink, webhook='/reject', slack=None, telegram=False)
    doc = errored()
    assert notify(event(doc), settings, store=store).sinks == {'webhook': 'rejected'}
    assert notify(event(doc), settings, store=store).sinks == {'webhook': 'done'}
    assert sink.count('/reject') == 1
    [record] = store.deliveries(doc['runId'])
    assert record.state == 'rejected' and record.detail.startswith('HTTP 400')


def test_rate_limited_and_slow_sinks_are_retried(sink, store):
    settings = settings_for(sink, webhook='/limited', slack='/slow', telegram=False, NOTIFY_TIMEOUT_SECONDS='0.5')
    with pytest.raises(NotifyFailed, match='slack, webhook'):
        notify(event(errored()), settings, store=store)
    states = {d.sink: (d.state, d.detail) for d in store.deliveries('run-error-allocation')}
    assert states['webhook'][0] == 'failed' and states['webhook'][1].startswith('HTTP 429')
    assert states['slack'] == ('failed', 'no answer within 0.5 s')


# --- the deployed shape: functions-framework, pushed to by a model of Pub/Sub -------------------------------------

@pytest.fixture
def notify_endpoint(tmp_path, monkeypatch) -> Iterator[str]:
    """functions-framework serving main.py's notify_result in this process, over HTTP (threaded, as deployed)."""
    import functions_framework

    monkeypatch.setenv('SQLITE_PATH', str(tmp_path / 'notify.sqlite3'))
    monkeypatch.setenv('STORE_BACKEND', 'sqlite')
    app = functions_framework.create_app(target='notify_result', source=str(REPO / 'main.py'),
                                         signature_type='cloudevent')
    server = make_server('127.0.0.1', 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.02}, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_port}/projects/test-project/topics/results'
    finally:
        server.shutdown()


def push(endpoint: str, doc: dict[str, Any], **policy: Any):
    message = pubsub_message(b64(doc))
    model = PushModel(endpoint, DeliveryPolicy(min_backoff=0.01, max_backoff=0.05, ack_deadline=30, **policy),
                      subscription='projects/test-project/subscriptions/results-notify')
    return model.deliver(message)


def test_a_failing_sink_is_tried_a_bounded_number_of_times_then_the_result_is_dead_lettered(
        sink, notify_endpoint, monkeypatch):
    monkeypatch.setenv('NOTIFY_WEBHOOK_URL', sink.url('/hook'))
    monkeypatch.setenv('NOTIFY_SLACK_WEBHOOK_URL', sink.url('/fail'))
    monkeypatch.setenv('NOTIFY_MAX_ATTEMPTS', '3')

    fate = push(notify_endpoint, errored(), max_attempts=5)

    assert fate.state == 'dead-lettered' and [p.status for p in fate.pushes] == [500] * 5
    assert sink.count('/fail') == 3           # NOTIFY_MAX_ATTEMPTS, whatever the deliveries
    assert sink.count('/hook') == 1           # sent once, never again


def test_two_deliveries_of_one_result_at_once_send_each_sinks_message_once(sink, notify_endpoint, monkeypatch):
    monkeypatch.setenv('NOTIFY_WEBHOOK_URL', sink.url('/delayed'))
    monkeypatch.setenv('NOTIFY_SLACK_WEBHOOK_URL', sink.url('/slack'))
    monkeypatch.setenv('NOTIFY_TELEGRAM_BOT_TOKEN', BOT_TOKEN)
    monkeypatch.setenv('NOTIFY_TELEGRAM_CHAT_ID', '42')
    monkeypatch.setenv('NOTIFY_TELEGRAM_API_BASE', sink.url('/tg'))

    fate = push(notify_endpoint, with_orders(), duplicate_chance=1.0)

    assert fate.state == 'acked'
    assert (sink.count('/delayed'), sink.count('/slack'), sink.count(TELEGRAM_PATH)) == (1, 1, 1)


def test_a_result_that_is_not_a_result_document_is_acked_and_sends_nothing(sink, notify_endpoint, monkeypatch):
    monkeypatch.setenv('NOTIFY_WEBHOOK_URL', sink.url('/hook'))
    for data in (b64(b'\xff not json'), b64({'schema': 'other'}), b64(copy.deepcopy([1, 2]))):
        model = PushModel(notify_endpoint, DeliveryPolicy(min_backoff=0.01, max_attempts=2, ack_deadline=30))
        assert model.deliver(pubsub_message(data)).state == 'acked'
    assert sink.requests == []
