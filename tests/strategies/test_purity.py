"""Strategies are pure: importing every strategies module pulls in nothing that talks to the outside world."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IO_MODULES = ('ib_insync', 'ib_async', 'eventkit', 'google', 'grpc', 'sqlite3', 'socket', 'ssl', 'asyncio', 'http',
              'urllib', 'requests', 'subprocess', 'threading', 'random', 'lib', 'trading', 'intents', 'functions', 'simulator')

SCRIPT = '''
import importlib, json, pkgutil, sys
before = set(sys.modules)
import strategies
for module in pkgutil.iter_modules(strategies.__path__):
    if not module.name.startswith('_'):      # __main__ is the command line, not a strategy
        importlib.import_module('strategies.' + module.name)
print(json.dumps(sorted(set(sys.modules) - before)))
'''


def test_strategy_modules_import_no_io():
    out = subprocess.run([sys.executable, '-c', SCRIPT], cwd=REPO, capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out)
    assert 'strategies.spy_macd_vixy' in loaded and 'strategies.dummy' in loaded
    offenders = [m for m in loaded if m.split('.')[0] in IO_MODULES]
    assert offenders == []
