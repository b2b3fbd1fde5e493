"""DETRAN run volume (issue 16): the schedules launch one run per tick whatever the number
of examiners, that run syncs every examiner with auto-sync examiner after examiner (each under
their own lock and portal session, one's failure not stopping the others), and one examiner
can still be backfilled alone over a date range from the asset's partitions."""

from __future__ import annotations

import datetime as dt
import os
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from dagster import (
    DagsterEventType,
    PartitionKeyRange,
    RunRequest,
    SkipReason,
    build_schedule_context,
    instance_for_test,
    materialize,
    partition_loading_context,
)

from sync_pipelines.detran.defs import (
    EXAMINERS_PARTITIONS,
    DetranPortalResource,
    agenda_partitions,
    agenda_slots,
    agendamentos,
    detran_days_4_to_14,
    detran_next_3_days,
    partition_key,
)
from sync_pipelines.detran.defs.partition_ranges import (
    AUTO_SYNC_SCOPE,
    FAILED_TAG,
    SCOPE_TAG,
)
from sync_pipelines.detran.examiners import save_examiner
from sync_pipelines.detran.sync import lock_name
from sync_pipelines.lib.locks import AdvisoryLock
from sync_pipelines.lib.migrations import migrate
from sync_pipelines.resources import DatabaseResource, TelegramResource

from .conftest import DOCTOR, PSYCHOLOGIST

TZ = ZoneInfo("America/Sao_Paulo")
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
EXAMINER_COUNT = 20


@pytest.fixture
def env(monkeypatch, detran_db, pg_url, pg_schema, portal, tmp_path):
    monkeypatch.setenv("DETRAN_DATABASE_URL", pg_url)
    monkeypatch.setenv("DETRAN_DATABASE_SCHEMA", pg_schema)
    monkeypatch.setenv("DETRAN_PORTAL_URL", portal.base_url)
    monkeypatch.setenv("DETRAN_DIAGNOSTICS_DIR", str(tmp_path / "pages"))
    # The control role (alert state, locks) in this test's schema.
    monkeypatch.setenv("SYNC_CONTROL_DATABASE_URL", pg_url)
    monkeypatch.setenv("SYNC_CONTROL_DATABASE_SCHEMA", pg_schema)
    migrate(detran_db, "control")
    return detran_db


def resources() -> dict:
    return {
        "detran_db": DatabaseResource.for_role("detran"),
        "detran_portal": DetranPortalResource.from_env_vars(),
        "telegram": TelegramResource.from_env_vars(),
        "control_db": DatabaseResource.for_role("control"),
    }


def add_examiners(db, ids) -> None:
    """More examiners with auto-sync (Mon-Fri) besides the two of the sandbox."""
    with db.begin() as conn:
        for usuario_id in ids:
            conn.execute(
                sa.text("INSERT INTO usuarios (id, nome) VALUES (:id, :n)"),
                {"id": usuario_id, "n": f"Perito {usuario_id}"},
            )
    for usuario_id in ids:
        save_examiner(
            db,
            usuario_id,
            cpf=f"{usuario_id:011d}",
            password=f"senha-{usuario_id}",
            profession="medico",
            work_days=[1, 2, 3, 4, 5],
            auto_sync=True,
            active=True,
            env=os.environ,
        )


def box(instance, request: RunRequest) -> dict[str, list[str]]:
    """The partitions a range run request covers, by examiner."""
    keys = agenda_partitions.get_partition_keys_in_range(
        PartitionKeyRange(request.tags[RANGE_START], request.tags[RANGE_END]),
        dynamic_partitions_store=instance,
    )
    by_examiner: dict[str, list[str]] = {}
    for key in keys:
        by_examiner.setdefault(key.keys_by_dimension["examiner"], []).append(
            key.keys_by_dimension["date"]
        )
    return by_examiner


def tick(schedule, instance, when: dt.datetime) -> list[RunRequest]:
    with build_schedule_context(
        instance=instance,
        scheduled_execution_time=when,
        resources={"detran_db": DatabaseResource.for_role("detran")},
    ) as context:
        result = schedule(context)
    if isinstance(result, SkipReason):
        return []
    return [r for r in result if isinstance(r, RunRequest)]


