"""The checkpoint store: where long, paged work records how far it got, to resume after a crash.

One row per (pipeline, partition) in a ``sync_checkpoints`` table. A source keeps that table
in the same database as its data, so ``save`` can take the caller's open connection and
commit the checkpoint in the same transaction as the page it describes: either both the page
and the new position are stored, or neither is. A crash between the two cannot happen.

PostgreSQL only (the table's position is ``jsonb``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .db import Database

STATUSES = ("running", "done", "failed")

# The table has no error column (each source copies its shape), so a failure's message rides
# in the position under this key; ``Checkpoint`` hands it back apart from the position.
_ERROR_KEY = "_error"
_MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class Checkpoint:
    pipeline: str
    partition_key: str
    status: str
    position: dict[str, Any]
    updated_at: datetime
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.status == "done"


def _checkpoint(row: sa.Row) -> Checkpoint:
    position = dict(row.position or {})
    error = position.pop(_ERROR_KEY, None)
    return Checkpoint(row.pipeline, row.partition_key, row.status, position, row.updated_at, error)


class CheckpointStore:
    """Resume points of one database's paged work, in its ``table`` (default sync_checkpoints).

    Methods that write take an optional ``conn``: pass it to write inside your own transaction
    (the page and its checkpoint together); without it each call commits on its own.
    """

    def __init__(self, db: Database, table: str = "sync_checkpoints") -> None:
        if not db.is_postgres:
            raise ValueError(f"CheckpointStore needs PostgreSQL; {db.describe()} is {db.dialect}")
        self.db = db
        self._table = db.table(table)

    @contextmanager
    def _use(self, conn: sa.Connection | None) -> Iterator[sa.Connection]:
        if conn is not None:
            yield conn
        else:
            with self.db.begin() as own:
                yield own

    def get(
        self, pipeline: str, partition_key: str, *, conn: sa.Connection | None = None
    ) -> Checkpoint | None:
        with self._use(conn) as c:
            row = c.execute(
                sa.text(
                    "SELECT pipeline, partition_key, status, position, updated_at"
                    f" FROM {self._table} WHERE pipeline = :p AND partition_key = :k"
                ),
                {"p": pipeline, "k": partition_key},
            ).first()
        return None if row is None else _checkpoint(row)

    def save(
        self,
        conn: sa.Connection,
        pipeline: str,
        partition_key: str,
        position: dict[str, Any],
        status: str = "running",
    ) -> None:
        """Record ``position`` in the caller's transaction: it commits or rolls back with it."""
        if status not in STATUSES:
            raise ValueError(f"checkpoint status must be one of {STATUSES}, got {status!r}")
        # Serialising here makes a position that is not JSON fail before anything is written.
        payload = json.dumps(position)
        conn.execute(
            sa.text(
                f"INSERT INTO {self._table} (pipeline, partition_key, status, position, updated_at)"
                " VALUES (:p, :k, :s, CAST(:pos AS jsonb), now())"
                " ON CONFLICT (pipeline, partition_key) DO UPDATE"
                " SET status = EXCLUDED.status, position = EXCLUDED.position,"
                " updated_at = EXCLUDED.updated_at"
            ),
            {"p": pipeline, "k": partition_key, "s": status, "pos": payload},
        )

    def mark_done(
        self,
        pipeline: str,
        partition_key: str,
        position: dict[str, Any] | None = None,
        *,
        conn: sa.Connection | None = None,
    ) -> None:
        """The partition is complete; ``position`` replaces the last one when given."""
        with self._use(conn) as c:
            if position is None:
                self._set_status(c, pipeline, partition_key, "done", error=None)
            else:
                self.save(c, pipeline, partition_key, position, status="done")

    def mark_failed(
        self, pipeline: str, partition_key: str, error: str, *, conn: sa.Connection | None = None
    ) -> None:
        """The partition failed; its position stays, so a re-run resumes from it.

        ``error`` is stored as given (truncated): pass a message with no secrets or personal data.
        """
        with self._use(conn) as c:
            self._set_status(c, pipeline, partition_key, "failed", error=error[:_MAX_ERROR_CHARS])

    def reset(
        self, pipeline: str, partition_key: str, *, conn: sa.Connection | None = None
    ) -> bool:
        """Forget the partition's checkpoint (the next run starts over); True if there was one."""
        with self._use(conn) as c:
            result = c.execute(
                sa.text(f"DELETE FROM {self._table} WHERE pipeline = :p AND partition_key = :k"),
                {"p": pipeline, "k": partition_key},
            )
        return result.rowcount > 0

    def _set_status(
        self,
        conn: sa.Connection,
        pipeline: str,
        partition_key: str,
        status: str,
        error: str | None,
    ) -> None:
        # Keep the position, drop an older error, add the new one if any. Upsert: a partition
        # may finish or fail before it ever saved a position.
        conn.execute(
            sa.text(
                f"INSERT INTO {self._table} (pipeline, partition_key, status, position, updated_at)"
                " VALUES (:p, :k, :s, CAST(:extra AS jsonb), now())"
                " ON CONFLICT (pipeline, partition_key) DO UPDATE"
                " SET status = EXCLUDED.status,"
                f" position = ({self._table}.position - CAST(:key AS text)) || EXCLUDED.position,"
                " updated_at = EXCLUDED.updated_at"
            ),
            {
                "p": pipeline,
                "k": partition_key,
                "s": status,
                "key": _ERROR_KEY,
                "extra": json.dumps({} if error is None else {_ERROR_KEY: error}),
            },
        )

    def list(self, pipeline: str) -> list[Checkpoint]:
        """Every checkpoint of a pipeline, by partition key."""
        with self.db.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT pipeline, partition_key, status, position, updated_at"
                    f" FROM {self._table} WHERE pipeline = :p ORDER BY partition_key"
                ),
                {"p": pipeline},
            )
            return [_checkpoint(row) for row in rows]
