"""Named locks held by one dedicated database connection.

PostgreSQL session advisory locks (MySQL/MariaDB: GET_LOCK) belong to the connection that
took them, so the server frees them by itself when the holder's process dies or its
connection drops: a crashed run never leaves a lock behind. ``try`` semantics only: a
second holder fails at once with a message naming the lock, it never queues behind a
long run.
"""

from __future__ import annotations

import hashlib
from types import TracebackType

import sqlalchemy as sa

from .db import Database


class LockNotAvailable(RuntimeError):
    """Another process holds the lock; the caller should stop and let that run finish."""


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_try_advisory_lock`` (hashtext is only 32 bits)."""
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big", signed=True)


class AdvisoryLock:
    """``with AdvisoryLock(db, "detran:examiner:ABC12"):`` — held for the block, always released.

    Advisory locks are server-wide, so the key also names the role's schema (MySQL: the
    database): two deployments or sandboxes sharing one server never block each other, while
    every worker of one deployment (same schema) does.
    """

    def __init__(self, db: Database, name: str, *, holder_hint: str = ""):
        self.db = db
        self.name = name
        self.holder_hint = holder_hint
        scope = db.schema if db.is_postgres else db.engine.url.database
        self._scoped = f"{scope or ''}/{name}"
        self._conn: sa.Connection | None = None

    def acquire(self) -> AdvisoryLock:
        # A connection of its own: the caller's transactions may commit, roll back or be
        # returned to the pool while the lock must stay with one live session.
        conn = self.db.engine.connect()
        try:
            if self.db.is_postgres:
                got = conn.execute(
                    sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(self._scoped)}
                ).scalar()
            else:
                got = (
                    conn.execute(
                        sa.text("SELECT GET_LOCK(:n, 0)"), {"n": self._mysql_name()}
                    ).scalar()
                    == 1
                )
            conn.commit()
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            hint = f" {self.holder_hint}" if self.holder_hint else ""
            raise LockNotAvailable(
                f"lock '{self.name}' is held by another run; this one stops without doing anything."
                f"{hint} It frees itself when that run ends (or its process dies)."
            )
        self._conn = conn
        return self

    def _mysql_name(self) -> str:
        # MySQL lock names are limited to 64 characters.
        scoped = self._scoped
        return scoped if len(scoped) <= 64 else hashlib.sha1(scoped.encode()).hexdigest()

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if self.db.is_postgres:
                conn.execute(
                    sa.text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(self._scoped)}
                )
            else:
                conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": self._mysql_name()})
            conn.commit()
        except Exception:
            # Could not unlock cleanly: drop the connection instead of returning it to the
            # pool, and the server releases the lock with the session.
            conn.invalidate()
        finally:
            conn.close()

    @property
    def held(self) -> bool:
        return self._conn is not None

    def __enter__(self) -> AdvisoryLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
