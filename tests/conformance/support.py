"""Run the official-client driver (.venv-ibapi) against a fresh simulator and read what it saw."""
from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from simulator import Simulator

DRIVER = Path(__file__).with_name('ibapi_driver.py')
# Wednesday 2026-11-25, 10:00 New York: orders fill, quotes move.
MARKET_OPEN = datetime(2026, 11, 25, 15, 0, tzinfo=timezone.utc)


def drive(python: Path, version: int, **simulator_options) -> dict:
    """Run every scenario with the official client capped at `version` against a fresh simulator.

    The gateway keeps its real-gateway limits (message rate, pacing, market-data lines): the driver sends
    fewer than 50 messages per connection, requests no small bars and holds one market-data line at a time.
    """
    with Simulator(time=MARKET_OPEN, seed=7, **simulator_options) as sim:
        run = subprocess.run([str(python), str(DRIVER), sim.host, str(sim.port), str(version)],
                             capture_output=True, text=True, timeout=180)
    if run.returncode != 0 or not run.stdout.strip():
        raise AssertionError(f'the ibapi driver failed (exit {run.returncode}):\n{run.stderr[-4000:]}')
    return json.loads(run.stdout)
