"""What `gcloud functions deploy` uploads, computed by gcloud's own ignore-file code.

The function needs its packages and requirements; tests, the simulator, the deploy tooling and
anything local must stay home.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from deploy.function import IGNORE_FILE
from tests.deploy.conftest import REPO
from tests.emulators import require_tool

LIST_FILES = '''
import json, sys
sys.path[:0] = [sys.argv[1] + '/lib', sys.argv[1] + '/lib/third_party']
from googlecloudsdk.command_lib.util import gcloudignore
chooser = gcloudignore.GetFileChooserForDir(sys.argv[2], ignore_file=sys.argv[3], write_on_disk=False)
print(json.dumps(sorted(chooser.GetIncludedFiles(sys.argv[2], include_dirs=False))))
'''


@pytest.fixture(scope='module')
def uploaded(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    sdk_root = Path(os.path.realpath(require_tool('gcloud'))).parent.parent
    python = sdk_root / 'platform' / 'bundledpythonunix' / 'bin' / 'python3'
    if not (sdk_root / 'lib' / 'googlecloudsdk').is_dir() or not python.exists():
        pytest.skip(f'no bundled Python and gcloud library under {sdk_root}')
    result = subprocess.run([str(python), '-c', LIST_FILES, str(sdk_root), str(REPO), IGNORE_FILE],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, 'CLOUDSDK_CONFIG': str(tmp_path_factory.mktemp('gcloud'))})
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


def test_the_function_code_and_its_requirements_are_uploaded(uploaded):
    needed = {'main.py', 'requirements.txt', 'functions/main.py', 'schemas/intent-request.schema.json'}
    for package in ('functions', 'intents', 'lib', 'strategies'):
        needed |= {str(path.relative_to(REPO)) for path in (REPO / package).rglob('*.py')
                   if '__pycache__' not in path.parts}
    needed |= {str(path.relative_to(REPO)) for path in (REPO / 'config').glob('*') if path.is_file()}
    assert needed - uploaded == set()


def test_nothing_else_is_uploaded(uploaded):
    top_level = {name.split('/', 1)[0] for name in uploaded}
    assert top_level <= {'main.py', 'requirements.txt', 'functions', 'intents', 'lib', 'strategies', 'schemas',
                         'config'}
    assert not any('__pycache__' in name or name.endswith('.pyc') for name in uploaded)
