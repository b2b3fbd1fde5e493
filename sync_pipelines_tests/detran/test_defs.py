"""The Dagster layer: partitions date × examiner, materialization through the simulator,
the examiner sensor, the schedules' run requests and tags, the lock as seen from a run, and
no personal data or password anywhere in the Dagster event log."""

from __future__ import annotations

import datetime as dt
import os

import pytest
import sqlalchemy as sa
from dagster import (
    DagsterEventType,
    DagsterInstance,
    build_schedule_context,
    build_sensor_context,
    materialize,
)

from sync_pipelines.detran.defs import (
    EXAMINERS_PARTITIONS,
    DetranPortalResource,
    agenda_slots,
    agendamentos,
    detran_days_4_to_14,
    detran_examiners_sensor,
    detran_next_3_days,
    partition_key,
)
from sync_pipelines.detran.examiners import save_examiner
from sync_pipelines.detran.sync import lock_name
from sync_pipelines.lib.locks import AdvisoryLock
from sync_pipelines.lib.migrations import migrate
from sync_pipelines.resources import DatabaseResource, TelegramResource

from .conftest import DOCTOR, PSYCHOLOGIST

TZ = "America/Sao_Paulo"


@pytest.fixture
def env(monkeypatch, detran_db, pg_url, pg_schema, portal, tmp_path):
    monkeypatch.setenv("DETRAN_DATABASE_URL", pg_url)
    # The control role (alert state, locks) in this test's schema; every other role in the
    # shared database, as the sandbox sets them (the project's definitions need one to load).
    monkeypatch.setenv("SYNC_CONTROL_DATABASE_URL", pg_url)
    monkeypatch.setenv("SYNC_CONTROL_DATABASE_SCHEMA", pg_schema)
    monkeypatch.setenv("SYNC_DATABASE_URL", pg_url)
    migrate(detran_db, "control")
    monkeypatch.setenv("DETRAN_DATABASE_SCHEMA", pg_schema)
    monkeypatch.setenv("DETRAN_PORTAL_URL", portal.base_url)
    monkeypatch.setenv("DETRAN_DIAGNOSTICS_DIR", str(tmp_path / "pages"))
    return detran_db


def resources():
    return {
        "detran_db": DatabaseResource.for_role("detran"),
        "detran_portal": DetranPortalResource.from_env_vars(),
        "telegram": TelegramResource.from_env_vars(),
        "control_db": DatabaseResource.for_role("control"),
    }


def today() -> dt.date:
    from zoneinfo import ZoneInfo

    return dt.datetime.now(ZoneInfo(TZ)).date()


def run(instance, key, assets=(agenda_slots, agendamentos)):
    return materialize(
        list(assets),
        partition_key=key,
        instance=instance,
        resources=resources(),
        raise_on_error=False,
    )


def event_text(instance, result) -> str:
    parts = []
    for record in instance.all_logs(result.run_id):
        parts.append(record.user_message or "")
        if record.dagster_event is not None:
            parts.append(repr(record.dagster_event))
    return "\n".join(parts)


def personal_data(portal, day) -> list[str]:
    values = []
    for ex in (DOCTOR, PSYCHOLOGIST):
        values += [ex.password, ex.cpf, ex.cpf.replace(".", "").replace("-", ""), ex.nome]
        for unit in ex.units:
            for b in portal.bookings(ex.code, unit, day):
                values += [b["cpf"], b["cpf"].replace(".", "").replace("-", ""), b["nome"]]
                values += [b[k] for k in ("telefone", "email") if b[k] != "NÃO INFORMADO"]
    return values


def test_partition_materializes_slots_and_appointments_with_counts(env, instance, portal):
    day = today() + dt.timedelta(days=1)
    key = partition_key(day, 1)
    result = run(instance, key)
    assert result.success
    slots_mat = result.asset_materializations_for_node("detran__agenda_slots")[0]
    expected = len(portal.bookings(DOCTOR.code, "1234", day))
    assert slots_mat.metadata["inserted"].value == expected
    assert slots_mat.metadata["status"].value == "success"
    appt = result.asset_materializations_for_node("detran__agendamentos")[0]
    assert appt.metadata["created"].value == expected
    # The partition's rows (the examiner's day) as the catalog's row count; nothing else
    # was stored for that day, so both equal the portal's bookings.
    assert slots_mat.metadata["dagster/row_count"].value == expected
    assert appt.metadata["dagster/row_count"].value == expected
    assert len(slots_mat.metadata["preview"].records) == min(expected, 40)
    again = run(instance, key)
    meta = again.asset_materializations_for_node("detran__agenda_slots")[0].metadata
    assert (meta["inserted"].value, meta["updated"].value, meta["removed"].value) == (0, 0, 0)
    assert meta["session_reused"].value is True


