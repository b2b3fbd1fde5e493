"""Chats tracked by the source's ``updated_at``: the watermark is set by a successful pass and
only then, the incremental pass reads only what changed since, and nothing can slip past it
(equal timestamps, late commits with an earlier timestamp, writers whose clock runs ahead).
Time logic is checked on the project's calendar and Brazilian DST edges with a pinned clock.
"""

from __future__ import annotations

import datetime as dt

import pytest

from sync_pipelines.lib.db import Database
from sync_pipelines.local_sync.watermarks import Watermarks
from sync_pipelines.sandbox.local_sync_data import SourceData, add_chats_updated_at, write_source
from sync_pipelines_tests.clock import (
    CALENDAR_EDGES,
    DST_EDGES,
    DST_IDS,
    EDGE_IDS,
    SAO_PAULO,
    pinned_clock,
)

from .test_sync import NOW, WRITE_REFUSED, chat, contact, rows, source_exec, sync

T0 = dt.datetime(2024, 5, 1, 9, 0, 0)  # naive UTC, like Prisma's columns


def utc_naive(instant: dt.datetime) -> dt.datetime:
    return instant.astimezone(dt.UTC).replace(tzinfo=None)


def seed_chats(main_db: Database, count: int, *, open_every: int = 10) -> list[dict]:
    """``count`` chats of contact 1, one change an hour from T0; every ``open_every``-th open."""
    add_chats_updated_at(main_db)
    chats = []
    for n in range(1, count + 1):
        row = chat(n, 1, updated_at=T0 + dt.timedelta(hours=n))
        if n % open_every == 0:
            row.update(is_finished=False, finished_at=None, finished_by=None, result_id=None)
        chats.append(row)
    write_source(main_db, SourceData(contacts=[contact(1)], chats=chats))
    return chats


def chats_mark(main_db: Database, instance: str = "acme"):
    return Watermarks(main_db).get("wpp_chats", instance)


def test_second_incremental_run_reads_only_chats_changed_since(main_db, tenants):
    chats = seed_chats(main_db, 120)
    newest = max(c["updated_at"] for c in chats)
    tenant = tenants.home("acme")
    first = sync(main_db, tenant, tables=["wpp_chats"]).tables["wpp_chats"]
    assert (first.mode, first.upsert.inserted) == ("full", 120)
    assert chats_mark(main_db).changed_since == newest  # set by the successful full pass

    # three finished chats change (one of them long finished), one chat is new
    source_exec(
        main_db, "UPDATE chats SET result_id = 5, updated_at = :t WHERE id IN (3, 41, 77)", t=NOW
    )
    write_source(main_db, SourceData(chats=[chat(121, 1, updated_at=NOW)]))
    second = sync(main_db, tenant, tables=["wpp_chats"]).tables["wpp_chats"]

    assert second.mode == "incremental"
    # 3 changed + 1 new + the chat stamped exactly at the watermark (read again, never skipped);
    # the 12 open chats and the 105 untouched ones are not read
    assert second.source_rows == 5
    assert (second.upsert.updated, second.upsert.inserted, second.upsert.unchanged) == (3, 1, 1)
    assert rows(tenant, "SELECT id FROM wpp_chats WHERE result_id = 5 ORDER BY id") == [
        (3,),
        (41,),
        (77,),
    ]
    assert chats_mark(main_db).changed_since == NOW

    third = sync(main_db, tenant, tables=["wpp_chats"]).tables["wpp_chats"]
    assert third.source_rows == 4  # the four chats stamped at the watermark, nothing else
    assert third.written == 0


def test_late_commit_with_an_earlier_timestamp_and_an_equal_timestamp_are_synced(main_db, tenants):
    chats = seed_chats(main_db, 20)
    mark = max(c["updated_at"] for c in chats)
    tenant = tenants.home("acme")
    sync(main_db, tenant, tables=["wpp_chats"])

    # A transaction that stamped its chat 4 minutes before the watermark but committed after
    # the pass read the source, and another change stamped exactly at the watermark.
    source_exec(
        main_db,
        "UPDATE chats SET sector_id = 7, updated_at = :t WHERE id = 5",
        t=mark - dt.timedelta(minutes=4),
    )
    source_exec(main_db, "UPDATE chats SET sector_id = 8, updated_at = :t WHERE id = 6", t=mark)
    result = sync(main_db, tenant, tables=["wpp_chats"]).tables["wpp_chats"]

    assert result.mode == "incremental"
    assert result.upsert.updated == 2
    assert rows(tenant, "SELECT id, sector_id FROM wpp_chats WHERE id IN (5, 6) ORDER BY id") == [
        (5, 7),
        (6, 8),
    ]


