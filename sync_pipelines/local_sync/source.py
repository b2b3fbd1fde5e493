"""Reading the main WhatsApp-service database (Prisma's tables): instances, contacts, links, chats.

Table and column names are the application's (``contacts_sectors`` has camelCase
``contactId``/``sectorId``); SQLAlchemy Core quotes them for whichever dialect the main
database is, and every value is a bound parameter. Prisma keeps DateTime columns as UTC wall
clock without a zone, so naive timestamps read here are UTC (``SOURCE_TIMEZONE``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import sqlalchemy as sa

SOURCE_TIMEZONE = dt.UTC
_IN_CHUNK = 1000

contacts = sa.table(
    "contacts",
    *(
        sa.column(c)
        for c in (
            "id",
            "instance",
            "name",
            "phone",
            "customer_id",
            "is_deleted",
            "created_at",
            "updated_at",
        )
    ),
)
contacts_sectors = sa.table("contacts_sectors", sa.column("contactId"), sa.column("sectorId"))
CHAT_COLUMNS = (
    "id",
    "instance",
    "type",
    "avatar_url",
    "user_id",
    "contact_id",
    "sector_id",
    "started_at",
    "finished_at",
    "finished_by",
    "result_id",
    "is_finished",
    "is_schedule",
)
chats = sa.table("chats", *(sa.column(c) for c in (*CHAT_COLUMNS, "updated_at")))


def utc_session(conn: sa.Connection) -> None:
    """On MySQL, TIMESTAMP columns are converted to the session zone: make that UTC, so the
    server's own time zone can never leak into what we read."""
    if conn.dialect.name in ("mysql", "mariadb"):
        conn.exec_driver_sql("SET time_zone = '+00:00'")


def list_instances(conn: sa.Connection) -> list[str]:
    """``SELECT DISTINCT instance FROM contacts``: every tenant the application knows."""
    rows = conn.execute(sa.select(contacts.c.instance).distinct().order_by(contacts.c.instance))
    return [r[0] for r in rows if r[0]]


def has_column(conn: sa.Connection, table: str, column: str) -> bool:
    return any(c["name"] == column for c in sa.inspect(conn).get_columns(table))


def read_contacts(
    conn: sa.Connection, instance: str, *, changed_since: dt.datetime | None = None
) -> list[dict]:
    """An instance's contacts, soft-deleted ones included; with ``changed_since`` only those
    created or updated from then on (``updated_at`` is NULL on rows never updated)."""
    query = sa.select(
        contacts.c.id,
        contacts.c.instance,
        contacts.c.name,
        contacts.c.phone,
        contacts.c.customer_id,
        contacts.c.is_deleted,
        contacts.c.created_at,
        contacts.c.updated_at,
    ).where(contacts.c.instance == instance)
    if changed_since is not None:
        query = query.where(
            sa.or_(
                contacts.c.updated_at >= changed_since,
                sa.and_(contacts.c.updated_at.is_(None), contacts.c.created_at >= changed_since),
            )
        )
    return _dicts(conn.execute(query.order_by(contacts.c.id)))


def read_sector_links(conn: sa.Connection, instance: str) -> set[tuple[int, int]]:
    """The instance's whole set of (contact id, sector id) links."""
    query = (
        sa.select(contacts_sectors.c.contactId, contacts_sectors.c.sectorId)
        .select_from(contacts_sectors.join(contacts, contacts.c.id == contacts_sectors.c.contactId))
        .where(contacts.c.instance == instance)
    )
    result = conn.execute(query)
    try:
        # INT columns: the driver's tuples are already (int, int) pairs, hashable as they are.
        return set(result.cursor.fetchall())
    finally:
        result.close()


def _chat_query(with_updated_at: bool) -> sa.Select:
    cols = [chats.c[c] for c in CHAT_COLUMNS]
    if with_updated_at:
        cols.append(chats.c.updated_at)
    return sa.select(*cols)


def read_chats(
    conn: sa.Connection,
    instance: str,
    *,
    with_updated_at: bool = False,
    changed_since: dt.datetime | None = None,
    after_id: int | None = None,
    also_ids: Iterable[int] = (),
) -> list[dict]:
    """An instance's chats: all of them, or the changed ones.

    ``with_updated_at`` (sources that have the column) adds ``updated_at`` to each row.
    Changed means, when ``changed_since`` is given (needs the column): ``updated_at >=
    changed_since`` (``>=``: a chat with the watermark's own timestamp is read again, never
    skipped), plus chats newer than ``after_id``, plus those of ``also_ids`` whose
    ``updated_at`` is NULL (a timestamp that says nothing: tracked the id way below).
    Without ``changed_since`` (the contract's shape, no ``updated_at``) it means new chats
    (``id > after_id``) plus the chats given in ``also_ids`` (those still open in the tenant:
    finishing a chat is what changes it).
    """
    base = _chat_query(with_updated_at or changed_since is not None).where(
        chats.c.instance == instance
    )
    if changed_since is None and after_id is None:
        return _dicts(conn.execute(base.order_by(chats.c.id)))
    if changed_since is not None:
        changed = chats.c.updated_at >= changed_since
        new_or_changed = changed if after_id is None else sa.or_(changed, chats.c.id > after_id)
        unknown_time = chats.c.updated_at.is_(None)
    else:
        new_or_changed = chats.c.id > after_id
        unknown_time = sa.true()
    rows = {
        r["id"]: r for r in _dicts(conn.execute(base.where(new_or_changed).order_by(chats.c.id)))
    }
    for chunk in _chunks(sorted(set(also_ids)), _IN_CHUNK):
        for r in _dicts(conn.execute(base.where(chats.c.id.in_(chunk), unknown_time))):
            rows[r["id"]] = r
    return [rows[k] for k in sorted(rows)]


def _dicts(result: sa.CursorResult) -> list[dict]:
    """The rows as dicts, fetched in one go from the driver's cursor: iterating a Result
    row by row (or through ``.mappings()``) costs more than the read itself on a tenant of a
    few 100k rows. The columns here are untyped (``sa.column``): SQLAlchemy has no result
    conversion to apply, the driver's values are the values."""
    keys = list(result.keys())
    try:
        return [dict(zip(keys, row, strict=True)) for row in result.cursor.fetchall()]
    finally:
        result.close()


def _chunks(values: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