def test_a_simulated_day_of_ticks_launches_at_most_120_runs_for_20_examiners(env):
    add_examiners(env, range(3, EXAMINER_COUNT + 1))
    wednesday = dt.datetime(2031, 3, 12, 0, 0, tzinfo=TZ)
    every_examiner = [str(u) for u in range(1, EXAMINER_COUNT + 1)]
    runs = []
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(EXAMINERS_PARTITIONS, every_examiner)
        for quarter in range(96):
            when = wednesday + dt.timedelta(minutes=15 * quarter)
            runs += [("near", when, r) for r in tick(detran_next_3_days, instance, when)]
        for pair in range(12):
            when = wednesday + dt.timedelta(hours=2 * pair)
            runs += [("far", when, r) for r in tick(detran_days_4_to_14, instance, when)]
        assert len(runs) <= 120
        # Still every examiner's window on every tick: the runs cover, they do not thin out.
        assert len(runs) == 96 + 12
        for window, when, request in runs:
            covered = box(instance, request)
            assert sorted(covered, key=int) == every_examiner, (window, when)
            today = when.date()
            first, last = (0, 2) if window == "near" else (3, 13)
            wanted = {(today + dt.timedelta(days=o)).isoformat() for o in range(first, last + 1)}
            work = {d for d in wanted if dt.date.fromisoformat(d).isoweekday() <= 5}
            assert work <= set(covered["1"]) <= wanted, (window, when)
            assert request.tags[SCOPE_TAG] == AUTO_SYNC_SCOPE


def test_tick_is_skipped_while_the_previous_run_of_its_window_is_unfinished(env, instance):
    from dagster import DagsterRunStatus
    from dagster._core.test_utils import create_run_for_test

    when = dt.datetime(2031, 3, 12, 10, 0, tzinfo=TZ)
    (request,) = tick(detran_next_3_days, instance, when)
    create_run_for_test(
        instance,
        job_name="detran_all_examiners_sync",
        status=DagsterRunStatus.STARTED,
        tags=dict(request.tags),
    )
    assert tick(detran_next_3_days, instance, when + dt.timedelta(minutes=15)) == []
    # the other window is not held up by it
    assert len(tick(detran_days_4_to_14, instance, when)) == 1


def materialize_range(instance, start, end, *, assets=(agenda_slots,), tags=None):
    return materialize(
        list(assets),
        instance=instance,
        resources=resources(),
        tags={RANGE_START: str(start), RANGE_END: str(end), **(tags or {})},
        raise_on_error=False,
    )


def slot_materializations(result) -> list:
    return [
        m
        for m in result.asset_materializations_for_node("detran__agenda_slots")
        if m.asset_key == agenda_slots.key
    ]


def materialized(instance, asset) -> set[str]:
    return set(instance.get_materialized_partitions(asset.key))


def test_single_examiner_range_from_the_asset_partitions_syncs_in_one_run_with_one_login(
    env, instance, portal
):
    # Dates the daily dimension has (it ends 15 days after today).
    today = dt.datetime.now(TZ).date()
    days = [today + dt.timedelta(days=i) for i in range(1, 6)]
    keys = [partition_key(d, DOCTOR.usuario_id) for d in days]
    # The range Dagster makes of these partitions (as a backfill does): one examiner, 5 days.
    with partition_loading_context(dynamic_partitions_store=instance):
        (asked,) = agenda_partitions.subset_with_partition_keys(keys).get_partition_key_ranges(
            agenda_partitions
        )
    result = materialize_range(
        instance, asked.start, asked.end, assets=[agenda_slots, agendamentos]
    )
    assert result.success
    assert materialized(instance, agenda_slots) == {str(k) for k in keys}
    assert materialized(instance, agendamentos) == {str(k) for k in keys}
    with env.connect() as conn:
        stored = dict(
            conn.execute(
                sa.text(
                    "SELECT data, count(*) FROM agenda_slots WHERE usuario_id = 1 AND is_current"
                    " GROUP BY data"
                )
            ).all()
        )
        sync_runs = conn.execute(sa.text("SELECT count(*) FROM agenda_sync_runs")).scalar()
    on_portal = {d: len(portal.bookings(DOCTOR.code, "1234", d)) for d in days}
    assert stored == {d: n for d, n in on_portal.items() if n}
    assert sync_runs == 1  # one lock, one session for the five days
    logins = {m.metadata["logins"].value for m in slot_materializations(result)}
    assert logins == {1}
    # and one of those days alone, as a UI re-sync launches it, still works
    alone = materialize(
        [agenda_slots, agendamentos],
        partition_key=str(keys[0]),
        instance=instance,
        resources=resources(),
        raise_on_error=False,
    )
    assert alone.success
    (again,) = slot_materializations(alone)
    assert (again.metadata["inserted"].value, again.metadata["session_reused"].value) == (0, True)


