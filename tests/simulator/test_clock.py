"""The simulator's clock."""
import threading
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from simulator.clock import SimClock

UTC = timezone.utc


def test_starts_at_the_given_instant_and_runs():
    clock = SimClock(datetime(2026, 11, 27, 12, 59, 30, tzinfo=ZoneInfo('US/Eastern')))
    first = clock.now()
    assert first.tzinfo == UTC
    assert timedelta(0) <= first - datetime(2026, 11, 27, 17, 59, 30, tzinfo=UTC) < timedelta(seconds=1)
    time.sleep(0.05)
    assert clock.now() - first >= timedelta(seconds=0.05)


def test_naive_start_means_utc():
    clock = SimClock(datetime(2026, 1, 2, 3, 4, 5))
    assert clock.now() - datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) < timedelta(seconds=1)


def test_no_start_follows_the_wall_clock():
    assert abs(SimClock().now() - datetime.now(UTC)) < timedelta(seconds=1)


def test_set_and_advance():
    clock = SimClock(datetime(2026, 1, 1, tzinfo=UTC))
    clock.set(datetime(2026, 11, 27, 18, tzinfo=UTC))
    assert clock.now() - datetime(2026, 11, 27, 18, tzinfo=UTC) < timedelta(seconds=1)
    before = clock.now()
    clock.advance(3600)
    assert timedelta(hours=1) <= clock.now() - before < timedelta(hours=1, seconds=1)


def test_advances_from_many_threads_all_count():
    clock = SimClock(datetime(2026, 1, 1, tzinfo=UTC))
    start = clock.now()
    threads = [threading.Thread(target=lambda: [clock.advance(1) for _ in range(500)]) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert timedelta(seconds=4000) <= clock.now() - start < timedelta(seconds=4001)