def test_chat_without_a_timestamp_is_tracked_by_id_and_open_state(main_db, tenants):
    seed_chats(main_db, 10, open_every=4)
    tenant = tenants.home("acme")
    sync(main_db, tenant, tables=["wpp_chats"])
    # a writer that does not maintain updated_at: a new chat and an open chat finished
    write_source(main_db, SourceData(chats=[chat(11, 1, updated_at=None)]))
    source_exec(
        main_db,
        "UPDATE chats SET is_finished = true, finished_by = 9, updated_at = NULL WHERE id = 4",
    )
    result = sync(main_db, tenant, tables=["wpp_chats"]).tables["wpp_chats"]
    assert (result.upsert.inserted, result.upsert.updated) == (1, 1)
    assert rows(tenant, "SELECT is_finished, finished_by FROM wpp_chats WHERE id = 4") == [(1, 9)]


def test_failed_chats_pass_does_not_advance_the_watermark(main_db, pg_tenants):
    seed_chats(main_db, 10)
    tenant = pg_tenants.home("acme")
    sync(main_db, tenant, tables=["wpp_chats"])
    before = chats_mark(main_db)
    source_exec(main_db, "UPDATE chats SET result_id = 5, updated_at = :t WHERE id = 2", t=NOW)
    with tenant.begin() as conn:  # the tenant refuses the write for a while
        conn.exec_driver_sql("ALTER TABLE wpp_chats ADD CONSTRAINT no_five CHECK (result_id <> 5)")

    with pytest.raises(WRITE_REFUSED):
        sync(main_db, tenant, tables=["wpp_chats"])
    assert chats_mark(main_db) == before

    with tenant.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE wpp_chats DROP CONSTRAINT no_five")
    result = sync(main_db, tenant, tables=["wpp_chats"]).tables["wpp_chats"]
    assert (result.mode, result.upsert.updated) == ("incremental", 1)
    assert rows(tenant, "SELECT result_id FROM wpp_chats WHERE id = 2") == [(5,)]


@pytest.mark.parametrize("instant", CALENDAR_EDGES, ids=EDGE_IDS)
def test_watermark_near_midnight_never_runs_ahead_of_the_clock(main_db, pg_tenants, instant):
    now = utc_naive(instant)
    add_chats_updated_at(main_db)
    write_source(
        main_db,
        SourceData(
            contacts=[contact(1)],
            chats=[
                chat(1, 1, started_at=now, finished_at=now, updated_at=now - dt.timedelta(days=1)),
                # a writer whose clock runs an hour ahead
                chat(2, 1, updated_at=now + dt.timedelta(hours=1)),
            ],
        ),
    )
    tenant = pg_tenants.home("acme")
    with pinned_clock(instant):
        sync(main_db, tenant, tables=["wpp_chats"])
    # the chat's times are São Paulo wall clock: near midnight another day than UTC's
    wall = instant.astimezone(SAO_PAULO).replace(tzinfo=None, microsecond=0)
    assert rows(tenant, "SELECT started_at FROM wpp_chats WHERE id = 1") == [(wall,)]

    later = instant + dt.timedelta(minutes=20)
    source_exec(
        main_db, "UPDATE chats SET result_id = 4, updated_at = :t WHERE id = 1", t=utc_naive(later)
    )
    with pinned_clock(later):
        result = sync(main_db, tenant, tables=["wpp_chats"]).tables["wpp_chats"]
    assert result.mode == "incremental"
    assert rows(tenant, "SELECT result_id FROM wpp_chats WHERE id = 1") == [(4,)]


@pytest.mark.parametrize("instant", DST_EDGES, ids=DST_IDS)
def test_old_chats_from_brazilian_dst_keep_their_wall_time_and_are_tracked(
    main_db, pg_tenants, instant
):
    when = utc_naive(instant)
    add_chats_updated_at(main_db)
    write_source(
        main_db,
        SourceData(
            contacts=[contact(1)],
            chats=[
                chat(
                    1,
                    1,
                    started_at=when,
                    finished_at=when + dt.timedelta(hours=1),
                    updated_at=when - dt.timedelta(hours=2),
                )
            ],
        ),
    )
    tenant = pg_tenants.home("acme")
    with pinned_clock(instant):  # and the sync itself runs on that day
        sync(main_db, tenant, tables=["wpp_chats"])
        source_exec(main_db, "UPDATE chats SET sector_id = 6, updated_at = :t WHERE id = 1", t=when)
        result = sync(main_db, tenant, tables=["wpp_chats"]).tables["wpp_chats"]
    # the wall time São Paulo had then: UTC-2 in DST (2018-11-04), 23:30 twice on 2019-02-16
    started = rows(tenant, "SELECT started_at, sector_id FROM wpp_chats WHERE id = 1")
    assert started == [(instant.replace(tzinfo=None), 6)]
    assert (result.mode, result.upsert.updated) == ("incremental", 1)
