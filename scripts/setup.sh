#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install the pinned requirements (runtime + dev); quiet when nothing changed.
# With --ib-async: the same for .venv-ib-async from requirements-ib-async.txt (ib_async in place of ib_insync;
# the two libraries cannot share a virtual environment). With --ibapi: .venv-ibapi from requirements-ibapi.txt, IB's
# official Python client for the conformance suite (tests/conformance runs it as a separate process).
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  '') venv=.venv install=requirements-dev.txt requirements=(requirements.txt requirements-dev.txt) ;;
  --ib-async) venv=.venv-ib-async install=requirements-ib-async.txt requirements=(requirements-ib-async.txt) ;;
  --ibapi) venv=.venv-ibapi install=requirements-ibapi.txt requirements=(requirements-ibapi.txt) ;;
  *) echo "usage: scripts/setup.sh [--ib-async | --ibapi]" >&2; exit 2 ;;
esac

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: Python 3.11 or newer is required (found: $("$python" --version 2>&1 || echo none))" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv" >&2
  "$python" -m venv "$venv"
fi
stamp=$venv/.requirements.sha256
want=$(cat "${requirements[@]}" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing requirements into $venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$install"
  echo "$want" > "$stamp"
fi
