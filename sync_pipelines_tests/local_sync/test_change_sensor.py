"""The change sensor on a real main database (PostgreSQL and MariaDB) and a real Dagster instance.

Each test seeds three instances, lets the sensor take its baseline, changes rows the way the
application does (one UPDATE stamping ``updated_at``) and evaluates the sensor again with
the cursor it returned, as the daemon does.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from dagster import DagsterRunStatus, SensorResult, build_sensor_context, instance_for_test
from dagster._core.test_utils import create_run_for_test

from sync_pipelines.lib.db import Database
from sync_pipelines.local_sync.defs import (
    TENANT_TAG,
    local_sync_changed_tenants,
    local_sync_job,
    tenant_partitions,
)
from sync_pipelines.resources import DatabaseResource, TenantDatabasesResource
from sync_pipelines.sandbox.local_sync_data import (
    add_chats_updated_at,
    create_source_tables,
    generate_instance,
    write_source,
)

INSTANCES = ("acme", "bravo", "charlie")
OVERLAP_MINUTES = 10


@pytest.fixture(params=["postgresql", "mysql"])
def main(request) -> Database:
    """The main database on each engine the application may use (MariaDB skipped with the
    conftest's reason when SYNC_TEST_MYSQL_URL is not set)."""
    db = request.getfixturevalue("pg_db" if request.param == "postgresql" else "mysql_db")
    create_source_tables(db)
    for n, name in enumerate(INSTANCES):
        write_source(
            db,
            generate_instance(
                name, 40, first_contact_id=1 + n * 1000, first_chat_id=1 + n * 1000, seed=5
            ),
        )
    return db


@pytest.fixture
def instance():
    with instance_for_test() as inst:
        inst.add_dynamic_partitions(tenant_partitions.name, list(INSTANCES))
        yield inst


def _resources(db: Database) -> dict:
    url = db.engine.url.render_as_string(hide_password=False)
    return {
        "whatsapp_db": DatabaseResource(role="whatsapp", url=url, schema_name=db.schema),
        "tenant_dbs": TenantDatabasesResource(overlap_minutes=OVERLAP_MINUTES),
    }


def _tick(db: Database, instance, cursor: str | None) -> SensorResult:
    with build_sensor_context(instance=instance, cursor=cursor, resources=_resources(db)) as ctx:
        result = local_sync_changed_tenants(ctx)
    assert isinstance(result, SensorResult)
    return result


def _now() -> dt.datetime:
    """What Prisma writes: UTC wall clock, no zone, milliseconds."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _first_contact(db: Database, instance_name: str, skip: int = 0) -> int:
    with db.connect() as conn:
        return conn.execute(
            sa.text("SELECT id FROM contacts WHERE instance = :i ORDER BY id LIMIT 1 OFFSET :s"),
            {"i": instance_name, "s": skip},
        ).scalar_one()


def _touch(conn: sa.Connection, contact_id: int, stamp: dt.datetime, name: str) -> None:
    conn.execute(
        sa.text("UPDATE contacts SET name = :n, updated_at = :t WHERE id = :id"),
        {"n": name, "t": stamp, "id": contact_id},
    )


def _stamp(db: Database, statement: str, **params) -> None:
    """One statement of the application, in its own transaction, stamped ``:t`` = now."""
    with db.begin() as conn:
        conn.execute(sa.text(statement), {"t": _now(), **params})


def _tick_after(db: Database, instance, cursor: str, statement: str, **params) -> SensorResult:
    _stamp(db, statement, **params)
    return _tick(db, instance, cursor)


def _partitions(result: SensorResult) -> list[str]:
    return sorted(r.partition_key for r in result.run_requests)


def test_one_changed_contact_launches_only_its_tenant(main, instance):
    baseline = _tick(main, instance, None)
    assert baseline.run_requests == [] and "baseline" in baseline.skip_reason.skip_message

    with main.begin() as conn:
        _touch(conn, _first_contact(main, "bravo"), _now(), "Bruna Renamed")
    changed = _tick(main, instance, baseline.cursor)
    assert _partitions(changed) == ["bravo"]
    request = changed.run_requests[0]
    assert request.tags[TENANT_TAG] == "bravo"
    assert request.run_key.startswith("changed:bravo:")

    # The next tick has nothing new: nothing launched again.
    after = _tick(main, instance, changed.cursor)
    assert after.run_requests == []


def test_no_change_launches_nothing_and_keeps_the_cursor(main, instance):
    baseline = _tick(main, instance, None)
    quiet = _tick(main, instance, baseline.cursor)
    assert quiet.run_requests == []
    assert "no tenant changed" in quiet.skip_reason.skip_message
    assert quiet.cursor == baseline.cursor


def test_two_changes_with_the_same_updated_at_are_both_seen(main, instance):
    cursor = _tick(main, instance, None).cursor
    stamp = _now()
    # Same millisecond, two tenants, one tick: both launched.
    with main.begin() as conn:
        _touch(conn, _first_contact(main, "acme"), stamp, "Ana One")
        _touch(conn, _first_contact(main, "charlie"), stamp, "Carla One")
    first = _tick(main, instance, cursor)
    assert _partitions(first) == ["acme", "charlie"]
    # Another contact of acme lands with exactly the updated_at already seen: a watermark
    # `updated_at > newest seen` would skip it; the sensor launches acme again.
    with main.begin() as conn:
        _touch(conn, _first_contact(main, "acme", skip=1), stamp, "Ana Two")
    second = _tick(main, instance, first.cursor)
    assert _partitions(second) == ["acme"]
    assert second.run_requests[0].run_key != first.run_requests[0].run_key


def test_a_late_commit_with_an_older_updated_at_is_not_lost(main, instance):
    cursor = _tick(main, instance, None).cursor
    older = _now()
    # Transaction L stamps its row first and commits last (a slow request in the app).
    late = main.engine.connect()
    try:
        late_tx = late.begin()
        _touch(late, _first_contact(main, "charlie"), older, "Late Writer")
        newer = older + dt.timedelta(seconds=2)
        with main.begin() as conn:
            _touch(conn, _first_contact(main, "charlie", skip=1), newer, "Early Writer")
        seen_newer = _tick(main, instance, cursor)
        assert _partitions(seen_newer) == ["charlie"]
        late_tx.commit()
    finally:
        late.close()
    # L's row is older than the newest change already seen, yet it is a change: launched.
    seen_late = _tick(main, instance, seen_newer.cursor)
    assert _partitions(seen_late) == ["charlie"]
    assert seen_late.run_requests[0].run_key != seen_newer.run_requests[0].run_key


def test_the_same_state_seen_twice_gives_the_same_run_key(main, instance):
    cursor = _tick(main, instance, None).cursor
    with main.begin() as conn:
        _touch(conn, _first_contact(main, "acme"), _now(), "Ana Again")
    # A tick whose cursor was never saved (the daemon died after launching) is evaluated
    # again from the same cursor: same key, so Dagster launches the run once.
    once = _tick(main, instance, cursor)
    again = _tick(main, instance, cursor)
    assert [r.run_key for r in once.run_requests] == [r.run_key for r in again.run_requests]


def test_new_and_finished_chats_are_changes(main, instance):
    cursor = _tick(main, instance, None).cursor
    new_chat = _tick_after(
        main,
        instance,
        cursor,
        "INSERT INTO chats (id, instance, type, started_at, is_finished, is_schedule)"
        " VALUES (99001, 'acme', 'RECEPTIVE', :t, false, false)",
    )
    assert _partitions(new_chat) == ["acme"]

    with main.connect() as conn:
        chat = conn.execute(
            sa.text("SELECT MIN(id) FROM chats WHERE instance = 'bravo' AND finished_at IS NULL")
        ).scalar_one()
    finished = _tick_after(
        main,
        instance,
        new_chat.cursor,
        "UPDATE chats SET is_finished = true, finished_at = :t WHERE id = :id",
        id=chat,
    )
    assert _partitions(finished) == ["bravo"]


def test_chats_with_updated_at_are_watched_by_it(main, instance):
    add_chats_updated_at(main)
    cursor = _tick(main, instance, None).cursor
    # A transfer of an open chat: only updated_at says it changed.
    result = _tick_after(
        main,
        instance,
        cursor,
        "UPDATE chats SET sector_id = 99, updated_at = :t WHERE id = ("
        " SELECT id FROM (SELECT MIN(id) AS id FROM chats WHERE instance = 'charlie') m)",
    )
    assert _partitions(result) == ["charlie"]


def test_a_tenant_with_a_sync_waiting_to_start_gets_no_second_run(main, instance):
    cursor = _tick(main, instance, None).cursor
    # acme: a run created, not started yet (it will read every change committed before it
    # starts); bravo: a run already reading, which may have missed the change.
    for tenant, status in (
        ("acme", DagsterRunStatus.NOT_STARTED),
        ("bravo", DagsterRunStatus.STARTED),
    ):
        create_run_for_test(
            instance,
            job_name=local_sync_job.name,
            status=status,
            tags={TENANT_TAG: tenant, "dagster/partition": tenant},
        )
    with main.begin() as conn:
        for tenant in ("acme", "bravo"):
            _touch(conn, _first_contact(main, tenant), _now(), f"{tenant} changed")
    result = _tick(main, instance, cursor)
    # bravo's next run queues behind the running one (local_sync/tenant limit in dagster.yaml).
    assert _partitions(result) == ["bravo"]


def test_an_instance_without_a_partition_is_left_to_the_new_tenant_sensor(main, instance):
    write_source(
        main, generate_instance("newco", 3, first_contact_id=50_000, first_chat_id=50_000, seed=1)
    )
    cursor = _tick(main, instance, None).cursor
    with main.begin() as conn:
        _touch(conn, _first_contact(main, "newco"), _now(), "Nina New")
    result = _tick(main, instance, cursor)
    assert result.run_requests == []
