"""Which instances changed in the main database since the last look: one grouped query a table.

Plain Python for the ``local_sync_changed_tenants`` sensor. A row's change time is its
newest timestamp the application keeps: ``COALESCE(updated_at, created_at)`` for contacts,
``COALESCE(updated_at, finished_at, started_at)`` for chats (``updated_at`` only where the
main database's ``chats`` has it). Per table, the state (the sensor's cursor) is a window
start ``low`` and, per instance, a fingerprint of its rows changed at or after ``low``:
``(rows, sum of change times in microseconds, newest change time)``.

Each look runs one query per table over the rows changed at or after the stored ``low``
(``WHERE updated_at >= low OR (updated_at IS NULL AND created_at >= low)``: an index range
scan on each column when the main database has those indexes, see ``CHANGE_INDEXES``),
grouped by instance. An instance changed when its fingerprint over that same window differs
from the stored one. That sees what a bare "newest timestamp" watermark misses:

- two changes with the same ``updated_at`` (the second adds a row or a time to the sum);
- a transaction that commits after the last look with a change time older than the newest
  one already seen (a late commit): it is still inside the window, so it changes the sum.

The window then moves to ``min(newest change seen, now) - overlap`` (never back; capped at
this process's clock so a writer whose clock runs ahead cannot push it past changes still to
come), and the fingerprints over the new window are computed by the same query (conditional
sums), so the next look compares like with like.

What it cannot see: a transaction that commits more than ``overlap`` after its change time,
rows deleted at the source (contacts are only soft-deleted, which stamps ``updated_at``),
sector links (no timestamp), chat edits that stamp nothing (a transfer of an open chat when
``chats`` has no ``updated_at``), two commits to one row within one timestamp tick. The
6-hourly full reconcile is what repairs those.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import sqlalchemy as sa

from . import source

EPOCH = dt.datetime(1970, 1, 1)

# The indexes of the main database that make each look an index range scan over the rows of
# the window instead of a scan of the whole table (the project does not own that database:
# its DBA creates them; the README has the statements).
CHANGE_INDEXES = {
    "contacts": ("updated_at", "created_at"),
    "chats": ("updated_at", "finished_at", "started_at"),
}


@dataclass(frozen=True)
class Watched:
    """A table and its change-time columns, newest first (``COALESCE`` order)."""

    table: str
    columns: tuple[str, ...]


def watched_tables(conn: sa.Connection) -> list[Watched]:
    chat_columns = ("finished_at", "started_at")
    if source.has_column(conn, "chats", "updated_at"):
        chat_columns = ("updated_at", *chat_columns)
    return [Watched("contacts", ("updated_at", "created_at")), Watched("chats", chat_columns)]


def _since(columns: tuple[str, ...], low: sa.BindParameter) -> sa.ColumnElement[bool]:
    """``COALESCE(columns) >= low`` written so each branch can use its column's index."""
    first, rest = sa.column(columns[0]), columns[1:]
    if not rest:
        return first >= low
    return sa.or_(first >= low, sa.and_(first.is_(None), _since(rest, low)))


def _micros(conn: sa.Connection, value: sa.ColumnElement) -> sa.ColumnElement:
    """A timestamp as whole microseconds since 1970 (exact integer arithmetic on both)."""
    if conn.dialect.name == "postgresql":
        return sa.cast(sa.func.round(sa.extract("epoch", value) * 1_000_000), sa.BigInteger)
    return sa.func.timestampdiff(sa.text("MICROSECOND"), sa.literal(EPOCH), value)


def _query(conn: sa.Connection, watched: Watched, low: dt.datetime, new_low: dt.datetime):
    changed_at = sa.func.coalesce(*(sa.column(c) for c in watched.columns))
    micros = _micros(conn, changed_at)
    in_new = _since(watched.columns, sa.bindparam("new_low", new_low))
    instance = sa.column("instance")
    return (
        sa.select(
            instance,
            sa.func.count(),
            sa.func.sum(micros),
            sa.func.max(changed_at),
            sa.func.sum(sa.case((in_new, 1), else_=0)),
            sa.func.sum(sa.case((in_new, micros), else_=0)),
        )
        .select_from(sa.table(watched.table))
        .where(_since(watched.columns, sa.bindparam("low", low)))
        .group_by(instance)
    )


