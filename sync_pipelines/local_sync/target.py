"""The tenant side: its tables (created if missing), their shape, charsets, and current rows.

The DDL lives in ``sql/tenant/`` and is applied to each tenant by the migrations runner, so a
tenant database is versioned like every other database of the project. Some tenants already
have an older ``wpp_chats`` (AUTO_INCREMENT ``id``, the main id in ``original_id``): that
shape is detected here and the sync keys its upserts on ``original_id`` instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from ..lib.db import Database
from ..lib.migrations import MigrationReport, migrate
from .source import CHAT_COLUMNS

TENANT_ROLE = "tenant"
CONTACT_COLUMNS = ("id", "instance", "name", "phone", "customer_id", "is_deleted")
# The tenant's wpp_chats holds the source's chat columns; its key is either the same `id`
# or, in the older shape, `original_id` beside a local AUTO_INCREMENT id.
CHAT_DATA_COLUMNS = tuple(c for c in CHAT_COLUMNS if c != "id")


class LegacyShapeError(RuntimeError):
    """The older wpp_chats cannot be upserted safely as it is (duplicate original_id values)."""


def ensure_tables(db: Database) -> MigrationReport:
    """Create the tenant's replica tables if missing (sql/tenant, recorded in its ledger)."""
    return migrate(db, role=TENANT_ROLE)


@dataclass(frozen=True)
class TextColumn:
    charset: str | None  # None: the column holds any Unicode text
    max_length: int | None


def text_columns(conn: sa.Connection, db: Database, table: str) -> dict[str, TextColumn]:
    """Character set and length of each text column of a tenant table."""
    if db.is_postgres:
        rows = conn.execute(
            sa.text(
                "SELECT column_name, NULL, character_maximum_length FROM information_schema.columns"
                " WHERE table_schema = :s AND table_name = :t AND data_type IN"
                " ('character varying', 'character', 'text')"
            ),
            {"s": db.schema or "public", "t": table},
        )
    else:
        rows = conn.execute(
            sa.text(
                "SELECT COLUMN_NAME, CHARACTER_SET_NAME, CHARACTER_MAXIMUM_LENGTH"
                " FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()"
                " AND TABLE_NAME = :t AND CHARACTER_SET_NAME IS NOT NULL"
            ),
            {"t": table},
        )
    return {
        name: TextColumn(charset, int(length) if length is not None else None)
        for name, charset, length in rows
    }


@dataclass(frozen=True)
class ChatsShape:
    legacy: bool

    @property
    def key(self) -> str:
        """The column holding the main database's chat id."""
        return "original_id" if self.legacy else "id"

    @property
    def name(self) -> str:
        return "legacy (AUTO_INCREMENT id + original_id)" if self.legacy else "current (id)"


def chats_shape(conn: sa.Connection) -> ChatsShape:
    columns = {c["name"] for c in sa.inspect(conn).get_columns("wpp_chats")}
    return ChatsShape(legacy="original_id" in columns)


def ensure_original_id_unique(conn: sa.Connection, db: Database) -> bool:
    """Give a legacy wpp_chats a unique key on original_id (upserts need one); True if added.

    Refuses with a clear error when the table already holds duplicates: which copy is right
    is for a person to decide, not for the sync to guess by deleting rows.
    """
    inspector = sa.inspect(conn)
    uniques = [
        ix["column_names"] for ix in inspector.get_indexes("wpp_chats") if ix.get("unique")
    ] + [uc["column_names"] for uc in inspector.get_unique_constraints("wpp_chats")]
    if ["original_id"] in uniques:
        return False
    duplicates = conn.execute(
        sa.text(
            "SELECT COUNT(*) FROM (SELECT original_id FROM wpp_chats WHERE original_id IS NOT NULL"
            " GROUP BY original_id HAVING COUNT(*) > 1) d"
        )
    ).scalar()
    if duplicates:
        raise LegacyShapeError(
            f"{db.describe()}: wpp_chats (legacy shape) has {duplicates} original_id value(s) "
            "on more than one row; remove the extra copies, then re-run (the sync adds a "
            "unique key on original_id so that re-runs never duplicate chats)"
        )
    if db.is_postgres:
        conn.exec_driver_sql(
            "CREATE UNIQUE INDEX IF NOT EXISTS unique_original_id ON wpp_chats (original_id)"
        )
    else:
        conn.exec_driver_sql(
            "ALTER TABLE wpp_chats ADD UNIQUE KEY unique_original_id (original_id)"
        )
    return True


