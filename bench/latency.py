"""Latency of one `summary`: the real handler (fresh thread, loop, IB, connect, run, disconnect, publish)
against the persistent-connection baseline, at several simulated reply latencies.

    .venv/bin/python -m bench.latency [--latencies 0,5,20] [-n 200] [--no-publish]

Also measured, to split the time: the protocol minimum (the recorded wire exchange replayed by a
raw socket client) and bare ib_insync (connect, the same four requests, disconnect in a plain
event loop, with none of our runtime around it).
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass, field

import lib.ibapi  # noqa: F401  (main thread import, see lib/ibapi.py)
from bench.baseline import BASELINE_CLIENT_ID, PersistentGateway
from bench.common import RunStart, median, percentile, table, write_report
from bench.gateway import GatewayProcess
from bench.protocol import Exchange, record, replay
from bench.pubsub import PROJECT, ResultsTopic
from functions import publisher
from functions.__main__ import pubsub_push_event
from functions.handler import handle
from lib import log
from lib.config import Settings
from lib.ibapi import IB, ExecutionFilter

RECORD_LATENCY_MS = 20   # with latency on, the simulator separates round trips exactly
BLOCK = 10               # runs of each design in turn, so drift on the machine hits all alike
BARE_CLIENT_IDS = itertools.cycle(range(10, 100))   # below the runtime's range and apart from the baseline's


@dataclass
class Series:
    """Timings of one design at one latency, in milliseconds."""

    design: str
    latency_ms: float
    totals: list[float] = field(default_factory=list)
    publishes: list[float] = field(default_factory=list)
    round_trips: float = float('nan')
    gateway_wait_ms: float = float('nan')        # derived: delayed round trips × latency + protocol time at 0 ms
    replayed: list[float] = field(default_factory=list)   # measured: the protocol minimum at this latency
    replayed_rounds: list[list[float]] = field(default_factory=list)   # the same, per round trip
    throttled: int = 0                           # ib_insync throttle stalls during the timed runs

    def overhead(self, with_publish: bool = True) -> float:
        """p50 of total minus the gateway wait, with or without the time spent publishing."""
        totals = self.totals if with_publish else [t - p for t, p in zip(self.totals, self.publishes)]
        return median(totals) - self.gateway_wait_ms


class Bench:
    """The designs under test against one gateway, measured in interleaved blocks."""

    def __init__(self, gateway: GatewayProcess, settings: Settings, baseline: PersistentGateway) -> None:
        self.gateway, self.settings, self.baseline = gateway, settings, baseline
        self.publish = publisher.publish_result if settings.results_topic else None
        self.topic = publisher.topic_path(settings) if settings.results_topic else None
        gateway.set_latency(RECORD_LATENCY_MS)
        self.exchange = record((gateway.host, gateway.port), lambda host, port: _invoke(
            Settings(gateway_host=host, gateway_port=port), publish=None))
        self.baseline_exchange = record((gateway.host, gateway.port), _baseline_twice)

    def measure(self, latency: float, n: int, warmup: int) -> list[Series]:
        """Handler, bare ib_insync and baseline, n runs each, plus the replayed protocol minimum."""
        self.gateway.set_latency(latency)
        ours = Series('handler (per invocation)', latency)
        bare = Series('bare ib_insync (no runtime)', latency)
        base = Series('baseline (persistent connection)', latency)
        for _ in range(warmup):
            _invoke(self.settings, self.publish)
            self._bare_once()
            self._baseline_once()
        self.gateway.reset_counters()
        base_round_trips, throttled = _baseline_round_trips(self.gateway), self.baseline.throttled
        while len(ours.totals) < n:
            for _ in range(min(BLOCK, n - len(ours.totals))):
                _timed(ours, lambda: _invoke(self.settings, self.publish))
                _timed(bare, self._bare_once)
                _timed(base, self._baseline_once)
            ours.replayed_rounds.append([t * 1000 for t in replay((self.gateway.host, self.gateway.port),
                                                                  self.exchange)])
            ours.replayed.append(sum(ours.replayed_rounds[-1]))
            base.replayed += [t * 1000 for t in replay((self.gateway.host, self.gateway.port), self.baseline_exchange,
                                                       repeat_last=BLOCK)[-BLOCK:]]
        bare.replayed = ours.replayed
        counters = [c for c in self.gateway.counters() if not c['open']]
        ours.round_trips = _mean(c['roundTrips'] for c in counters if (c['clientId'] or 0) >= 100)
        bare.round_trips = _mean(c['roundTrips'] for c in counters if 10 <= (c['clientId'] or 0) < 100)
        base.round_trips = (_baseline_round_trips(self.gateway) - base_round_trips) / n
        base.throttled = self.baseline.throttled - throttled
        return [ours, bare, base]

    def _bare_once(self) -> float:
        _run_in_new_loop(_bare_summary(self.gateway.host, self.gateway.port))
        return 0.0

    def _baseline_once(self) -> float:
        result = self.baseline.summary()
        if self.topic is None:
            return 0.0
        started = time.perf_counter()
        publisher.publisher_client().publish(self.topic, json.dumps(result).encode()).result(
            self.settings.publish_timeout)
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    start = RunStart.now()
    latencies = [float(x) for x in args.latencies.split(',')]
    log.configure(stream=open(os.devnull, 'w'), level='INFO', json=True)   # the handler's logs cost what they cost
    series: list[Series] = []
    with GatewayProcess() as gateway, ResultsTopic(args.publish) as topic:
        settings = Settings(gateway_host=gateway.host, gateway_port=gateway.port, results_topic=topic,
                            project=PROJECT if topic else None)
        with PersistentGateway(gateway.host, gateway.port) as baseline:
            bench = Bench(gateway, settings, baseline)
            by_latency = {}
            for latency in latencies:
                by_latency[latency] = bench.measure(latency, args.n, args.warmup)
                print(f'measured {latency:g} ms', file=sys.stderr, flush=True)
            if 0.0 not in by_latency:   # the protocol time at 0 ms is needed for the gateway wait
                by_latency[0.0] = bench.measure(0.0, BLOCK, args.warmup)
            p0 = (median(by_latency[0.0][0].replayed), median(by_latency[0.0][2].replayed))
            delayed = {latency: _delayed_rounds(by_latency[latency][0], by_latency[0.0][0]) for latency in latencies}
            print(table(HEADERS, []))
            for latency in latencies:
                ours, bare, base = by_latency[latency]
                ours.gateway_wait_ms = bare.gateway_wait_ms = delayed[latency] * latency + p0[0]
                base.gateway_wait_ms = latency + p0[1]
                series += [ours, bare, base]
                _print_rows([ours, bare, base])
    path = write_report('latency', 'Latency: per-invocation handler vs persistent connection',
                        _report(series, bench.exchange, bench.baseline_exchange, p0, delayed, args), start=start)
    print(f'\nwrote {path}')
    return 0


def _invoke(settings: Settings, publish) -> float:
    """One `summary` through the real handler; returns the seconds spent publishing (0 when not)."""
    spent: list[float] = []

    def timed_publish(result, run_settings):
        started = time.perf_counter()
        publish(result, run_settings)
        spent.append(time.perf_counter() - started)

    result = handle(pubsub_push_event({'intent': 'summary'}, project=PROJECT), settings,
                    publish=timed_publish if publish else (lambda result, run_settings: None))
    if result.status != 'ok':
        raise RuntimeError(f'summary ended {result.status}: {result.error}')
    return spent[0] if spent else 0.0


def _delayed_rounds(at_latency: Series, at_zero: Series) -> int:
    """How many round trips the injected latency lengthens: per round, replay time at the latency minus
    at 0 ms exceeds half the latency."""
    if not at_latency.latency_ms:
        return 0
    rounds = range(len(at_zero.replayed_rounds[0]))
    return sum(1 for i in rounds
               if median([r[i] for r in at_latency.replayed_rounds]) - median([r[i] for r in at_zero.replayed_rounds])
               > at_latency.latency_ms / 2)


def _timed(series: Series, run) -> None:
    started = time.perf_counter()
    published = run()
    series.totals.append((time.perf_counter() - started) * 1000)
    series.publishes.append(published * 1000)


async def _bare_summary(host: str, port: int) -> None:
    """What `summary` asks the gateway, with ib_insync alone: connect, four requests, disconnect."""
    ib = IB()
    await ib.connectAsync(host, port, clientId=next(BARE_CLIENT_IDS), readonly=True)
    account = ib.managedAccounts()[0]
    await asyncio.gather(ib.accountSummaryAsync(account), ib.reqPositionsAsync(), ib.reqAllOpenOrdersAsync(),
                         ib.reqExecutionsAsync(ExecutionFilter(acctCode=account)))
    ib.disconnect()
    await asyncio.sleep(0)


def _run_in_new_loop(coroutine) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(coroutine)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _baseline_twice(host: str, port: int) -> None:
    with PersistentGateway(host, port, client_id=BASELINE_CLIENT_ID + 1) as baseline:   # the measured one holds 1
        baseline.summary()
        baseline.summary()   # the steady state: account summary is already subscribed


def _baseline_round_trips(gateway: GatewayProcess) -> int:
    return next(c['roundTrips'] for c in gateway.counters() if c['open'] and c['clientId'] == BASELINE_CLIENT_ID)


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float('nan')


HEADERS = ['latency ms', 'design', 'n', 'p50 ms', 'p95 ms', 'round trips', 'gateway wait ms', 'replayed min ms',
           'overhead p50 ms', 'overhead excl. publish', 'publish p50 ms', 'throttle stalls']


def _row(s: Series) -> list:
    return [f'{s.latency_ms:g}', s.design, len(s.totals), median(s.totals), percentile(s.totals, 0.95),
            f'{s.round_trips:.1f}', s.gateway_wait_ms, median(s.replayed), s.overhead(), s.overhead(with_publish=False),
            median(s.publishes), s.throttled]


def _print_rows(rows: list[Series]) -> None:
    for s in rows:
        print(table(HEADERS, [_row(s)]).splitlines()[-1], flush=True)


def _report(series: list[Series], ours: Exchange, baseline: Exchange, p0: tuple[float, float],
            delayed: dict[float, int], args: argparse.Namespace) -> list[str]:
    publish_note = ('Each handler run publishes its result to a topic on the Pub/Sub emulator and waits for the ack; '
                    'the baseline publishes its result dict the same way.' if args.publish else
                    'Run with `--no-publish`: nothing is published (the handler gets a publish function that does '
                    'nothing), so publish time is 0 and the totals exclude it.')
    rounds = ', '.join(f'{i + 1}: `{ids}`' for i, ids in enumerate(ours.request_ids))
    return [
        '## Results\n\n' + table(HEADERS, [_row(s) for s in series]),
        f'{args.n} timed runs per row after {args.warmup} warm-up runs; one `summary` at a time. ' + publish_note,
        '## Method\n\n'
        '- The simulated gateway runs in its own process (`bench/gateway.py`), as a real gateway would, so it '
        'does not share the GIL with the measured code.\n'
        '- **round trips** come from the simulator\'s per-connection counters: a request that arrives after a reply '
        'was written starts a new round trip. At 0 ms the count is not exact (replies overtake requests, so bursts '
        'split), which is why the wait below uses the round trips recorded at '
        f'{RECORD_LATENCY_MS} ms.\n'
        '- **gateway wait** = delayed round trips × latency + protocol time at 0 ms. A fresh connection makes '
        f'{len(ours.rounds)} round trips (the TWS message ids sent in each: {rounds}; that is the handshake, '
        'startApi, the startup batch, executions, and the request). Of these, the ones the injected latency '
        'lengthens are counted from the replays (a round whose replay time at the latency exceeds its time at 0 ms '
        'by more than half the latency): '
        + ', '.join(f'{n} at {latency:g} ms' for latency, n in delayed.items() if latency) +
        '. The simulator delays every reply, the handshake included, as a real network would. The baseline makes 1 '
        'round trip per job (the steady-state '
        f'requests {baseline.request_ids[-1]}: the account summary subscription from the first job is reused). '
        f'Protocol time at 0 ms is the recorded exchange replayed by a raw socket client (`bench/protocol.py`): '
        f'{p0[0]:.2f} ms for a fresh connection, {p0[1]:.2f} ms for the baseline\'s one round trip (medians; '
        f'one replay after every block of {BLOCK} runs).\n'
        '- **replayed min** is the same replay at the row\'s latency: a measured cross-check of the derived wait.\n'
        '- **overhead** = p50 of the total − gateway wait: what the client library, our runtime and publishing add '
        'on top of what the gateway makes any client wait. "excl. publish" subtracts each run\'s publish time.\n'
        '- **bare ib_insync** runs the same connect and requests in a plain event loop on the calling thread, '
        'without the handler, so handler − bare is the cost of our runtime alone.',
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m bench.latency', description=__doc__.split('\n')[0])
    parser.add_argument('--latencies', default='0,5,20', help='simulated reply latencies in ms, comma-separated')
    parser.add_argument('-n', type=int, default=200, help='timed runs per design and latency')
    parser.add_argument('--warmup', type=int, default=10, help='untimed runs first')
    parser.add_argument('--no-publish', dest='publish', action='store_false',
                        help='do not start the Pub/Sub emulator; publish nothing')
    return parser


if __name__ == '__main__':
    sys.exit(main())
