"""The yardstick for the local sync: a plain one-off script doing the same copy, no project code.

What a competent engineer would write to copy one instance from the main database into its
tenant's MySQL/MariaDB: plain SELECTs read through a server-side cursor in chunks, plain
``INSERT ... ON DUPLICATE KEY UPDATE`` batches written with PyMySQL's ``executemany`` (which
sends one multi-row statement per ~1 MB), every value bound, one transaction per table.
Contacts and chats are re-sent whole on every run (MySQL leaves identical rows untouched);
sector links are made the instance's set: links gone at the source are deleted, new ones
inserted. DATETIMEs are converted from the main database's UTC to ``tz``, whole seconds,
like the project's. It has none of the project's guarantees (no counts of inserted/updated/
unchanged, no text fitting for latin1 tenants, no phone moves, no watermarks, no lock check):
it exists so ``bench_local_sync`` can time the project's ``sync_tenant`` against it.

The main database is PostgreSQL (psycopg2) or MySQL (PyMySQL), given as plain DBAPI
connections; the tenant is a PyMySQL connection.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from zoneinfo import ZoneInfo

FETCH = 5000
LINK_BATCH = 500

CONTACTS_SELECT = (
    "SELECT id, instance, name, phone, customer_id, is_deleted FROM contacts"
    " WHERE instance = %s ORDER BY id"
)
LINKS_SELECT_PG = (
    'SELECT s."contactId", s."sectorId" FROM contacts_sectors s'
    ' JOIN contacts c ON c.id = s."contactId" WHERE c.instance = %s'
)
LINKS_SELECT_MY = (
    "SELECT s.`contactId`, s.`sectorId` FROM contacts_sectors s"
    " JOIN contacts c ON c.id = s.`contactId` WHERE c.instance = %s"
)
CHATS_SELECT = (
    "SELECT id, instance, type, avatar_url, user_id, contact_id, sector_id, started_at,"
    " finished_at, finished_by, result_id, is_finished, is_schedule FROM chats"
    " WHERE instance = %s ORDER BY id"
)
CONTACTS_UPSERT = (
    "INSERT INTO wpp_contacts (id, instance, name, phone, customer_id, is_deleted)"
    " VALUES (%s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE instance = VALUES(instance),"
    " name = VALUES(name), phone = VALUES(phone), customer_id = VALUES(customer_id),"
    " is_deleted = VALUES(is_deleted)"
)
CHATS_UPSERT = (
    "INSERT INTO wpp_chats (id, instance, type, avatar_url, user_id, contact_id, sector_id,"
    " started_at, finished_at, finished_by, result_id, is_finished, is_schedule)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE"
    " instance = VALUES(instance), type = VALUES(type), avatar_url = VALUES(avatar_url),"
    " user_id = VALUES(user_id), contact_id = VALUES(contact_id),"
    " sector_id = VALUES(sector_id), started_at = VALUES(started_at),"
    " finished_at = VALUES(finished_at), finished_by = VALUES(finished_by),"
    " result_id = VALUES(result_id), is_finished = VALUES(is_finished),"
    " is_schedule = VALUES(is_schedule)"
)
LINKS_INSERT = (
    "INSERT INTO wpp_contact_sectors (contact_id, sector_id) VALUES (%s, %s)"
    " ON DUPLICATE KEY UPDATE contact_id = contact_id"
)


def _chunks(main, sql: str, instance: str, *, postgres: bool) -> Iterator[list[tuple]]:
    """The query's rows, FETCH at a time, through a server-side cursor."""
    if postgres:
        cursor = main.cursor(name="reference_read")  # psycopg2 named = server-side
        cursor.itersize = FETCH
    else:
        import pymysql.cursors

        cursor = main.cursor(pymysql.cursors.SSCursor)
    try:
        cursor.execute(sql, (instance,))
        while rows := cursor.fetchmany(FETCH):
            yield rows
    finally:
        cursor.close()


def _local(value: dt.datetime | None, tz: ZoneInfo) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC).astimezone(tz).replace(tzinfo=None, microsecond=0)


def reference_sync(main, tenant, instance: str, *, postgres: bool, tz: ZoneInfo) -> dict:
    """Copy one instance; returns rows read and rows the tenant reported as written."""
    stats: dict = {"read": 0, "written": 0, "seconds": {}}
    clock = time.perf_counter()

    def lap(table: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        stats["seconds"][table] = now - clock
        clock = now

    if not postgres:
        with main.cursor() as cursor:
            cursor.execute("SET time_zone = '+00:00'")
    with tenant.cursor() as out:
        for rows in _chunks(main, CONTACTS_SELECT, instance, postgres=postgres):
            stats["read"] += len(rows)
            stats["written"] += out.executemany(
                CONTACTS_UPSERT, [(*r[:5], 1 if r[5] else 0) for r in rows]
            )
        tenant.commit()
        lap("wpp_contacts")

        wanted: set[tuple[int, int]] = set()
        for rows in _chunks(main, LINKS_SELECT_PG if postgres else LINKS_SELECT_MY, instance,
                            postgres=postgres):  # fmt: skip
            wanted.update(rows)
        stats["read"] += len(wanted)
        out.execute(
            "SELECT s.contact_id, s.sector_id FROM wpp_contact_sectors s"
            " JOIN wpp_contacts c ON c.id = s.contact_id WHERE c.instance = %s",
            (instance,),
        )
        present = set(out.fetchall())
        gone = sorted(present - wanted)
        for start in range(0, len(gone), LINK_BATCH):
            chunk = gone[start : start + LINK_BATCH]
            stats["written"] += out.execute(
                "DELETE FROM wpp_contact_sectors WHERE (contact_id, sector_id) IN ("
                + ", ".join(["(%s, %s)"] * len(chunk))
                + ")",
                [v for pair in chunk for v in pair],
            )
        new = sorted(wanted - present)
        for start in range(0, len(new), LINK_BATCH):
            stats["written"] += out.executemany(LINKS_INSERT, new[start : start + LINK_BATCH])
        tenant.commit()
        lap("wpp_contact_sectors")

        for rows in _chunks(main, CHATS_SELECT, instance, postgres=postgres):
            stats["read"] += len(rows)
            stats["written"] += out.executemany(
                CHATS_UPSERT,
                [
                    (
                        *r[:7],
                        _local(r[7], tz),
                        _local(r[8], tz),
                        r[9],
                        r[10],
                        1 if r[11] else 0,
                        1 if r[12] else 0,
                    )
                    for r in rows
                ],
            )
        tenant.commit()
        lap("wpp_chats")
    if postgres:
        main.rollback()  # end the read transaction the server-side cursors ran in
    return stats
