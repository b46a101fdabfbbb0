"""A fake cloud behind `gcloud`/`bq` shims, and a runner of `python -m deploy` against it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
FAKE = Path(__file__).resolve().parent / 'fake_gcloud.py'
EXAMPLE_CONFIG = REPO / 'deploy' / 'config.env.example'


def write_config(path: Path, **settings: Any) -> Path:
    """The example config with PROJECT set and `settings` replacing (or adding) keys."""
    values = {'PROJECT': 'demo-proj-123', **{key: str(value) for key, value in settings.items()}}
    lines = []
    for line in EXAMPLE_CONFIG.read_text().splitlines():
        key = line.split('=', 1)[0]
        if not line.startswith('#') and '=' in line and key in values:
            line = f'{key}={values.pop(key)}'
        lines.append(line)
    lines += [f'{key}={value}' for key, value in values.items()]
    path.write_text('\n'.join(lines) + '\n')
    return path


@dataclass
class FakeCloud:
    """The fake project: its state, the calls made to it, and `python -m deploy` wired to it."""

    root: Path
    bin_dir: Path
    work_dir: Path

    def deploy(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `python -m deploy ARGS` with the fake tools first on PATH."""
        inherited = {key: value for key, value in os.environ.items() if key not in ('IB_USERNAME', 'IB_PASSWORD')}
        full_env = {**inherited, 'PATH': f'{self.bin_dir}{os.pathsep}{os.environ["PATH"]}',
                    'FAKE_CLOUD_DIR': str(self.root), **(env or {})}
        command = [sys.executable, '-m', 'deploy', *args]
        if args and args[0] in ('apply', 'teardown'):
            command += ['--work-dir', str(self.work_dir)]
        return subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)

    def calls(self) -> list[dict[str, Any]]:
        path = self.root / 'calls.jsonl'
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def state(self) -> dict[str, Any]:
        path = self.root / 'state.json'
        return json.loads(path.read_text()) if path.exists() else {'resources': {}, 'bindings': []}

    def commands(self, *prefix: str) -> list[list[str]]:
        """Recorded gcloud argvs that start with `prefix`."""
        return [call['argv'] for call in self.calls()
                if call['program'] == 'gcloud' and call['argv'][:len(prefix)] == list(prefix)]


def make_fake_cloud(base: Path) -> FakeCloud:
    """An empty fake project under `base`, with `gcloud` and `bq` shims in base/bin."""
    bin_dir = base / 'bin'
    bin_dir.mkdir()
    for program in ('gcloud', 'bq'):
        shim = bin_dir / program
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "{FAKE}" {program} "$@"\n')
        shim.chmod(0o755)
    root = base / 'cloud'
    root.mkdir()
    return FakeCloud(root, bin_dir, base / 'work')


@pytest.fixture
def fake_cloud(tmp_path: Path) -> FakeCloud:
    return make_fake_cloud(tmp_path)