def test_scheduled_run_syncs_each_examiner_under_their_lock_and_one_refusal_stops_no_one(
    env, instance, portal
):
    third = 3
    add_examiners(env, [third])
    instance.add_dynamic_partitions(EXAMINERS_PARTITIONS, [str(third)])
    from sync_pipelines.sandbox.detran_sim import PortalUser

    portal.add_user(
        PortalUser(
            f"000.000.000-{third:02d}", f"senha-{third}", "T3X4Y", "medico", {"3001": "CIRETRAN X"}
        )
    )
    # the doctor's stored password is refused by the portal
    save_examiner(env, DOCTOR.usuario_id, password="Senha#Errada-77", env=os.environ)
    wednesday = dt.datetime(2031, 3, 12, 9, 0, tzinfo=TZ)
    (request,) = tick(detran_next_3_days, instance, wednesday)
    days = [dt.date(2031, 3, 12) + dt.timedelta(days=i) for i in range(3)]
    result = materialize_range(
        instance, request.tags[RANGE_START], request.tags[RANGE_END], tags=dict(request.tags)
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
    message = failure.step_failure_data.error.message
    assert "examiner 1" in message and "examiner 2" not in message
    assert instance.get_run_by_id(result.run_id).tags[FAILED_TAG] == "1"
    # work days only: the psychologist works Mon-Sat, examiner 3 Mon-Fri (12..14 March)
    expected = {str(partition_key(d, 2)) for d in days} | {
        str(partition_key(d, third)) for d in days
    }
    assert materialized(instance, agenda_slots) == expected
    assert materialized(instance, agendamentos) == expected
    with env.connect() as conn:
        runs = conn.execute(
            sa.text("SELECT usuario_id, status FROM agenda_sync_runs ORDER BY usuario_id")
        ).all()
        slots = dict(
            conn.execute(
                sa.text(
                    "SELECT usuario_id, count(*) FROM agenda_slots WHERE is_current"
                    " GROUP BY usuario_id"
                )
            ).all()
        )
    assert [tuple(r) for r in runs] == [(1, "failed"), (2, "success"), (third, "success")]
    assert slots.get(1) is None
    assert slots[third] == sum(len(portal.bookings("T3X4Y", "3001", d)) for d in days)
    # Login reuse: the next tick's run reuses each examiner's session, no new login.
    save_examiner(env, DOCTOR.usuario_id, password=DOCTOR.password, env=os.environ)
    with AdvisoryLock(env, lock_name(PSYCHOLOGIST.usuario_id)):
        # a UI re-sync of the psychologist holds their lock: the scheduled run skips them
        again = materialize_range(
            instance, request.tags[RANGE_START], request.tags[RANGE_END], tags=dict(request.tags)
        )
    assert again.success
    sessions = {
        m.partition: (m.metadata["logins"].value, m.metadata["session_reused"].value)
        for m in slot_materializations(again)
    }
    # examiner 3 reuses the session of the first run; the doctor, whose password changed,
    # logs in once for the three days
    assert sessions == {
        **{str(partition_key(d, third)): (0, True) for d in days},
        **{str(partition_key(d, 1)): (1, False) for d in days},
    }
    text = "\n".join(r.user_message or "" for r in instance.all_logs(again.run_id))
    assert "examiner 2 skipped: another run holds their lock" in text
    with env.connect() as conn:
        psych_runs = conn.execute(
            sa.text("SELECT count(*) FROM agenda_sync_runs WHERE usuario_id = 2")
        ).scalar()
    assert psych_runs == 1  # the locked examiner was not touched
