"""Optional reverse sync: leads changed in Gestão Scouter written back to TabuladorMax.

Loop prevention (contracts/scouter.md), with the marker read where it is written:
- rows whose destination ``sync_source`` is ``'tabuladormax'`` were written by the export:
  never taken back;
- taken rows are written with ``sync_source = 'gestao_scouter'`` and ``last_sync_at`` = the
  database's ``now()`` of that transaction, and ``updated_at`` = the destination's value, so
  the export's guard (``updated_at <= last_sync_at``) skips them until someone changes them
  again in TabuladorMax;
- a TabuladorMax row at least as new (``updated_at >=``) is never overwritten.

The cursor (destination ``updated_at``, ``id``) is committed with the rows of its page; pages
follow until one comes back empty (a reply shorter than the limit may only be the server's
row cap).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..lib.db import Database
from ..lib.upsert import bulk_upsert
from .client import GestaoScouterClient
from .export import REVERSE_MARKER
from .mapping import EXPORT_MARKER, FieldMapping
from .source import LEADS_TABLE, source_columns

STATE = "gestao_scouter_reverse_sync_state"
RUN_ID_COLUMN = "sync_run_id"  # the Dagster run that last wrote a lead, where leads has it
STATE_NAME = "leads"
_TRUE = {"true", "t", "1", "sim", "s", "yes"}
_FALSE = {"false", "f", "0", "nao", "não", "n", "no"}


@dataclass
class ReverseResult:
    seen: int = 0
    written: int = 0
    skipped_own: int = 0
    skipped_older: int = 0
    pages: int = 0


def _cursor(conn: sa.Connection, db: Database) -> tuple[str, int] | None:
    row = conn.execute(
        sa.text(f"SELECT cursor_updated_at, cursor_id FROM {db.table(STATE)} WHERE name = :n"),
        {"n": STATE_NAME},
    ).first()
    if row is None or row[0] is None:
        return None
    return row[0].isoformat(), int(row[1])


def peek_changes(db: Database, client: GestaoScouterClient) -> str | None:
    """A cheap look (one row) for the sensor: the first change after the cursor, or None."""
    with db.connect() as conn:
        after = _cursor(conn, db)
    rows = client.changed_leads(after, limit=1)
    return f"{rows[0]['updated_at']}-{rows[0]['id']}" if rows else None


def _source_value(value: Any, source_type: str) -> Any:
    if value is None:
        return None
    if source_type == "boolean" and isinstance(value, str):
        lowered = value.strip().lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else None
    if source_type in ("text", "character varying") and not isinstance(value, str):
        return str(value) if not isinstance(value, dict | list) else value
    return value


def reverse_sync(
    db: Database,
    client: GestaoScouterClient,
    mapping: FieldMapping,
    *,
    page_size: int = 500,
    max_pages: int = 20,
    run_id: str | None = None,
) -> ReverseResult:
    """Pull changed leads after the cursor, page by page; returns counts. ``run_id`` (the
    Dagster run) goes on each lead written, where TabuladorMax's ``leads`` has the
    ``sync_run_id`` column (sql/tabuladormax/0003 adds it where the table already exists)."""
    available = source_columns(db)
    stamp = {RUN_ID_COLUMN: run_id} if RUN_ID_COLUMN in available else None
    # Only one-to-one mappings can be reversed (telefone is built from three columns).
    reverse = {
        dest: sources[0]
        for dest, sources in mapping.columns.items()
        if len(sources) == 1 and sources[0] in available
    }
    table = f"{db.schema}.{LEADS_TABLE}" if db.schema else LEADS_TABLE
    result = ReverseResult()
    with db.connect() as conn:
        after = _cursor(conn, db)
    for _ in range(max_pages):
        rows = client.changed_leads(after, limit=page_size)
        if not rows:
            break
        result.pages += 1
        result.seen += len(rows)
        theirs = [r for r in rows if r.get("sync_source") != EXPORT_MARKER]
        result.skipped_own += len(rows) - len(theirs)
        with db.begin() as conn:
            now = conn.execute(sa.text("SELECT now()")).scalar_one()
            current: Mapping[int, dt.datetime] = dict(
                conn.execute(
                    sa.text(
                        f"SELECT id, updated_at FROM {db.table(LEADS_TABLE)} "
                        "WHERE id = ANY(:ids) FOR UPDATE"
                    ),
                    {"ids": [r["id"] for r in theirs]},
                ).all()
            )
            newer = []
            for row in theirs:
                theirs_at = dt.datetime.fromisoformat(row["updated_at"])
                mine = current.get(row["id"])
                if mine is not None and mine >= theirs_at:
                    result.skipped_older += 1
                    continue
                lead = {
                    src: _source_value(row.get(dest), available[src])
                    for dest, src in reverse.items()
                }
                lead |= {
                    "sync_source": REVERSE_MARKER,
                    "sync_status": "synced",
                    "last_sync_at": now,
                    "updated_at": theirs_at,
                }
                newer.append(lead)
            if newer:
                bulk_upsert(conn, table, newer, ["id"], stamp=stamp)
                result.written += len(newer)
            last = rows[-1]
            conn.execute(
                sa.text(
                    f"INSERT INTO {db.table(STATE)} AS s (name, cursor_updated_at, cursor_id, "
                    "rows_seen, rows_written) VALUES (:n, :u, :i, :seen, :w) ON CONFLICT (name) DO "
                    "UPDATE SET cursor_updated_at = :u, cursor_id = :i, rows_seen = s.rows_seen + :seen, "
                    "rows_written = s.rows_written + :w, updated_at = now()"
                ),
                {
                    "n": STATE_NAME,
                    "u": last["updated_at"],
                    "i": last["id"],
                    "seen": len(rows),
                    "w": len(newer),
                },
            )
        after = (last["updated_at"], int(last["id"]))
        # A short page is not the end: PostgREST caps a reply at its "max rows" whatever the
        # limit asks, and says nothing about it. Only an empty page is.
    return result
