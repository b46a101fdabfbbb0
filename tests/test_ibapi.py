"""IB_CLIENT_LIBRARY picks the client library lib.ibapi re-exports; a bad or missing choice says what to do."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lib.ibapi import CLIENT_LIBRARIES, CLIENT_LIBRARY, IB

REPO = Path(__file__).resolve().parent.parent


def import_ibapi(library: str) -> subprocess.CompletedProcess:
    env = {**os.environ, 'IB_CLIENT_LIBRARY': library}
    return subprocess.run([sys.executable, '-c', 'import lib.ibapi as m; print(m.IB.__module__)'], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=30)


def test_the_chosen_library_provides_the_client():
    assert IB.__module__ == f'{CLIENT_LIBRARY}.ib'
    assert import_ibapi(CLIENT_LIBRARY).stdout.strip() == f'{CLIENT_LIBRARY}.ib'


def test_an_unknown_library_is_refused_naming_the_variable():
    run = import_ibapi('ibapi')
    assert run.returncode != 0
    assert "ConfigError: IB_CLIENT_LIBRARY='ibapi' is invalid: expected one of ib_insync, ib_async" in run.stderr


def test_the_other_library_is_not_installed_alongside_and_the_error_says_which_venv_has_it():
    other = next(library for library in CLIENT_LIBRARIES if library != CLIENT_LIBRARY)
    run = import_ibapi(other)
    assert run.returncode != 0
    assert f'IB_CLIENT_LIBRARY={other} but {other} is not installed here' in run.stderr
