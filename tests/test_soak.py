"""Many invocations in one process leave nothing behind: threads, file descriptors, memory stay flat.

The invocations run in a child process of their own, so pytest's log capture and bookkeeping do
not count towards the memory measured.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNS = 300
WARM_UP = 20
# The allocator settles in over the first few hundred runs (about 1.5 MB, then a few hundred kB);
# a leak of Python objects shows up exactly in the object count instead.
RSS_SLACK_KB = 6 * 1024
RSS_SECOND_HALF_SLACK_KB = 2 * 1024
OBJECT_SLACK = 100
FD_SLACK = 2


def soak(host: str, port: int, topic: str, project: str, runs: int, warm_up: int) -> dict:
    """Run `runs` health invocations through the handler in this process; return the before/after counts."""
    import gc
    import threading
    import time
    from dataclasses import replace

    from functions.__main__ import pubsub_push_event
    from functions.handler import handle
    from lib import log
    from lib.config import Settings
    from lib.ibapi import IB

    def rss_kb() -> int:
        with open('/proc/self/status') as status:
            return next(int(line.split()[1]) for line in status if line.startswith('VmRSS:'))

    def snapshot() -> dict:
        gc.collect()
        return {'threads': sorted(t.name for t in threading.enumerate()),
                'fds': len(os.listdir('/proc/self/fd')), 'rssKb': rss_kb(), 'objects': len(gc.get_objects())}

    settings = replace(Settings.from_env({}), gateway_host=host, gateway_port=port, results_topic=topic,
                       project=project)
    statuses: dict[str, int] = {}
    with open(os.devnull, 'w') as sink:
        log.configure(json=True, stream=sink)
        started = time.monotonic()
        for run in range(runs):
            if run == warm_up:
                baseline = snapshot()
            if run == (warm_up + runs) // 2:
                halfway = snapshot()
            result = handle(pubsub_push_event({'intent': 'health'}, project=project), settings)
            statuses[result.status] = statuses.get(result.status, 0) + 1
        elapsed = time.monotonic() - started
    return {'baseline': baseline, 'halfway': halfway, 'after': snapshot(), 'statuses': statuses, 'seconds': elapsed,
            'liveIBs': sum(isinstance(obj, IB) for obj in gc.get_objects())}


def test_three_hundred_sequential_invocations_stay_flat(simulator, pubsub):
    results = pubsub.topic('results')
    pulled = pubsub.pull_subscription(results)
    script = ('import json, sys\nfrom tests.test_soak import soak\n'
              f'print(json.dumps(soak({simulator.host!r}, {simulator.port}, {results!r}, {pubsub.project!r}, '
              f'{RUNS}, {WARM_UP})))')
    child = subprocess.run([sys.executable, '-c', script], cwd=REPO, env=dict(os.environ), capture_output=True,
                           text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-3000:]
    report = json.loads(child.stdout.splitlines()[-1])
    baseline, halfway, after = report['baseline'], report['halfway'], report['after']
    assert report['statuses'] == {'ok': RUNS}
    assert after['threads'] == baseline['threads']
    assert after['fds'] <= baseline['fds'] + FD_SLACK
    assert after['objects'] - baseline['objects'] < OBJECT_SLACK
    grown = after['rssKb'] - baseline['rssKb']
    assert grown < RSS_SLACK_KB, f'RSS grew {grown} kB over {RUNS - WARM_UP} runs'
    assert after['rssKb'] - halfway['rssKb'] < RSS_SECOND_HALF_SLACK_KB
    assert report['liveIBs'] == 0
    assert report['seconds'] < 30
    assert len(pubsub.pull(pulled, RUNS, timeout=30)) == RUNS
