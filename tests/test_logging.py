"""Logging: JSON lines Cloud Logging parses, labels per run, and no secret value ever written."""
from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
from contextvars import copy_context
from pathlib import Path

from lib import log
from lib.ibapi import CLIENT_LIBRARY

REPO = Path(__file__).resolve().parent.parent
SECRET = 's3cr3t-value-4711'


def test_a_real_run_logs_json_with_labels_and_never_the_secret(simulator):
    env = {**os.environ, 'IB_GATEWAY_HOST': simulator.host, 'IB_GATEWAY_PORT': str(simulator.port),
           'IB_PASSWORD': SECRET, 'SLACK_TOKEN': f'xoxb-{SECRET}', 'LOG_LEVEL': 'DEBUG',
           'IB_CLIENT_LOG_LEVEL': 'DEBUG'}   # every line, the client library's too, must be masked
    env.pop('RESULTS_TOPIC', None)
    # The secret is also passed where an intent would echo it: as a param value that gets rejected.
    script = (
        'from functions.__main__ import pubsub_push_event\n'
        'from functions.handler import handle\n'
        f'handle(pubsub_push_event({{"intent": "summary"}}, project="p"))\n'
        f'handle(pubsub_push_event({{"intent": "summary", "params": {{"password": "{SECRET}"}}}}, project="p"))\n'
        'import logging; logging.getLogger("anything").error("connecting with %s", '
        '__import__("os").environ["IB_PASSWORD"])\n'
    )
    run = subprocess.run([sys.executable, '-c', script], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert SECRET not in run.stdout and SECRET not in run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    logs = [line for line in lines if 'severity' in line]
    results = [line for line in lines if line.get('schema') == 'intent-result/v1']
    assert [r['status'] for r in results] == ['ok', 'rejected']
    assert all({'severity', 'message', 'time', log.LABELS_KEY} <= set(line) for line in logs)
    run_lines = [line for line in logs if line['message'].startswith('summary ')]
    assert [line['severity'] for line in run_lines] == ['INFO', 'WARNING']
    ok_line = run_lines[0]
    assert ok_line[log.LABELS_KEY]['runId'] == results[0]['runId']
    assert ok_line[log.LABELS_KEY]['messageId'] == results[0]['messageId']
    assert ok_line[log.LABELS_KEY]['intent'] == 'summary'
    assert ok_line[log.LABELS_KEY]['clientId'] == str(results[0]['gateway']['clientId'])
    assert ok_line['timings']['publishMs'] is not None and ok_line['status'] == 'ok'
    # lines written by the runner's thread carry the same labels
    threaded = [line for line in logs if line[log.LABELS_KEY].get('runId') == results[0]['runId']]
    assert any(line['logger'].startswith((CLIENT_LIBRARY, 'lib.', 'functions.handler')) for line in threaded
               if line is not ok_line)
    masked = [line for line in logs if line['message'] == f'connecting with {log.MASK}']
    assert len(masked) == 1 and masked[0]['severity'] == 'ERROR'
    assert SECRET not in json.dumps(results[1])
    assert results[1]['error']['type'] == 'InvalidParams'


def _capture(json_mode: bool) -> tuple[io.StringIO, logging.Logger]:
    stream = io.StringIO()
    log.configure(json=json_mode, stream=stream, level='INFO')
    return stream, log.get_logger('tests.logging')


def test_labels_follow_the_context_into_threads():
    stream, logger = _capture(json_mode=True)
    try:
        with log.bind(runId='r-1', intent='health'):
            with log.bind(clientId=7):
                logger.info('inside')
            worker = threading.Thread(target=copy_context().run, args=(logger.warning, 'from thread'))
            worker.start()
            worker.join()
        logger.info('outside')
    finally:
        log.configure()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line[log.LABELS_KEY] for line in lines] == [
        {'runId': 'r-1', 'intent': 'health', 'clientId': '7'}, {'runId': 'r-1', 'intent': 'health'}, {}]
    assert [line['severity'] for line in lines] == ['INFO', 'WARNING', 'INFO']
    assert lines[0]['time'].endswith('Z')


def test_tracebacks_are_part_of_the_message_and_redacted(monkeypatch):
    monkeypatch.setenv('DB_CREDENTIALS', SECRET)
    stream, logger = _capture(json_mode=True)
    try:
        try:
            raise RuntimeError(f'login failed for {SECRET}')
        except RuntimeError:
            logger.exception('failed')
    finally:
        log.configure()
    line = json.loads(stream.getvalue())
    assert line['severity'] == 'ERROR'
    assert 'Traceback' in line['message'] and f'login failed for {log.MASK}' in line['message']
    assert SECRET not in stream.getvalue()


def test_human_form_on_a_terminal_and_configure_is_idempotent():
    stream, logger = _capture(json_mode=False)
    log.configure(json=False, stream=stream)
    try:
        with log.bind(runId='r-9'):
            logger.warning('gateway slow', extra={'fields': {'ms': 12}})
    finally:
        log.configure()
    text = stream.getvalue()
    assert text.count('gateway slow') == 1
    assert 'WARNING' in text and 'runId=r-9' in text and '"ms":12' in text
    assert not text.startswith('{')


def test_the_client_librarys_own_info_logging_is_off_unless_ib_client_log_level_asks(gateway, monkeypatch):
    from functions.handler import run_isolated
    from intents.summary import Summary, SummaryParams
    from lib.config import Settings

    def client_library_lines(level: str | None) -> list[str]:
        if level:
            monkeypatch.setenv('IB_CLIENT_LOG_LEVEL', level)
        else:
            monkeypatch.delenv('IB_CLIENT_LOG_LEVEL', raising=False)
        stream = io.StringIO()
        log.configure(json=True, stream=stream, level='INFO')
        try:
            outcome = run_isolated(Summary, SummaryParams(), dry_run=False,
                                   settings=Settings(gateway_host=gateway.host, gateway_port=gateway.port))
        finally:
            monkeypatch.delenv('IB_CLIENT_LOG_LEVEL', raising=False)
            log.configure()
        assert outcome.status == 'ok', outcome.failure
        return [line['message'] for line in map(json.loads, stream.getvalue().splitlines())
                if line['logger'].startswith(CLIENT_LIBRARY)]

    assert client_library_lines(None) == []
    chatter = client_library_lines('info')
    assert any(message.startswith('Connecting to') for message in chatter)


def test_secrets_are_masked_in_every_form_an_encoder_gives_them(monkeypatch):
    secret = 'Ä"\\ß 4711/ü'
    monkeypatch.setenv('IB_PASSWORD', secret)
    for json_lines in (True, False):
        stream = io.StringIO()
        log.configure(json=json_lines, stream=stream, level='INFO')
        logger = logging.getLogger('test.encodings')
        logger.info('raw %s, repr %r, ascii %a', secret, secret, secret,
                    extra={'fields': {'nested': [{'value': secret, secret: 'as a key'}]}})
        logger.info('url https://x/?p=%s', __import__('urllib.parse').parse.quote(secret, safe=''))
        logger.info('basic auth %s', __import__('base64').b64encode(secret.encode()).decode())
        text = stream.getvalue()
        decoded = [json.dumps(json.loads(line), ensure_ascii=False) for line in text.splitlines()] if json_lines \
            else []
        for where in (text, *decoded, *(json.loads(line)['message'] for line in text.splitlines() if json_lines)):
            assert secret not in where
            assert repr(secret)[1:-1] not in where and json.dumps(secret)[1:-1] not in where
        assert text.count(log.MASK) >= 6
    log.configure()
