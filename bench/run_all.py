"""Run every benchmark with its defaults, one after another; each writes its report to docs/bench/.

    .venv/bin/python -m bench.run_all [--no-publish]

About five minutes on a 2-core machine. Run it on an otherwise idle machine: the simulator, the
server and the load generator already share the CPUs, and anything else running skews the figures.
"""
from __future__ import annotations

import argparse
import subprocess
import sys

from bench.common import REPO

BENCHMARKS = ('bench.latency', 'bench.concurrency', 'bench.cold_start', 'bench.publish')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m bench.run_all', description=__doc__.split('\n')[0])
    parser.add_argument('--no-publish', action='store_true',
                        help='no Pub/Sub emulator: bench.latency publishes nothing, bench.publish is skipped')
    args = parser.parse_args(argv)
    failed = []
    for module in BENCHMARKS:
        if args.no_publish and module == 'bench.publish':
            continue
        extra = ['--no-publish'] if args.no_publish and module == 'bench.latency' else []
        print(f'\n$ python -m {module} {" ".join(extra)}'.rstrip(), flush=True)
        if subprocess.run([sys.executable, '-m', module, *extra], cwd=REPO).returncode != 0:
            failed.append(module)
    if failed:
        print(f'\nfailed: {", ".join(failed)}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
