"""The shared rate limiter on a real PostgreSQL, with real separate processes sharing a bucket."""

from __future__ import annotations

import bisect
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from sync_pipelines.lib.db import Database, create_database
from sync_pipelines.lib.migrations import migrate
from sync_pipelines.lib.ratelimit import SharedRateLimiter, bucket_shape

SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def control_db(pg_db: Database) -> Database:
    migrate(pg_db, role="control")
    return pg_db


def _hammer(
    url: str,
    schema: str,
    name: str,
    shape: tuple[int, float, int],
    go: multiprocessing.synchronize.Event,
    ready: multiprocessing.Queue,
    results: multiprocessing.Queue,
    duration_s: float,
    max_count: int,
) -> None:
    """A separate process: acquire as fast as allowed, report when each acquire returned."""
    db = create_database("control", url, schema)
    limiter = SharedRateLimiter(db, name, *shape)
    with db.connect():  # open a pooled connection now, not inside the measured run
        pass
    ready.put(True)
    go.wait()
    stamps: list[float] = []
    deadline = time.time() + duration_s
    while time.time() < deadline and len(stamps) < max_count:
        limiter.acquire()
        stamps.append(time.time())
    results.put(stamps)
    db.dispose()


class Workers:
    """Processes running ``_hammer``, started and released together."""

    def __init__(self, url: str, schema: str, name: str, shape: tuple[int, float, int]) -> None:
        self.args = (url, schema, name, shape)
        self.go = SPAWN.Event()
        self.ready = SPAWN.Queue()
        self.results = SPAWN.Queue()
        self.procs: list[multiprocessing.process.BaseProcess] = []

    def start(self, count: int, duration_s: float, max_count: int = 10_000) -> None:
        for _ in range(count):
            proc = SPAWN.Process(
                target=_hammer,
                args=(*self.args, self.go, self.ready, self.results, duration_s, max_count),
            )
            proc.start()
            self.procs.append(proc)
        for _ in range(count):
            self.ready.get(timeout=30)

    def release_and_collect(self, timeout_s: float) -> list[list[float]]:
        self.go.set()
        stamps = [self.results.get(timeout=timeout_s) for _ in self.procs]
        for proc in self.procs:
            proc.join(timeout=10)
            assert proc.exitcode == 0
        return stamps

    def kill(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()


@pytest.fixture
def workers(
    pg_url: str, control_db: Database
) -> Iterator[Callable[[str, tuple[int, float, int]], Workers]]:
    started: list[Workers] = []

    def make(name: str, shape: tuple[int, float, int]) -> Workers:
        w = Workers(pg_url, control_db.schema, name, shape)
        started.append(w)
        return w

    yield make
    for w in started:
        w.kill()


def _max_in_window(stamps: list[float], window_s: float) -> int:
    """The most acquisitions inside any closed window of ``window_s`` seconds."""
    stamps = sorted(stamps)
    return max(
        (bisect.bisect_right(stamps, t + window_s) - i for i, t in enumerate(stamps)), default=0
    )


def test_two_processes_together_never_exceed_the_limit_yet_use_it(workers) -> None:
    limit, period_s, burst = 40, 4.0, 2
    periods = 3
    pool = workers("tiny_account", (limit, period_s, burst))
    pool.start(count=2, duration_s=periods * period_s)
    per_process = pool.release_and_collect(timeout_s=periods * period_s + 20)

    stamps = [t for one in per_process for t in one]
    # Both processes really competed for the one budget.
    assert all(len(one) >= limit // 4 for one in per_process), [len(one) for one in per_process]
    assert _max_in_window(stamps, period_s) <= limit
    assert len(stamps) / periods >= 0.9 * limit, len(stamps)


def test_pause_in_one_process_makes_another_wait(workers, control_db: Database) -> None:
    shape = (1000, 60.0, 10)
    pool = workers("paused_account", shape)
    pool.start(count=1, duration_s=30, max_count=1)

    pauser = SharedRateLimiter(control_db, "paused_account", *shape)
    pauser.pause_for(1.5)
    paused_at = time.time()
    [[granted_at]] = pool.release_and_collect(timeout_s=30)

    # Waited for the pause to lift (1.5 s), not for the limiter's 60 s window to pass.
    assert 1.4 <= granted_at - paused_at < 30
    # The block holds in the pausing process too, then lifts for everyone.
    assert pauser.try_acquire() == 0.0


def test_pause_never_shortens_a_longer_block(control_db: Database) -> None:
    limiter = SharedRateLimiter(control_db, "acct", 1000, 60.0, 10)
    limiter.pause_for(30)
    limiter.pause_for(1)
    assert limiter.try_acquire() > 25


def _drain(limiter: SharedRateLimiter) -> float:
    """Take every free token; return the wait the bucket then asks for."""
    while (wait := limiter.try_acquire()) == 0.0:
        pass
    return wait


def _bucket(db: Database, name: str) -> sa.Row:
    with db.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT capacity, refill_per_s, announced_limit FROM rate_limit_buckets"
                " WHERE name = :n"
            ),
            {"n": name},
        ).one()


