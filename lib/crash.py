"""A kill switch for crash tests: SIGKILL this process at a named step of a run, once.

Off unless CRASH_CONTROL_FILE is set (tests only; never in a deployment), and always off with
TRADING_MODE=live. The file holds one step
name, e.g. `after-claim` or `after-place-order:2` (the second placeOrder of the run). The process
that reaches that step first deletes the file (so a restarted worker does not die again at the same
step) and kills itself with SIGKILL: no cleanup, no finally blocks, as when an instance is lost.

Steps of an order-placing run, in order: after-account-lease, after-claim, after-place-order:N,
before-settle, before-publish.
"""
from __future__ import annotations

import os
import signal

from lib.config import crash_control_file


def crash_point(step: str, index: int | None = None) -> None:
    """Die here if the control file names this step (with its index, when given)."""
    path = crash_control_file()
    if path is None:
        return
    try:
        with open(path) as control:
            wanted = control.read().strip()
    except OSError:
        return
    if wanted not in (step, f'{step}:{index}'):
        return
    try:
        os.remove(path)      # whoever removes it dies; a concurrent run reaching the step lives on
    except FileNotFoundError:
        return
    os.kill(os.getpid(), signal.SIGKILL)
