"""Every shell script under deploy/ passes shellcheck."""
from __future__ import annotations

import subprocess

from tests.deploy.conftest import REPO
from tests.emulators import require_tool

SCRIPTS = sorted((REPO / 'deploy').rglob('*.sh'))


def test_there_are_scripts_to_check():
    assert REPO / 'deploy' / 'gateway' / 'start-gateway.sh' in SCRIPTS


def test_shell_scripts_pass_shellcheck():
    shellcheck = require_tool('shellcheck')
    result = subprocess.run([shellcheck, '--severity=style', *map(str, SCRIPTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
