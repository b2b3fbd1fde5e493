"""The sync logic against real databases: main (PostgreSQL) -> tenant (PostgreSQL and MariaDB)."""

from __future__ import annotations

import datetime as dt
import time
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from sync_pipelines.lib.db import Database
from sync_pipelines.lib.upsert import UpsertError
from sync_pipelines.local_sync.sync import (
    SyncSettings,
    TenantClock,
    sync_contact_sectors,
    sync_tenant,
)
from sync_pipelines.sandbox.local_sync_data import (
    SourceData,
    create_legacy_chats_table,
    generate_instance,
    write_source,
)
from sync_pipelines_tests.clock import DST_EDGES, DST_IDS

SETTINGS = SyncSettings(timezone=ZoneInfo("America/Sao_Paulo"))
NOW = dt.datetime(2024, 6, 1, 12, 0, 0)
# the upsert helper wraps driver errors; SQLAlchemy's own statements raise DBAPIError
WRITE_REFUSED = (UpsertError, sa.exc.DBAPIError)


def contact(cid: int, instance: str = "acme", **over) -> dict:
    row = {
        "id": cid,
        "instance": instance,
        "name": f"Contato {cid}",
        "phone": f"5541999{cid:06d}",
        "customer_id": cid * 10,
        "is_deleted": False,
        "created_at": NOW - dt.timedelta(days=30),
        "updated_at": NOW - dt.timedelta(days=1),
    }
    row.update(over)
    return row


def chat(chat_id: int, contact_id: int, instance: str = "acme", **over) -> dict:
    row = {
        "id": chat_id,
        "instance": instance,
        "type": "RECEPTIVE",
        "avatar_url": None,
        "user_id": 3,
        "contact_id": contact_id,
        "sector_id": 1,
        "started_at": dt.datetime(2024, 6, 1, 15, 0, 0),
        "finished_at": dt.datetime(2024, 6, 1, 16, 30, 0, 250_000),
        "finished_by": 3,
        "result_id": 2,
        "is_finished": True,
        "is_schedule": False,
    }
    row.update(over)
    return row


def sync(main_db: Database, tenant_db: Database, instance: str = "acme", **kwargs):
    return sync_tenant(main_db, tenant_db, main_db, instance, settings=SETTINGS, **kwargs)


def rows(db: Database, sql: str, **params) -> list[tuple]:
    with db.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql), params)]


def links_of(db: Database, contact_id: int) -> set[int]:
    return {
        s
        for (s,) in rows(
            db, "SELECT sector_id FROM wpp_contact_sectors WHERE contact_id = :c", c=contact_id
        )
    }


def source_exec(main_db: Database, sql: str, **params) -> None:
    with main_db.begin() as conn:
        conn.execute(sa.text(sql), params)


def test_first_sync_copies_every_table_and_a_second_run_writes_nothing(main_db, tenants):
    data = generate_instance("acme", 300, first_contact_id=1, first_chat_id=1, seed=1)
    write_source(main_db, data)
    tenant = tenants.home("acme")

    first = sync(main_db, tenant)
    assert first.migrations_applied == ["0001_wpp_tables." + tenants.kind + ".sql"]
    assert first.tables["wpp_contacts"].upsert.inserted == 300
    assert first.tables["wpp_contact_sectors"].upsert.inserted == len(data.links)
    assert first.tables["wpp_chats"].upsert.inserted == len(data.chats)
    assert rows(tenant, "SELECT COUNT(*) FROM wpp_contacts") == [(300,)]
    assert rows(tenant, "SELECT COUNT(*) FROM wpp_chats") == [(len(data.chats),)]

    again = sync(main_db, tenant)
    assert {t: r.written for t, r in again.tables.items()} == {
        "wpp_contacts": 0,
        "wpp_contact_sectors": 0,
        "wpp_chats": 0,
    }
    reconcile = sync(main_db, tenant, full=True)
    assert all(r.written == 0 for r in reconcile.tables.values())
    assert reconcile.tables["wpp_contacts"].missing_in_tenant == 0
    assert reconcile.tables["wpp_contacts"].different_in_tenant == 0