def test_announced_limit_lowers_the_rate_for_every_sharer(control_db: Database) -> None:
    limiter = SharedRateLimiter(control_db, "acct", limit=100, period_s=2.0, burst=1)
    # Configured 100 per 2 s, burst 1: a token every 2/99 s.
    assert _drain(limiter) < 0.03

    limiter.observe_limit(10)  # now 9 refills per 2 s: a token every ~0.22 s
    # The stored shape is the proof; the wait only bounds it (a loaded machine may have
    # accrued part of the next token while draining, so no lower bound on it).
    assert 0 < _drain(limiter) <= 2 / 9 + 0.01
    assert tuple(_bucket(control_db, "acct")) == (1.0, pytest.approx(4.5), 10)

    # A process that starts later with the same configured cap keeps the announced limit.
    late = SharedRateLimiter(control_db, "acct", limit=100, period_s=2.0, burst=1)
    assert 0 < _drain(late) <= 2 / 9 + 0.01
    assert tuple(_bucket(control_db, "acct")) == (1.0, pytest.approx(4.5), 10)

    # The announcement can raise the rate again, but never above the configured cap.
    late.observe_limit(1000)
    assert _bucket(control_db, "acct").refill_per_s == pytest.approx(99 / 2)


def test_changed_configured_limit_reshapes_the_bucket(control_db: Database) -> None:
    SharedRateLimiter(control_db, "acct", limit=120, period_s=60.0, burst=2).try_acquire()
    assert tuple(_bucket(control_db, "acct")) == (2.0, pytest.approx(118 / 60), None)

    SharedRateLimiter(control_db, "acct", limit=30, period_s=60.0, burst=2).try_acquire()
    assert tuple(_bucket(control_db, "acct")) == (2.0, pytest.approx(28 / 60), None)


def test_first_use_by_many_at_once_creates_one_bucket(control_db: Database) -> None:
    callers = 8
    barrier = threading.Barrier(callers)
    waits: list[float] = []
    errors: list[BaseException] = []

    def first_use() -> None:
        limiter = SharedRateLimiter(control_db, "fresh", limit=100, period_s=60.0, burst=3)
        barrier.wait()
        try:
            waits.append(limiter.try_acquire())
        except BaseException as exc:  # any failure at all is reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert errors == []
    assert len(waits) == callers
    # One bucket of 3 tokens: 3 callers pass, the others are told to wait.
    assert waits.count(0.0) == 3
    with control_db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM rate_limit_buckets")).scalar_one() == 1


@pytest.mark.parametrize(
    ("limit", "period_s", "burst"), [(120, 60.0, 2), (40, 4.0, 1), (5, 1.0, 10), (2, 1.0, 1)]
)
def test_bucket_shape_allows_exactly_the_limit_per_period(
    limit: int, period_s: float, burst: int
) -> None:
    capacity, refill = bucket_shape(limit, period_s, burst)
    assert capacity >= 1 and refill > 0
    assert capacity + refill * period_s == pytest.approx(limit)