def _naive(value: dt.datetime | None) -> dt.datetime | None:
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(source.SOURCE_TIMEZONE).replace(tzinfo=None)


@dataclass
class TableState:
    low: dt.datetime  # the window start: rows changed at or after it are fingerprinted
    newest: dt.datetime  # the newest change time seen so far (capped at the clock)
    fingerprints: dict[str, list] = field(default_factory=dict)  # instance -> [n, sum, newest]


@dataclass
class Look:
    """One look at the main database: the instances that changed, and the next state."""

    changed: dict[str, str]  # instance -> a digest of what was seen (stable for a state)
    state: dict[str, TableState]
    window_rows: int  # rows the looks' queries grouped (rows changed within the window)
    first: bool  # no earlier state: this look only set the baseline


def _max_change_time(conn: sa.Connection, watched: Watched) -> dt.datetime | None:
    """The newest change time of the table (one index lookup per column when indexed)."""
    table = sa.table(watched.table)
    times = [
        _naive(conn.execute(sa.select(sa.func.max(sa.column(c))).select_from(table)).scalar())
        for c in watched.columns
    ]
    return max((t for t in times if t is not None), default=None)


def look(
    conn: sa.Connection,
    previous: Mapping[str, TableState] | None,
    *,
    overlap: dt.timedelta,
    now: dt.datetime,
) -> Look:
    """Compare the main database with ``previous`` (None: set the baseline, report nothing).

    ``now`` is this process's clock (aware); ``overlap`` how late a commit may land after its
    change time and still be seen (the sync's own ``LOCAL_SYNC_OVERLAP_MINUTES``).
    """
    source.utc_session(conn)
    clock = _naive(now)
    changed: dict[str, list[str]] = {}
    state: dict[str, TableState] = {}
    rows_read = 0
    for watched in watched_tables(conn):
        before = (previous or {}).get(watched.table)
        baseline = before is None  # first look at this table: nothing to compare with
        if before is None:
            seen = min(_max_change_time(conn, watched) or clock, clock)
            before = TableState(low=seen - overlap, newest=seen)
        # The next window starts `overlap` before the newest change the previous look saw
        # (one look behind, so one query gives both windows' fingerprints).
        new_low = max(before.low, min(before.newest, clock) - overlap)
        result = conn.execute(_query(conn, watched, before.low, new_low)).all()
        rows_read += sum(int(r[1]) for r in result)
        now_prints = {r[0]: [int(r[1]), int(r[2]), _naive(r[3]).isoformat()] for r in result}
        newest = max([before.newest, *(min(_naive(r[3]), clock) for r in result)])
        state[watched.table] = TableState(
            low=new_low,
            newest=newest,
            fingerprints={
                r[0]: [int(r[4]), int(r[5]), _naive(r[3]).isoformat()] for r in result if int(r[4])
            },
        )
        if baseline:
            continue
        for instance in set(now_prints) | set(before.fingerprints):
            if now_prints.get(instance) != before.fingerprints.get(instance):
                changed.setdefault(instance, []).append(
                    f"{watched.table}:{now_prints.get(instance)}"
                )
    return Look(
        changed={
            i: hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
            for i, parts in sorted(changed.items())
        },
        state=state,
        window_rows=rows_read,
        first=previous is None,
    )


def dump_state(state: Mapping[str, TableState]) -> str:
    return json.dumps(
        {
            t: {
                "low": s.low.isoformat(),
                "newest": s.newest.isoformat(),
                "fingerprints": s.fingerprints,
            }
            for t, s in state.items()
        },
        sort_keys=True,
    )


def load_state(cursor: str | None) -> dict[str, TableState] | None:
    """The cursor's state; None for no cursor (or one from another version: re-baseline)."""
    if not cursor:
        return None
    try:
        raw = json.loads(cursor)
        return {
            t: TableState(
                low=dt.datetime.fromisoformat(s["low"]),
                newest=dt.datetime.fromisoformat(s["newest"]),
                fingerprints=dict(s["fingerprints"]),
            )
            for t, s in raw.items()
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