def test_sector_set_1_2_becomes_exactly_2_3(main_db, tenants):
    write_source(
        main_db,
        SourceData(
            contacts=[contact(1), contact(2)],
            links=[{"contactId": 1, "sectorId": s} for s in (1, 2)]
            + [{"contactId": 2, "sectorId": 5}],
        ),
    )
    tenant = tenants.home("acme")
    sync(main_db, tenant)
    assert links_of(tenant, 1) == {1, 2}

    source_exec(main_db, 'DELETE FROM contacts_sectors WHERE "contactId" = 1 AND "sectorId" = 1')
    source_exec(main_db, 'INSERT INTO contacts_sectors ("contactId", "sectorId") VALUES (1, 3)')
    result = sync(main_db, tenant).tables["wpp_contact_sectors"]

    assert links_of(tenant, 1) == {2, 3}
    assert links_of(tenant, 2) == {5}  # another contact's set is untouched
    assert (result.deleted, result.upsert.inserted) == (1, 1)


def _fail_inserts_of_sector(tenant: Database, sector: int) -> None:
    """A real database error on the insert: a trigger refusing one sector id."""
    with tenant.begin() as conn:
        if tenant.is_postgres:
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse_sector() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.sector_id = {sector} THEN RAISE EXCEPTION 'disk full'; END IF; "
                "RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_sector BEFORE INSERT ON wpp_contact_sectors "
                "FOR EACH ROW EXECUTE FUNCTION refuse_sector()"
            )
        else:
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_sector BEFORE INSERT ON wpp_contact_sectors FOR EACH ROW "
                f"BEGIN IF NEW.sector_id = {sector} THEN "
                "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'disk full'; END IF; END"
            )


def test_crash_between_delete_and_insert_leaves_the_old_sector_set(main_db, tenants):
    write_source(
        main_db,
        SourceData(contacts=[contact(1)], links=[{"contactId": 1, "sectorId": s} for s in (1, 2)]),
    )
    tenant = tenants.home("acme")
    sync(main_db, tenant)
    source_exec(main_db, 'DELETE FROM contacts_sectors WHERE "sectorId" = 1')
    source_exec(main_db, 'INSERT INTO contacts_sectors ("contactId", "sectorId") VALUES (1, 3)')
    _fail_inserts_of_sector(tenant, 3)

    with pytest.raises(WRITE_REFUSED):
        sync_contact_sectors(main_db, tenant, "acme")
    assert links_of(tenant, 1) == {1, 2}  # the delete of {1} was rolled back with the insert

    with tenant.begin() as conn:
        conn.exec_driver_sql(
            "DROP TRIGGER refuse_sector" + (" ON wpp_contact_sectors" if tenant.is_postgres else "")
        )
    sync_contact_sectors(main_db, tenant, "acme")
    assert links_of(tenant, 1) == {2, 3}


def test_process_dying_between_delete_and_insert_leaves_the_old_sector_set(main_db, pg_tenants):
    write_source(
        main_db,
        SourceData(contacts=[contact(1)], links=[{"contactId": 1, "sectorId": s} for s in (1, 2)]),
    )
    tenant = pg_tenants.home("acme")
    sync(main_db, tenant)
    source_exec(main_db, 'DELETE FROM contacts_sectors WHERE "sectorId" = 1')

    class Killed(BaseException):
        """Stands for the process dying: not an Exception, nothing catches it on the way."""

    def die() -> None:
        raise Killed

    with pytest.raises(Killed):
        sync_contact_sectors(main_db, tenant, "acme", before_insert=die)
    assert links_of(tenant, 1) == {1, 2}


def test_emoji_name_into_latin1_tenant_is_stored_closest_and_counted(main_db, mysql_tenants):
    write_source(
        main_db,
        SourceData(
            contacts=[
                contact(1, name="Zoë 😀 Padaria"),
                contact(2, name="João Conceição"),
                contact(3, name="Ő Silva", phone="55" + "9" * 60),
            ]
        ),
    )
    tenant = mysql_tenants.home("acme", charset="latin1")
    result = sync(main_db, tenant, tables=["wpp_contacts"]).tables["wpp_contacts"]

    stored = {r[0]: r[1:] for r in rows(tenant, "SELECT id, name, phone FROM wpp_contacts")}
    assert stored[1][0] == "Zoë ? Padaria"
    assert stored[2][0] == "João Conceição"  # latin1 holds it: untouched
    assert stored[3] == ("O Silva", "55" + "9" * 48)  # closest letter; cut to VARCHAR(50)
    assert (result.text_replaced_rows, result.text_truncated_rows) == (2, 1)
    assert result.upsert.inserted == 3
    # stored as close as possible, so the next run finds nothing to write
    assert sync(main_db, tenant, full=True).tables["wpp_contacts"].written == 0


