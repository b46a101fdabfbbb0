"""Publishing one result and waiting for its ack: the runtime's PublisherClient against the default one.

    .venv/bin/python -m bench.publish [-n 200]

The runtime publishes exactly one message per invocation and then waits for the ack, so any time
the client holds a message back to batch it with others is pure latency. This measures that on the
Pub/Sub emulator: the client as functions/publisher.py creates it (batches sent as soon as they hold one
message), against a client with the default BatchSettings.
"""
from __future__ import annotations

import argparse
import sys
import time

from google.cloud import pubsub_v1

from bench.common import RunStart, median, percentile, table, write_report
from bench.pubsub import PROJECT, ResultsTopic
from functions import publisher

MESSAGE_BYTES = 3000   # about the size of a `summary` result document
BLOCK = 10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m bench.publish', description=__doc__.split('\n')[0])
    parser.add_argument('-n', type=int, default=200, help='timed publishes per client')
    parser.add_argument('--warmup', type=int, default=20, help='untimed publishes first')
    args = parser.parse_args(argv)
    start = RunStart.now()
    payload = b'x' * MESSAGE_BYTES
    with ResultsTopic(enabled=True) as topic_id:
        topic = f'projects/{PROJECT}/topics/{topic_id}'
        clients = {
            'runtime client (functions/publisher.py: max_messages=1)': publisher.publisher_client(),
            'default BatchSettings': pubsub_v1.PublisherClient(),
        }
        default_latency = pubsub_v1.types.BatchSettings().max_latency
        timings: dict[str, list[float]] = {name: [] for name in clients}
        for client in clients.values():
            for _ in range(args.warmup):
                _publish(client, topic, payload)
        while len(timings[next(iter(clients))]) < args.n:
            for name, client in clients.items():   # alternate blocks, so drift hits both alike
                timings[name] += [_publish(client, topic, payload) for _ in range(BLOCK)]
    rows = [[name, len(ms), median(ms), percentile(ms, 0.95)] for name, ms in timings.items()]
    headers = ['client', 'n', 'publish + ack p50 ms', 'p95 ms']
    print(table(headers, rows))
    path = write_report('publish', 'Publishing one result to the Pub/Sub emulator', [
        '## Results\n\n' + table(headers, rows),
        f'{MESSAGE_BYTES}-byte messages, {args.n} per client after {args.warmup} warm-up publishes, alternating '
        f'in blocks of {BLOCK}; each publish waits for its ack, as `publisher.publish_result` does. The default '
        f'BatchSettings hold a batch open for max_latency = {default_latency * 1000:g} ms before sending it, '
        'unless it fills up first; with max_messages=1 a batch is full, and sent, as soon as it has one message.',
    ], start=start)
    print(f'\nwrote {path}')
    return 0


def _publish(client, topic: str, payload: bytes) -> float:
    started = time.perf_counter()
    client.publish(topic, payload).result(timeout=10)
    return (time.perf_counter() - started) * 1000


if __name__ == '__main__':
    sys.exit(main())
