"""Reading TabuladorMax ``leads`` from its PostgreSQL: real column types and day pages.

A day is a São Paulo calendar day ([00:00, next 00:00) local time, DST-proof through
zoneinfo). Pages follow a keyset on ``(updated_at, id)``: each page starts strictly after the
last row of the previous one, so a day with any number of updated leads is read once, in
order, without OFFSET and without the "first 100 of the day again" loop of today's exporter.
Each page is its own short read, so an export never holds a transaction open across HTTP calls.

When is a day's read complete? ``updated_at`` defaults to ``now()``, the start of the
writing transaction, so a row becomes visible when it commits, possibly later than rows
with a greater ``updated_at``: a keyset that has passed its timestamp never sees it. The
export assumes every transaction commits within ``FINAL_MARGIN`` of its ``updated_at``.
Then a pass over a day that started at ``P`` has read every row with ``updated_at <
P - FINAL_MARGIN``; a day is **final** once a whole pass over it started after the day ended
in São Paulo plus the margin (``is_day_final``). Until then each pass leaves the day open,
and the next one re-reads it from ``P - FINAL_MARGIN`` (overlapping re-reads; the upsert
makes them idempotent), not sooner than ``REREAD_EVERY`` after the previous one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ..lib.db import Database, quote_ident

TZ = ZoneInfo("America/Sao_Paulo")
LEADS_TABLE = "leads"
# How late a TabuladorMax transaction may commit after its updated_at (its start): a web
# request or a Bitrix webhook takes seconds, a CSV import minutes; an hour is ample.
FINAL_MARGIN = dt.timedelta(hours=1)
# How often a day that is not final yet (today, or yesterday shortly after midnight) is
# re-read: leads changed meanwhile reach Gestão Scouter within about this long.
REREAD_EVERY = dt.timedelta(minutes=30)
# Read whatever the mapping says, plus what the export itself needs: the key, the keyset and
# the loop guard of the reverse sync.
GUARD_COLUMNS = ("id", "updated_at", "sync_source", "last_sync_at")


class SourceSchemaError(RuntimeError):
    """The TabuladorMax leads table is missing or lacks a column the export needs."""


@dataclass(frozen=True)
class Keyset:
    """A position in the (updated_at, id) order: the last row already handled; with ``id``
    None, the start of a re-read: every row from ``updated_at`` on, that instant included."""

    updated_at: dt.datetime
    id: int | None


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a São Paulo calendar day as aware datetimes."""
    start = dt.datetime.combine(day, dt.time.min, tzinfo=TZ)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time.min, tzinfo=TZ)
    return start, end


def today_sao_paulo(now: dt.datetime | None = None) -> dt.date:
    return (now or dt.datetime.now(TZ)).astimezone(TZ).date()


def now_sao_paulo() -> dt.datetime:
    return dt.datetime.now(TZ)


def day_final_at(day: dt.date, margin: dt.timedelta = FINAL_MARGIN) -> dt.datetime:
    """The instant after which a pass over ``day`` that starts then reads it completely."""
    return day_bounds(day)[1] + margin


def is_day_final(
    day: dt.date, pass_started_at: dt.datetime, margin: dt.timedelta = FINAL_MARGIN
) -> bool:
    """True when a pass over ``day`` that started at ``pass_started_at`` saw all of it."""
    return pass_started_at >= day_final_at(day, margin)


def source_columns(db: Database, table: str = LEADS_TABLE) -> dict[str, str]:
    """Column name -> PostgreSQL type as SQL (``numeric(10,2)``, ``timestamp with time zone``).

    Read from the catalog of the table the role's search path resolves, so these are the
    real columns, not a list written in code.
    """
    with db.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                "WHERE a.attrelid = to_regclass(:t) AND a.attnum > 0 AND NOT a.attisdropped "
                "ORDER BY a.attnum"
            ),
            {"t": db.table(table)},
        ).all()
    if not rows:
        raise SourceSchemaError(
            f"table {table!r} not found in the {db.describe()}: the export reads TabuladorMax's "
            f"leads table there (check TABULADORMAX_DATABASE_URL / _SCHEMA)"
        )
    return {name: type_sql for name, type_sql in rows}


def _select_list(columns: Sequence[str], available: dict[str, str]) -> str:
    wanted = list(dict.fromkeys([*GUARD_COLUMNS, *columns]))
    missing = [c for c in wanted if c not in available]
    if missing:
        raise SourceSchemaError(f"TabuladorMax leads lacks column(s) {', '.join(missing)}")
    # Every name was checked against the catalog above and is quoted: nothing from config
    # reaches the SQL as text.
    return ", ".join(quote_ident(c) for c in wanted)


def read_day_page(
    db: Database,
    day: dt.date,
    columns: Sequence[str],
    available: dict[str, str],
    *,
    after: Keyset | None = None,
    limit: int = 500,
) -> list[dict]:
    """Up to ``limit`` leads updated on ``day`` (São Paulo), after ``after`` in keyset order."""
    start, end = day_bounds(day)
    select = _select_list(columns, available)
    where = "updated_at >= :start AND updated_at < :end"
    params: dict = {"start": start, "end": end, "limit": limit}
    if after is not None and after.id is None:
        where += " AND updated_at >= :after_u"
        params["after_u"] = after.updated_at
    elif after is not None:
        where += " AND (updated_at, id) > (:after_u, :after_i)"
        params |= {"after_u": after.updated_at, "after_i": after.id}
    sql = (
        f"SELECT {select} FROM {db.table(LEADS_TABLE)} WHERE {where} "
        "ORDER BY updated_at, id LIMIT :limit"
    )
    with db.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sa.text(sql), params)]


def iter_day_pages(
    db: Database,
    day: dt.date,
    columns: Sequence[str],
    available: dict[str, str],
    *,
    after: Keyset | None = None,
    page_size: int = 500,
) -> Iterator[list[dict]]:
    """Every lead updated on ``day``, page by page in (updated_at, id) order."""
    position = after
    while True:
        page = read_day_page(db, day, columns, available, after=position, limit=page_size)
        if not page:
            return
        yield page
        last = page[-1]
        position = Keyset(last["updated_at"], last["id"])
        if len(page) < page_size:
            return


def count_between(db: Database, first_day: dt.date, last_day: dt.date) -> int:
    """Leads whose updated_at falls in [first_day, last_day] (São Paulo days)."""
    start, _ = day_bounds(first_day)
    _, end = day_bounds(last_day)
    with db.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    f"SELECT count(*) FROM {db.table(LEADS_TABLE)} "
                    "WHERE updated_at >= :s AND updated_at < :e"
                ),
                {"s": start, "e": end},
            ).scalar_one()
        )