def test_unicode_tenant_keeps_emoji_and_only_cuts_what_is_too_long(main_db, mysql_tenants):
    """On a utf8mb4 tenant only the length can force a change (the fast path skips the
    per-character test there): emoji stay, an over-long value is cut and counted once."""
    write_source(
        main_db,
        SourceData(
            contacts=[
                contact(1, name="Zoë 😀 Padaria"),
                contact(2, name="😀" * 191, phone="😀" * 60),
                contact(3, name="a" * 191, phone="5" * 50),
            ],
            chats=[chat(1, 1, avatar_url="https://cdn/😀.jpg", type="ACTIVE😀")],
        ),
    )
    tenant = mysql_tenants.home("acme", charset="utf8mb4")
    result = sync(main_db, tenant, tables=["wpp_contacts", "wpp_chats"]).tables

    stored = {r[0]: r[1:] for r in rows(tenant, "SELECT id, name, phone FROM wpp_contacts")}
    assert stored == {
        1: ("Zoë 😀 Padaria", "5541999000001"),
        2: ("😀" * 191, "😀" * 50),
        3: ("a" * 191, "5" * 50),
    }
    contacts = result["wpp_contacts"]
    assert (contacts.text_replaced_rows, contacts.text_truncated_rows) == (0, 1)
    assert rows(tenant, "SELECT type, avatar_url FROM wpp_chats") == [
        ("ACTIVE😀", "https://cdn/😀.jpg")
    ]
    chats = result["wpp_chats"]
    assert (chats.text_replaced_rows, chats.text_truncated_rows) == (0, 0)
    assert all(t.written == 0 for t in sync(main_db, tenant, full=True).tables.values())


def test_soft_deleted_contact_is_kept_with_is_deleted(main_db, tenants):
    write_source(main_db, SourceData(contacts=[contact(1), contact(2)]))
    tenant = tenants.home("acme")
    sync(main_db, tenant)
    source_exec(
        main_db,
        "UPDATE contacts SET is_deleted = true, customer_id = NULL, updated_at = :t WHERE id = 2",
        t=NOW,
    )
    sync(main_db, tenant)
    assert rows(tenant, "SELECT id, customer_id, is_deleted FROM wpp_contacts ORDER BY id") == [
        (1, 10, 0),
        (2, None, 1),
    ]


def test_incremental_sync_reads_and_writes_only_changed_rows(main_db, tenants):
    data = generate_instance("acme", 200, first_contact_id=1, first_chat_id=1, seed=2)
    for n, c in enumerate(data.contacts):  # one change an hour, the newest two days ago
        c["updated_at"] = NOW - dt.timedelta(days=2, hours=n)
    for c in data.chats:
        c.update(is_finished=True)
    data.chats[-1].update(is_finished=False, finished_at=None, finished_by=None, result_id=None)
    write_source(main_db, data)
    tenant = tenants.home("acme")
    sync(main_db, tenant)
    open_chat = data.chats[-1]["id"]
    last_chat = max(c["id"] for c in data.chats)

    source_exec(
        main_db, "UPDATE contacts SET name = 'Novo Nome', updated_at = :t WHERE id = 7", t=NOW
    )
    source_exec(
        main_db,
        "UPDATE chats SET is_finished = true, finished_at = :t, finished_by = 9 WHERE id = :i",
        t=NOW,
        i=open_chat,
    )
    write_source(main_db, SourceData(chats=[chat(last_chat + 1, 7)]))
    result = sync(main_db, tenant)

    contacts = result.tables["wpp_contacts"]
    chats = result.tables["wpp_chats"]
    assert contacts.mode == chats.mode == "incremental"
    # the changed contact, plus the newest one again (within the overlap for late commits)
    assert contacts.source_rows == 2
    assert (contacts.upsert.updated, contacts.upsert.inserted) == (1, 0)
    assert chats.source_rows == 2  # the new chat and the one that was open
    assert (chats.upsert.inserted, chats.upsert.updated) == (1, 1)
    assert rows(tenant, "SELECT name FROM wpp_contacts WHERE id = 7") == [("Novo Nome",)]
    assert rows(
        tenant, "SELECT is_finished, finished_by FROM wpp_chats WHERE id = :i", i=open_chat
    ) == [(1, 9)]