def test_no_personal_data_or_password_in_the_event_log(env, instance, portal):
    day = today() + dt.timedelta(days=1)
    ok = run(instance, partition_key(day, 2))
    assert ok.success
    portal.broken_pages = 1
    broken = run(instance, partition_key(day, 1), assets=[agenda_slots])
    assert not broken.success
    save_examiner(env, DOCTOR.usuario_id, password="Senha#Errada-77", env=os.environ)
    refused = run(instance, partition_key(day, 1), assets=[agenda_slots])
    assert not refused.success
    text = "\n".join(event_text(instance, r) for r in (ok, broken, refused))
    assert "unrecognised portal page" in text and "refused" in text
    leaks = [v for v in personal_data(portal, day) + ["Senha#Errada-77"] if v in text]
    assert leaks == []


def test_failed_page_fails_the_run_and_marks_nothing_removed(env, instance, portal):
    day = today() + dt.timedelta(days=1)
    key = partition_key(day, 1)
    assert run(instance, key).success
    portal.cancel_booking(
        DOCTOR.code, "1234", day, portal.bookings(DOCTOR.code, "1234", day)[0]["cpf"]
    )
    portal.broken_pages = 1
    result = run(instance, key, assets=[agenda_slots])
    assert not result.success
    with env.connect() as conn:
        removed = conn.execute(
            sa.text("SELECT count(*) FROM agenda_slots WHERE status = 'removed'")
        ).scalar()
        last = conn.execute(
            sa.text("SELECT status FROM agenda_sync_runs ORDER BY id DESC LIMIT 1")
        ).scalar()
    assert removed == 0 and last == "failed"


def test_second_run_for_a_locked_examiner_stops_quickly_with_a_clear_message(env, instance, portal):
    key = partition_key(today(), 1)
    with AdvisoryLock(env, lock_name(1)):
        result = run(instance, key, assets=[agenda_slots])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
    assert "already being synced by another run" in failure.step_failure_data.error.message
    assert portal.count(r"divisaoEquitativa|login\.do") == 0


def _sensor(instance):
    with build_sensor_context(
        instance=instance, resources={"detran_db": DatabaseResource.for_role("detran")}
    ) as context:
        return detran_examiners_sensor(context)


def test_sensor_adds_active_examiners_as_partitions(env):
    with DagsterInstance.ephemeral() as inst:
        (request,) = _sensor(inst).dynamic_partitions_requests
        assert request.partitions_def_name == EXAMINERS_PARTITIONS
        assert list(request.partition_keys) == ["1", "2"]
        inst.add_dynamic_partitions(EXAMINERS_PARTITIONS, ["1", "2"])
        save_examiner(env, 2, active=False)
        assert "already partitions" in _sensor(inst).skip_message


def _requests(schedule, instance, when):
    with build_schedule_context(
        instance=instance,
        scheduled_execution_time=when,
        resources={"detran_db": DatabaseResource.for_role("detran")},
    ) as context:
        return list(schedule(context))


def _box(instance, request) -> dict[str, list[str]]:
    """Examiner → dates of the partition range a run request covers."""
    from dagster import PartitionKeyRange

    from sync_pipelines.detran.defs import agenda_partitions

    keys = agenda_partitions.get_partition_keys_in_range(
        PartitionKeyRange(
            request.tags["dagster/asset_partition_range_start"],
            request.tags["dagster/asset_partition_range_end"],
        ),
        dynamic_partitions_store=instance,
    )
    box: dict[str, list[str]] = {}
    for key in keys:
        dims = key.keys_by_dimension
        box.setdefault(dims["examiner"], []).append(dims["date"])
    return box


def test_schedules_request_one_run_over_every_examiner_work_days_in_their_windows(env, instance):
    from zoneinfo import ZoneInfo

    friday = dt.datetime(2031, 3, 14, 10, 0, tzinfo=ZoneInfo(TZ))
    (near,) = _requests(detran_next_3_days, instance, friday)
    # Fri, Sat, Sun: the doctor works Mon-Fri, the psychologist Mon-Sat; nobody on Sunday.
    # The run narrows the box to each examiner's work days (scope tag).
    assert _box(instance, near) == {
        "1": ["2031-03-14", "2031-03-15"],
        "2": ["2031-03-14", "2031-03-15"],
    }
    assert near.tags["detran/scope"] == "auto_sync" and "examiner" not in near.tags
    (far,) = _requests(detran_days_4_to_14, instance, friday)
    far_dates = _box(instance, far)["1"]
    assert min(far_dates) == "2031-03-17" and max(far_dates) == "2031-03-27"
    save_examiner(env, 1, auto_sync=False)
    (near,) = _requests(detran_next_3_days, instance, friday)
    assert set(_box(instance, near)) == {"2"}


def test_schedules_run_in_sao_paulo_time_and_job_runs_carry_the_examiner_tag():
    assert detran_next_3_days.execution_timezone == TZ
    assert detran_days_4_to_14.cron_schedule == "0 */2 * * *"
    from sync_pipelines.definitions import defs as project_defs

    job = project_defs.resolve_job_def("detran_agenda_sync")
    tags = job.partitioned_config.get_tags_for_partition_key("2031-03-12|2", job.name)
    assert tags["examiner"] == "2"
