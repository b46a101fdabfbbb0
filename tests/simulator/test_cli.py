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


def test_limits_are_a_real_gateways_unless_flags_switch_them_off():
    from simulator.__main__ import limits_of, parse_args
    default = limits_of(parse_args([]))
    assert (default.message_rate, default.hist_pacing, default.hist_open_requests, default.market_data_lines,
            default.executions_current_day) == (50, True, 50, 100, True)
    off = limits_of(parse_args(['--message-rate', '0', '--no-hist-pacing', '--hist-open-requests', '0',
                                '--market-data-lines', '0', '--all-executions']))
    assert (off.message_rate, off.hist_pacing, off.hist_open_requests, off.market_data_lines,
            off.executions_current_day) == (None, False, None, None, False)
    assert limits_of(parse_args(['--market-data-lines', '3'])).market_data_lines == 3


def test_fault_flags_reach_the_client():
    proc, port = start('--hist-error', 'permissions', '--connectivity-lost', '--time', '2026-11-25T10:00:00-05:00')
    try:
        ib = IB()
        seen = []
        ib.errorEvent += lambda req_id, code, text, contract: seen.append((code, text))
        ib.connect('127.0.0.1', port, clientId=1, timeout=5)
        spy = ib.qualifyContracts(Stock('SPY', 'SMART', 'USD'))[0]
        assert len(ib.reqHistoricalData(spy, '', '5 D', '1 day', 'TRADES', True)) == 0
        ib.disconnect()
    finally:
        stop(proc)
    assert (162, 'Historical Market Data Service error message:No market data permissions for SMART STK') in seen
    assert 1100 in [code for code, _ in seen]