def test_full_reconcile_restores_rows_missing_in_the_tenant(main_db, tenants):
    write_source(
        main_db,
        SourceData(
            contacts=[contact(i, updated_at=NOW - dt.timedelta(days=10 - i)) for i in range(1, 6)],
            chats=[chat(10, 1), chat(11, 2)],
        ),
    )
    tenant = tenants.home("acme")
    sync(main_db, tenant)
    with tenant.begin() as conn:
        conn.exec_driver_sql("DELETE FROM wpp_contacts WHERE id = 3")
        conn.exec_driver_sql("UPDATE wpp_chats SET type = 'ACTIVE' WHERE id = 11")
        conn.exec_driver_sql(
            "INSERT INTO wpp_contacts (id, instance, name, phone) VALUES (99, 'acme', 'x', '1')"
        )

    incremental = sync(main_db, tenant)
    assert incremental.tables["wpp_contacts"].written == 0  # no source change: nothing read
    full = sync(main_db, tenant, full=True)
    contacts, chats = full.tables["wpp_contacts"], full.tables["wpp_chats"]
    assert (contacts.missing_in_tenant, contacts.only_in_tenant, contacts.upsert.inserted) == (
        1,
        1,
        1,
    )
    assert (chats.different_in_tenant, chats.upsert.updated) == (1, 1)
    assert rows(tenant, "SELECT COUNT(*) FROM wpp_contacts WHERE id = 3") == [(1,)]
    assert rows(tenant, "SELECT type FROM wpp_chats WHERE id = 11") == [("RECEPTIVE",)]


def test_legacy_chats_shape_is_upserted_by_original_id(main_db, tenants):
    write_source(main_db, SourceData(contacts=[contact(1)], chats=[chat(500, 1), chat(501, 1)]))
    tenant = tenants.home("acme")
    create_legacy_chats_table(tenant)
    with tenant.begin() as conn:  # a row a previous tool copied, and one created locally
        conn.exec_driver_sql(
            "INSERT INTO wpp_chats (original_id, instance, type) VALUES (500, 'acme', 'ACTIVE')"
        )
        conn.exec_driver_sql("INSERT INTO wpp_chats (instance, type) VALUES ('acme', 'LOCAL')")

    result = sync(main_db, tenant).tables["wpp_chats"]
    assert result.chats_shape.startswith("legacy")
    assert (result.upsert.inserted, result.upsert.updated) == (1, 1)
    again = sync(main_db, tenant, full=True).tables["wpp_chats"]
    assert again.written == 0
    assert rows(tenant, "SELECT original_id, type FROM wpp_chats ORDER BY id") == [
        (500, "RECEPTIVE"),
        (None, "LOCAL"),
        (501, "RECEPTIVE"),
    ]


def test_legacy_chats_with_duplicate_original_ids_stop_with_a_clear_error(main_db, pg_tenants):
    write_source(main_db, SourceData(contacts=[contact(1)], chats=[chat(500, 1)]))
    tenant = pg_tenants.home("acme")
    create_legacy_chats_table(tenant)
    with tenant.begin() as conn:
        for _ in range(2):
            conn.exec_driver_sql(
                "INSERT INTO wpp_chats (original_id, instance, type) VALUES (500, 'acme', 'X')"
            )
    with pytest.raises(Exception, match="1 original_id value"):
        sync(main_db, tenant, tables=["wpp_chats"])
    assert rows(tenant, "SELECT COUNT(*) FROM wpp_chats") == [(2,)]


