"""A rate limiter shared by every process that calls one API account.

An API plan limits the account, not a process: concurrent runs, backfills and pods together
must stay under it. So the budget is a token bucket kept in one PostgreSQL row
(``rate_limit_buckets`` in the control database) and every request takes its token there.

Shape of the bucket. With ``capacity = burst`` and ``refill = (limit - burst) / period_s``,
any closed window of ``period_s`` seconds sees at most ``capacity`` tokens that were already
in the bucket plus ``refill * period_s`` new ones: ``burst + (limit - burst) = limit``
acquisitions, across every process. Under load the steady rate is ``limit - burst`` per
period, so a small burst keeps throughput close to the limit. Burst also bounds short
windows: any one-second window sees at most ``burst + refill`` grants, so for Tiny
(120/min plus a 4 req/s burst bucket) ``burst=2`` keeps both (2 + 118/60 < 4).

Each acquisition is one short UPDATE on the bucket row, with time taken from the database
clock (``clock_timestamp()``) so hosts with skewed clocks still agree; nobody sleeps while
holding the row lock.
"""

from __future__ import annotations

import math
import random
import threading
import time

import sqlalchemy as sa

from .db import Database

TABLE = "rate_limit_buckets"

# One statement: lock the row, credit the tokens accrued since the last update, take one if
# there is one and the bucket is not blocked. FOR UPDATE in the CTE makes a concurrent caller
# wait for the lock and then read the newest row. If its clock_timestamp() was taken before
# that wait, it can be older than the stored updated_at: elapsed time is clamped at 0 and
# updated_at never moves back, so a stale clock only ever under-credits tokens.
_TAKE = """
WITH cur AS (
    SELECT name, capacity, refill_per_s, tokens, blocked_until, updated_at,
           clock_timestamp() AS now
    FROM {t} WHERE name = :name
    FOR UPDATE
), calc AS (
    SELECT name, refill_per_s,
           GREATEST(updated_at, now) AS stamp,
           LEAST(capacity, tokens + refill_per_s
                 * GREATEST(0, EXTRACT(EPOCH FROM now - updated_at)::float8)) AS avail,
           COALESCE(EXTRACT(EPOCH FROM blocked_until - now)::float8, 0) AS blocked_s
    FROM cur
)
UPDATE {t} AS b
SET tokens = CASE WHEN c.avail >= 1 AND c.blocked_s <= 0 THEN c.avail - 1 ELSE c.avail END,
    updated_at = c.stamp
FROM calc AS c
WHERE b.name = c.name
RETURNING c.avail >= 1 AND c.blocked_s <= 0 AS granted, c.avail, c.refill_per_s, c.blocked_s
"""

# Change the bucket's shape. Tokens accrued so far are credited at the old rate first, so a
# new, faster rate never applies retroactively to time that passed under the old one.
_RESHAPE = """
UPDATE {t}
SET tokens = LEAST(:capacity, capacity, tokens + refill_per_s
                   * GREATEST(0, EXTRACT(EPOCH FROM clock_timestamp() - updated_at)::float8)),
    updated_at = GREATEST(updated_at, clock_timestamp()),
    capacity = :capacity,
    refill_per_s = :refill,
    announced_limit = :announced
WHERE name = :name
"""

# A 429 means the API's count and ours disagree: drop what is left in the bucket and make
# every sharer wait until the API's window is over. A longer block already set is kept.
_PAUSE = """
UPDATE {t}
SET blocked_until = GREATEST(COALESCE(blocked_until, '-infinity'::timestamptz),
                             clock_timestamp() + make_interval(secs => :seconds)),
    tokens = 0,
    updated_at = GREATEST(updated_at, clock_timestamp())
WHERE name = :name
"""


def bucket_shape(limit: int, period_s: float, burst: int) -> tuple[float, float]:
    """(capacity, refill per second) that allow at most ``limit`` grants per ``period_s``.

    Capacity stays below the limit so the refill rate is positive (the table requires it).
    A limit of 1 is the one case that cannot be exact: it then holds for half-open windows.
    """
    capacity = max(1, min(burst, limit - 1))
    refill = max(limit - capacity, 1) / period_s
    return float(capacity), refill


