"""Named locks held by one dedicated database connection.

PostgreSQL session advisory locks (MySQL/MariaDB: GET_LOCK) belong to the connection that
took them, so the server frees them by itself when the holder's process dies or its
connection drops: a crashed run never leaves a lock behind. ``try`` semantics only: a
second holder fails at once with a message naming the lock, it never queues behind a
long run.

The other side of that: if the holder's session drops while the run goes on (a network cut,
a server restart or failover, an idle-session timeout, ``pg_terminate_backend``), the lock is
gone and nothing tells the run. So a holder calls ``ensure_held()`` before each unit of
writes; it asks the server, on the lock's own session, whether that session still holds the
lock, and raises ``LockLostError`` naming the lock when it does not. The run then stops
instead of writing beside another holder; it does not re-acquire, because another run may
have held the lock (and written) in between.
"""

from __future__ import annotations

import hashlib
from types import TracebackType
from typing import ClassVar

import sqlalchemy as sa

from .db import Database


class LockNotAvailable(RuntimeError):
    """Another process holds the lock; the caller should stop and let that run finish."""


class LockLostError(RuntimeError):
    """The session holding the lock dropped (or the lock was released): stop writing."""


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_try_advisory_lock`` (hashtext is only 32 bits)."""
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big", signed=True)


class AdvisoryLock:
    """``with AdvisoryLock(db, "detran:examiner:ABC12"):`` — held for the block, always released.

    Advisory locks are server-wide, so the key also names the role's schema (MySQL: the
    database): two deployments or sandboxes sharing one server never block each other, while
    every worker of one deployment (same schema) does.
    """

    # Locks this process holds, by server and scoped name: lets a write point deep inside a
    # run check the lock its caller took (``AdvisoryLock.ensure_held_by(db, name)``).
    _held_here: ClassVar[dict[tuple[str, str], AdvisoryLock]] = {}

    def __init__(self, db: Database, name: str, *, holder_hint: str = ""):
        self.db = db
        self.name = name
        self.holder_hint = holder_hint
        self._scoped = self._scope(db, name)
        self._conn: sa.Connection | None = None
        self.session_id: int | None = None  # the holder's backend pid / MySQL connection id

    @staticmethod
    def _scope(db: Database, name: str) -> str:
        scope = db.schema if db.is_postgres else db.engine.url.database
        return f"{scope or ''}/{name}"

    @staticmethod
    def _server(db: Database) -> str:
        return db.engine.url.render_as_string(hide_password=True)

    def acquire(self) -> AdvisoryLock:
        # A connection of its own: the caller's transactions may commit, roll back or be
        # returned to the pool while the lock must stay with one live session.
        conn = self.db.engine.connect()
        try:
            if self.db.is_postgres:
                got, session = conn.execute(
                    sa.text("SELECT pg_try_advisory_lock(:k), pg_backend_pid()"),
                    {"k": lock_key(self._scoped)},
                ).one()
            else:
                status, session = conn.execute(
                    sa.text("SELECT GET_LOCK(:n, 0), CONNECTION_ID()"), {"n": self._mysql_name()}
                ).one()
                got = status == 1
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
        self.session_id = int(session)
        self._held_here[(self._server(self.db), self._scoped)] = self
        return self

    def ensure_held(self) -> None:
        """Raise ``LockLostError`` unless this lock's session is alive and still holds it.

        Call it before each unit of writes: one small query on the lock's own connection.
        """
        conn = self._conn
        if conn is None:
            raise LockLostError(
                f"lock '{self.name}' is not held (never acquired or already released); "
                "this run stops before writing more"
            )
        try:
            if self.db.is_postgres:
                key = lock_key(self._scoped)
                # A bigint advisory key shows in pg_locks as (classid, objid) = its high and
                # low 32 bits, with objsubid 1.
                still = conn.execute(
                    sa.text(
                        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
                        " AND pid = pg_backend_pid() AND granted AND objsubid = 1"
                        " AND classid = :hi AND objid = :lo)"
                    ),
                    {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF},
                ).scalar()
            else:
                still = (
                    conn.execute(
                        sa.text("SELECT IS_USED_LOCK(:n) = CONNECTION_ID()"),
                        {"n": self._mysql_name()},
                    ).scalar()
                    == 1
                )
            conn.commit()
            reason = "the server no longer lists it for this session"
        except sa.exc.DBAPIError as exc:
            still = False
            reason = f"its database session is gone ({type(exc.orig or exc).__name__})"
        if not still:
            self._forget()
            conn.invalidate()
            conn.close()
            raise LockLostError(
                f"lock '{self.name}' was lost while this run held it: {reason}. Another run "
                "may hold it now, so this one stops before writing more; re-run it."
            )

    @classmethod
    def ensure_held_by(cls, db: Database, name: str) -> None:
        """``ensure_held()`` of the lock ``name`` this process took on ``db``, for write points
        that only know the lock's name; ``LockLostError`` if this process does not hold it."""
        lock = cls._held_here.get((cls._server(db), cls._scope(db, name)))
        if lock is None:
            raise LockLostError(
                f"lock '{name}' is not held by this process; this run stops before writing more"
            )
        lock.ensure_held()

    def _forget(self) -> None:
        key = (self._server(self.db), self._scoped)
        if self._held_here.get(key) is self:
            del self._held_here[key]
        self._conn = None

    def _mysql_name(self) -> str:
        # MySQL lock names are limited to 64 characters.
        scoped = self._scoped
        return scoped if len(scoped) <= 64 else hashlib.sha1(scoped.encode()).hexdigest()

    def release(self) -> None:
        conn = self._conn
        if conn is None:
            return
        self._forget()
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
