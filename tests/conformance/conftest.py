"""The official IB client (ibapi, in .venv-ibapi) against the simulator, at each server version it negotiates."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IBAPI_PYTHON = REPO / '.venv-ibapi' / 'bin' / 'python'


@pytest.fixture(scope='session')
def ibapi_python() -> Path:
    """.venv-ibapi's interpreter, built on first use by scripts/setup.sh --ibapi (skipped if it cannot be built,
    except under CI=true, where that is a failure)."""
    if not IBAPI_PYTHON.exists():
        built = subprocess.run([str(REPO / 'scripts' / 'setup.sh'), '--ibapi'], cwd=REPO, capture_output=True,
                               text=True, timeout=600)
        if built.returncode != 0:
            reason = f'.venv-ibapi could not be built: {built.stderr.strip()[-500:]}'
            if os.environ.get('CI') == 'true':
                pytest.fail(reason)
            pytest.skip(reason)
    return IBAPI_PYTHON