class SharedRateLimiter:
    """At most ``limit`` requests per ``period_s`` for the bucket ``name``, in all processes.

    ``limit`` is the configured cap; ``observe_limit`` lowers it to what the API announces
    (never above the cap). Processes sharing a bucket should share its configuration: the
    row keeps the shape written last. Safe to call from many threads (the engine's pool hands
    each call its own connection).
    """

    def __init__(
        self,
        db: Database,
        name: str,
        limit: int,
        period_s: float = 60.0,
        burst: int = 1,
        *,
        max_jitter_s: float = 0.05,
    ) -> None:
        if limit < 1 or burst < 1 or period_s <= 0:
            raise ValueError(
                f"rate limit {name!r}: need limit >= 1, burst >= 1 and period_s > 0 "
                f"(got limit={limit}, burst={burst}, period_s={period_s})"
            )
        self.db = db
        self.name = name
        self.limit = limit
        self.period_s = period_s
        self.burst = burst
        self.max_jitter_s = max_jitter_s
        self._table = db.table(TABLE)
        self._announced: int | None = None
        self._ready = False
        self._ready_lock = threading.Lock()

    @property
    def effective_limit(self) -> int:
        """The limit this process enforces: the configured cap, or less if the API said so."""
        if self._announced is None:
            return self.limit
        return min(self.limit, self._announced)

    def acquire(self) -> None:
        """Block until one request may be sent."""
        while True:
            wait = self.try_acquire()
            if wait <= 0:
                return
            # Jitter spreads processes that were told the same wait, so they do not all come
            # back in the same millisecond; it only ever adds delay, never a token.
            time.sleep(wait + random.uniform(0, min(self.max_jitter_s, wait / 4)))

    def try_acquire(self) -> float:
        """Take a token if one is free: 0.0 when granted, else the seconds to wait first."""
        self._ensure_bucket()
        with self.db.begin() as conn:
            row = conn.execute(sa.text(_TAKE.format(t=self._table)), {"name": self.name}).first()
        if row is None:
            # Someone removed the row (a reset by hand): recreate it and try again.
            self._ready = False
            return 0.01
        if row.granted:
            return 0.0
        token_wait = (1 - row.avail) / row.refill_per_s
        return max(row.blocked_s, token_wait, 0.001)

    def pause_for(self, seconds: float) -> None:
        """The API said wait (429, remaining 0): every process sharing the bucket waits."""
        if not seconds > 0:
            return
        self._ensure_bucket()
        with self.db.begin() as conn:
            conn.execute(
                sa.text(_PAUSE.format(t=self._table)), {"name": self.name, "seconds": seconds}
            )

    def observe_limit(self, limit: int) -> None:
        """The API announced its limit: run at min(configured cap, announced) from now on.

        Called on every response, so it writes only when the announcement changes.
        """
        if limit < 1:
            return
        self._ensure_bucket()
        if limit == self._announced:
            return
        self._announced = limit
        with self.db.begin() as conn:
            self._reshape(conn)

    def _reshape(self, conn: sa.Connection) -> None:
        capacity, refill = bucket_shape(self.effective_limit, self.period_s, self.burst)
        conn.execute(
            sa.text(_RESHAPE.format(t=self._table)),
            {
                "name": self.name,
                "capacity": capacity,
                "refill": refill,
                "announced": self._announced,
            },
        )

    def _ensure_bucket(self) -> None:
        """Create the row on first use, or bring its shape in line with this configuration."""
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            capacity, refill = bucket_shape(self.effective_limit, self.period_s, self.burst)
            with self.db.begin() as conn:
                # DO NOTHING: several processes starting at once all succeed, one row results.
                conn.execute(
                    sa.text(
                        f"INSERT INTO {self._table} (name, capacity, refill_per_s, tokens)"
                        " VALUES (:name, :capacity, :refill, :capacity)"
                        " ON CONFLICT (name) DO NOTHING"
                    ),
                    {"name": self.name, "capacity": capacity, "refill": refill},
                )
                row = conn.execute(
                    sa.text(
                        f"SELECT capacity, refill_per_s, announced_limit FROM {self._table}"
                        " WHERE name = :name FOR UPDATE"
                    ),
                    {"name": self.name},
                ).one()
                # What another process learned from the API still holds for this one.
                self._announced = row.announced_limit
                capacity, refill = bucket_shape(self.effective_limit, self.period_s, self.burst)
                if not (
                    math.isclose(row.capacity, capacity) and math.isclose(row.refill_per_s, refill)
                ):
                    self._reshape(conn)
            self._ready = True
