"""`python -m simulator` as a user runs it."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from lib.ibapi import IB, MarketOrder, Stock

ROOT = Path(__file__).resolve().parents[2]


def start(*args):
    proc = subprocess.Popen([sys.executable, '-m', 'simulator', '--port', '0', *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith('listening on 127.0.0.1:'), (line, proc.stderr.read() if proc.poll() else '')
    return proc, int(line.strip().rsplit(':', 1)[1])


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    return out


def test_port_0_prints_exactly_one_line_and_serves(tmp_path):
    proc, port = start('--accounts', 'DU111,DU222', '--time', '2026-11-25T10:00:00-05:00')
    try:
        ib = IB()
        ib.connect('127.0.0.1', port, clientId=1, timeout=5, account='DU111')
        assert ib.managedAccounts() == ['DU111', 'DU222']
        assert ib.reqCurrentTime().isoformat().startswith('2026-11-25T15:00')
        ib.disconnect()
    finally:
        assert stop(proc) == ''


def test_state_file_survives_a_restart(tmp_path):
    state = tmp_path / 'state.json'
    proc, port = start('--state', str(state), '--time', '2026-11-25T10:00:00-05:00')
    try:
        ib = IB()
        ib.connect('127.0.0.1', port, clientId=1, timeout=5)
        spy = ib.qualifyContracts(Stock('SPY', 'SMART', 'USD'))[0]
        trade = ib.placeOrder(spy, MarketOrder('BUY', 3, orderRef='before-restart'))
        while not trade.isDone():
            ib.sleep(0.05)
        ib.disconnect()
    finally:
        stop(proc)
    assert json.loads(state.read_text())
    proc, port = start('--state', str(state), '--time', '2026-11-25T10:00:00-05:00')
    try:
        ib = IB()
        ib.connect('127.0.0.1', port, clientId=1, timeout=5)
        assert {p.contract.symbol: p.position for p in ib.positions()} == {'SPY': 3}
        assert [f.execution.orderRef for f in ib.reqExecutions()] == ['before-restart']
        assert ib.client.getReqId() > trade.order.orderId
        ib.disconnect()
    finally:
        stop(proc)
    assert not list(tmp_path.glob('*.tmp*'))


def test_bad_arguments_are_explained():
    result = subprocess.run([sys.executable, '-m', 'simulator', '--time', 'yesterday'], cwd=ROOT,
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 2
    assert 'not an ISO 8601 time' in result.stderr


def test_a_busy_port_is_a_clear_error():
    proc, port = start()
    try:
        result = subprocess.run([sys.executable, '-m', 'simulator', '--port', str(port)], cwd=ROOT,
                                capture_output=True, text=True, timeout=10,
                                env={**os.environ, 'PYTHONWARNINGS': 'ignore'})
        assert result.returncode == 1
        assert f'cannot listen on 127.0.0.1:{port}' in result.stderr
    finally:
        stop(proc)