def test_chat_datetimes_are_written_in_the_configured_timezone(main_db, tenants, monkeypatch):
    # The process's own zone must not matter: make it something else entirely.
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        write_source(main_db, SourceData(contacts=[contact(1)], chats=[chat(1, 1)]))
        tenant = tenants.home("acme")
        sync(main_db, tenant, tables=["wpp_chats"])
        started, finished = rows(tenant, "SELECT started_at, finished_at FROM wpp_chats")[0]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    # 15:00 UTC is 12:00 in São Paulo (UTC-3); fractions are dropped, never rounded up.
    assert started == dt.datetime(2024, 6, 1, 12, 0, 0)
    assert finished == dt.datetime(2024, 6, 1, 13, 30, 0)


def test_phone_moved_to_another_contact_keeps_both_contacts(main_db, tenants):
    write_source(
        main_db, SourceData(contacts=[contact(1, phone="554100"), contact(2, phone="554199")])
    )
    tenant = tenants.home("acme")
    sync(main_db, tenant)
    # at the source, contact 1 changed number and contact 2 took 1's old number
    source_exec(
        main_db, "UPDATE contacts SET phone = '554177', updated_at = :t WHERE id = 1", t=NOW
    )
    source_exec(
        main_db, "UPDATE contacts SET phone = '554100', updated_at = :t WHERE id = 2", t=NOW
    )
    result = sync(main_db, tenant).tables["wpp_contacts"]
    assert rows(tenant, "SELECT id, name, phone FROM wpp_contacts ORDER BY id") == [
        (1, "Contato 1", "554177"),
        (2, "Contato 2", "554100"),
    ]
    assert result.phones_moved_aside == 1


def test_failed_sync_does_not_advance_the_watermark(main_db, pg_tenants):
    write_source(main_db, SourceData(contacts=[contact(1)]))
    tenant = pg_tenants.home("acme")
    sync(main_db, tenant, tables=["wpp_contacts"])
    source_exec(main_db, "UPDATE contacts SET name = 'Depois', updated_at = :t WHERE id = 1", t=NOW)
    with tenant.begin() as conn:  # the tenant refuses writes for a while
        conn.exec_driver_sql(
            "ALTER TABLE wpp_contacts ADD CONSTRAINT no_depois CHECK (name <> 'Depois')"
        )
    with pytest.raises(WRITE_REFUSED):
        sync(main_db, tenant, tables=["wpp_contacts"])
    with tenant.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE wpp_contacts DROP CONSTRAINT no_depois")
    result = sync(main_db, tenant, tables=["wpp_contacts"]).tables["wpp_contacts"]
    assert (result.mode, result.upsert.updated) == ("incremental", 1)
    assert rows(tenant, "SELECT name FROM wpp_contacts") == [("Depois",)]


@pytest.mark.parametrize("edge", DST_EDGES, ids=DST_IDS)
def test_tenant_clock_matches_exact_conversion_around_dst_edges(edge):
    """The per-day offset cache gives the same wall clock as converting each value, on the
    transition days themselves (converted value by value) and on the days around them."""
    tz = ZoneInfo("America/Sao_Paulo")
    clock = TenantClock(tz)
    centre = edge.astimezone(dt.UTC).replace(tzinfo=None)
    values = [
        centre + dt.timedelta(minutes=7 * step, microseconds=250_001 * (step % 4))
        for step in range(-600, 600)
    ]
    for value in values:
        exact = value.replace(tzinfo=dt.UTC).astimezone(tz).replace(tzinfo=None, microsecond=0)
        assert clock(value) == exact, value


def test_tenant_clock_handles_a_half_hour_shift_off_the_hour():
    """Lord Howe Island moves by 30 minutes at 15:00 UTC (02:00 local): a transition that is
    not at midnight UTC, in a zone whose offset is not whole hours."""
    tz = ZoneInfo("Australia/Lord_Howe")
    clock = TenantClock(tz)
    start = dt.datetime(2024, 4, 6, 12, 0)  # DST ends 2024-04-07 02:00 local = 04-06 15:00 UTC
    for minutes in range(0, 8 * 60, 3):
        value = start + dt.timedelta(minutes=minutes, microseconds=999_999)
        exact = value.replace(tzinfo=dt.UTC).astimezone(tz).replace(tzinfo=None, microsecond=0)
        assert clock(value) == exact, value
    assert clock(None) is None
