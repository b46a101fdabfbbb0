"""Settings are read once, at the entry, and passed down: under lib/ and trading/ only lib/config.py reads the
environment (os.environ, os.getenv, os.environb, os.putenv)."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETTINGS_MODULE = REPO / 'lib' / 'config.py'
ENVIRONMENT_NAMES = {'environ', 'environb', 'getenv', 'getenvb', 'putenv', 'unsetenv'}


def _environment_reads(path: Path) -> list[str]:
    """`os.environ`-like uses in the module, and `from os import environ`-like imports, as 'line: text'."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ENVIRONMENT_NAMES:
            found.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == 'os' \
                and any(alias.name in ENVIRONMENT_NAMES for alias in node.names):
            found.append(node.lineno)
    lines = path.read_text().splitlines()
    return [f'{line}: {lines[line - 1].strip()}' for line in sorted(found)]


def test_only_the_settings_module_reads_the_environment_under_lib_and_trading():
    modules = [path for layer in ('lib', 'trading') for path in sorted((REPO / layer).rglob('*.py'))
               if path != SETTINGS_MODULE]
    offenders = {str(path.relative_to(REPO)): reads for path in modules if (reads := _environment_reads(path))}
    assert offenders == {}


def test_the_check_sees_each_way_of_reading_the_environment(tmp_path):
    probe = tmp_path / 'probe.py'
    probe.write_text('import os\nfrom os import getenv\na = os.environ.get("X")\nb = os.getenv("Y")\n')
    assert [line.split(':')[0] for line in _environment_reads(probe)] == ['2', '3', '4']
    assert _environment_reads(SETTINGS_MODULE) != []   # the settings module does read it
