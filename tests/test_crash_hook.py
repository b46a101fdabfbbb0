"""The test-only kill hook: dies once at the named step, never without its control file or in live mode."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = 'from lib.crash import crash_point\ncrash_point("before-settle")\ncrash_point("after-place-order", 2)\nprint("lived")'


def run(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', PROBE], cwd=REPO, env={'PATH': '/usr/bin:/bin', **env},
                          capture_output=True, text=True, timeout=60)


def test_the_named_step_kills_the_process_once(tmp_path):
    control = tmp_path / 'crash-at'
    control.write_text('after-place-order:2')
    died = run({'CRASH_CONTROL_FILE': str(control)})
    assert died.returncode == -signal.SIGKILL and 'lived' not in died.stdout
    assert not control.exists()                              # a restarted worker is not killed again
    assert run({'CRASH_CONTROL_FILE': str(control)}).stdout.strip() == 'lived'


def test_other_steps_unset_hook_and_live_mode_leave_the_process_alone(tmp_path):
    control = tmp_path / 'crash-at'
    control.write_text('after-claim')
    assert run({'CRASH_CONTROL_FILE': str(control)}).stdout.strip() == 'lived'
    control.write_text('before-settle')
    assert run({'CRASH_CONTROL_FILE': str(control), 'TRADING_MODE': 'live'}).stdout.strip() == 'lived'
    assert run({}).stdout.strip() == 'lived' and control.exists()