def _fetch_all(conn: sa.Connection, sql: str, params: dict) -> Sequence[tuple]:
    """Every row of a read, through the driver's cursor (PyMySQL and psycopg2 both take
    ``%(name)s``): the full reconcile reads the tenant's whole instance, and SQLAlchemy's
    per-row Result costs a third again on top of the driver's own parsing."""
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute(sql, params)
        return cursor.fetchall()
    finally:
        cursor.close()


def read_contacts(conn: sa.Connection, instance: str) -> dict[int, tuple]:
    """The tenant's contacts of an instance: id -> values in CONTACT_COLUMNS order."""
    cols = ", ".join(CONTACT_COLUMNS)
    rows = _fetch_all(
        conn, f"SELECT {cols} FROM wpp_contacts WHERE instance = %(i)s", {"i": instance}
    )
    return {int(r[0]): tuple(r) for r in rows}


def contacts_holding_phones(
    conn: sa.Connection, instance: str, phones: Sequence[str]
) -> dict[str, int]:
    """phone -> tenant contact id, for the given phones of an instance."""
    found: dict[str, int] = {}
    query = sa.text(
        "SELECT phone, id FROM wpp_contacts WHERE instance = :i AND phone IN :phones"
    ).bindparams(sa.bindparam("phones", expanding=True))
    for start in range(0, len(phones), 1000):
        chunk = list(phones[start : start + 1000])
        for phone, cid in conn.execute(query, {"i": instance, "phones": chunk}):
            found[phone] = int(cid)
    return found


def move_phones_aside(conn: sa.Connection, contact_ids: Iterable[int]) -> int:
    """Give stale tenant rows a placeholder phone so an incoming row can take theirs.

    The tenant has UNIQUE(instance, phone): when a phone moved to another contact at the
    source, writing the new holder first would make MySQL's ON DUPLICATE KEY UPDATE overwrite
    the old holder's row (and PostgreSQL refuse the batch). The old holder keeps its row; its
    own new values arrive in the same batch (full sync) or the next reconcile.
    """
    params = [{"id": cid, "p": f"~{cid}"} for cid in contact_ids]
    if params:
        conn.execute(sa.text("UPDATE wpp_contacts SET phone = :p WHERE id = :id"), params)
    return len(params)


def read_sector_links(conn: sa.Connection, instance: str) -> set[tuple[int, int]]:
    """The tenant's links of the instance's contacts (a tenant database may serve several)."""
    rows = _fetch_all(
        conn,
        "SELECT s.contact_id, s.sector_id FROM wpp_contact_sectors s"
        " JOIN wpp_contacts c ON c.id = s.contact_id WHERE c.instance = %(i)s",
        {"i": instance},
    )
    return set(rows)  # INT columns: the driver's (int, int) tuples as they are


def delete_sector_links(conn: sa.Connection, links: Sequence[tuple[int, int]]) -> int:
    """Delete the given (contact, sector) links, 500 per statement, all values bound."""
    deleted = 0
    for start in range(0, len(links), 500):
        chunk = links[start : start + 500]
        pairs = ", ".join(f"(:c{i}, :s{i})" for i in range(len(chunk)))
        params = {}
        for i, (c, s) in enumerate(chunk):
            params[f"c{i}"], params[f"s{i}"] = c, s
        result = conn.execute(
            sa.text(f"DELETE FROM wpp_contact_sectors WHERE (contact_id, sector_id) IN ({pairs})"),
            params,
        )
        deleted += result.rowcount
    return deleted


def read_chats(conn: sa.Connection, shape: ChatsShape, instance: str) -> dict[int, tuple]:
    """The tenant's chats of an instance: main id -> values in CHAT_DATA_COLUMNS order."""
    cols = ", ".join(CHAT_DATA_COLUMNS)
    rows = _fetch_all(
        conn,
        f"SELECT {shape.key}, {cols} FROM wpp_chats WHERE instance = %(i)s"
        f" AND {shape.key} IS NOT NULL",
        {"i": instance},
    )
    return {int(r[0]): tuple(r[1:]) for r in rows}


def open_chat_ids(conn: sa.Connection, shape: ChatsShape, instance: str) -> list[int]:
    """Chats the tenant still has open: the ones whose finishing the incremental mode checks."""
    rows = conn.execute(
        sa.text(
            f"SELECT {shape.key} FROM wpp_chats WHERE instance = :i AND is_finished = 0"
            f" AND {shape.key} IS NOT NULL"
        ),
        {"i": instance},
    )
    return [int(r[0]) for r in rows]
