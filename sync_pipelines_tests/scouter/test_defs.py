"""The Dagster layer: the blocking schema check stops the export and shows the SQL; a day's
run exports and reports; the control job + driver sensor walk a period to completion; no
service key nor personal data reaches the event log."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from dagster import DagsterInstance, build_sensor_context

from sync_pipelines.catalog import SCOUTER_EXPORT_ERRORS, SCOUTER_LEADS
from sync_pipelines.definitions import build_defs
from sync_pipelines.resources import DatabaseResource
from sync_pipelines.sandbox.postgrest_sim import SANDBOX_SERVICE_KEY
from sync_pipelines.sandbox.scouter_data import insert_leads, make_lead
from sync_pipelines.scouter import jobs
from sync_pipelines.scouter.defs import gestao_scouter_export_driver
from sync_pipelines.scouter.source import TZ
from sync_pipelines_tests.clock import pinned_clock

from .conftest import DAY, dest_rows, seed_day


@pytest.fixture
def env(monkeypatch, pg_url, source_db, sim):
    monkeypatch.setenv("TABULADORMAX_DATABASE_URL", pg_url)
    # Every other role in the shared database, as the sandbox sets it (needed to load).
    monkeypatch.setenv("SYNC_DATABASE_URL", pg_url)
    monkeypatch.setenv("TABULADORMAX_DATABASE_SCHEMA", source_db.schema)
    monkeypatch.setenv("GESTAO_SCOUTER_URL", sim.base_url)
    monkeypatch.setenv("GESTAO_SCOUTER_SERVICE_KEY", SANDBOX_SERVICE_KEY)
    monkeypatch.delenv("GESTAO_SCOUTER_FIELD_MAPPINGS", raising=False)
    return source_db


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as inst:
        yield inst


def _run(instance, day: dt.date, run_config=None, tags=None):
    job = build_defs().resolve_job_def("gestao_scouter_export")
    return job.execute_in_process(
        partition_key=day.isoformat(),
        instance=instance,
        run_config=run_config or {},
        tags=tags,
        raise_on_error=False,
    )


def _event_text(instance, run_id: str) -> str:
    records = instance.all_logs(run_id)
    return "\n".join(str(r) for r in records)


def test_a_mapped_column_missing_at_the_destination_blocks_the_export_with_the_sql(
    env, sim, instance
):
    seed_day(env, DAY, 10)
    with sim.engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE {sim.table} DROP COLUMN etapa_funil")
    sim.reload_schema()
    result = _run(instance, DAY)
    assert not result.success
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.check_name == "mapped_columns_exist"
    report = evaluation.metadata["report"].value
    assert 'ALTER TABLE public.leads ADD COLUMN IF NOT EXISTS "etapa_funil" text;' in report
    assert "NOTIFY pgrst, 'reload schema';" in report
    assert sim.count("/rest/v1/leads", "POST") == 1  # the write check only, no export batch
    assert not result.asset_materializations_for_node("gestao_scouter__leads_export")


def test_a_day_run_exports_reports_and_leaks_no_key_nor_personal_data(env, sim, instance):
    leads = seed_day(env, DAY, 120, bad={5: "time"})
    result = _run(instance, DAY)
    assert result.success
    [mat] = [
        m
        for m in result.asset_materializations_for_node("gestao_scouter__leads_export")
        if m.asset_key.path[-1] == "leads_export"
    ]
    assert mat.metadata["leads_exported"].value == 119
    assert mat.metadata["leads_failed"].value == 1
    assert mat.metadata["job_status"].value == "completed"
    # the leads table's row count, read from Gestão Scouter after the export
    [table] = [m for m in result.get_asset_materialization_events() if m.asset_key == SCOUTER_LEADS]
    assert table.materialization.metadata["dagster/row_count"].value == len(dest_rows(sim))
    # the check on the error log ran in the same job, after the export
    [errors] = [
        c for c in result.get_asset_check_evaluations() if c.asset_key == SCOUTER_EXPORT_ERRORS
    ]
    assert not errors.passed and errors.metadata["errors_last_24h"].value == 1
    text = _event_text(instance, result.run_id)
    assert "leads_exported" in text and "leads_failed" in text  # the scan sees the metadata
    assert SANDBOX_SERVICE_KEY not in text
    for lead in leads:
        for field in ("celular", "telefone_trabalho", "name", "address"):
            if lead[field]:
                assert lead[field] not in text, field


def test_control_job_and_driver_sensor_walk_a_period_to_completion(env, sim, instance):
    days = [DAY + dt.timedelta(days=n) for n in range(3)]
    for n, day in enumerate(days):
        seed_day(env, day, 30, first_id=1000 * (n + 1))
    control = build_defs().resolve_job_def("gestao_scouter_export_control")
    start = {"action": "start", "start_date": days[0].isoformat(), "end_date": days[-1].isoformat()}
    assert control.execute_in_process(
        run_config={"ops": {"export_job_control": {"config": start}}},
        instance=instance,
    ).success
    [job_row] = jobs.list_jobs(env)
    resources = {"tabuladormax_db": DatabaseResource.for_role("tabuladormax")}
    ran = []
    for _ in range(6):
        with build_sensor_context(instance=instance, resources=resources) as ctx:
            outcome = gestao_scouter_export_driver(ctx)
        requests = getattr(outcome, "run_requests", None) or []
        if not requests:
            break
        for request in requests:
            ran.append(request.partition_key)
            assert _run(instance, dt.date.fromisoformat(request.partition_key),
                        request.run_config, request.tags).success  # fmt: skip
    assert ran == [d.isoformat() for d in days]
    done = jobs.get_job(env, job_row.id)
    assert done.status == "completed" and done.exported_leads == 90
    assert set(sim.written.values()) == {1}


def _drive(instance) -> list:
    """One tick of the driver sensor, then each run it asked for; returns the requests."""
    resources = {"tabuladormax_db": DatabaseResource.for_role("tabuladormax")}
    with build_sensor_context(instance=instance, resources=resources) as ctx:
        outcome = gestao_scouter_export_driver(ctx)
    requests = getattr(outcome, "run_requests", None) or []
    for request in requests:
        day = dt.date.fromisoformat(request.partition_key)
        assert _run(instance, day, request.run_config, request.tags).success
    return requests


def _control(instance, **config) -> None:
    control = build_defs().resolve_job_def("gestao_scouter_export_control")
    assert control.execute_in_process(
        run_config={"ops": {"export_job_control": {"config": config}}}, instance=instance
    ).success


def test_a_lead_updated_at_2350_on_new_years_eve_is_exported_after_the_day_ended(
    env, sim, instance
):
    eve = dt.date(2026, 12, 31)
    seed_day(env, eve, 10)

    def at(day, hour, minute=0):
        return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=TZ)

    with pinned_clock(at(eve, 23, 30)):
        _control(instance, action="start", start_date=eve.isoformat())  # up to today
        assert [r.partition_key for r in _drive(instance)] == [eve.isoformat()]
    [job_row] = jobs.list_jobs(env)
    assert job_row.end_date == eve and jobs.get_job(env, job_row.id).status == "running"
    late = make_lead(500, at(eve, 23, 50), random.Random(5))
    insert_leads(env, [late])
    with pinned_clock(at(eve, 23, 40)):
        assert _drive(instance) == []  # the next pass is not due yet
    new_year = eve + dt.timedelta(days=1)
    with pinned_clock(at(new_year, 0, 30)):
        assert [r.partition_key for r in _drive(instance)] == [eve.isoformat()]
    assert 500 in dest_rows(sim)
    assert jobs.get_job(env, job_row.id).status == "running"  # 00:30: not final yet
    with pinned_clock(at(new_year, 1, 35)):
        assert [r.partition_key for r in _drive(instance)] == [eve.isoformat()]
    done = jobs.get_job(env, job_row.id)
    assert done.status == "completed" and done.last_completed_date == eve
    assert len(dest_rows(sim)) == 11


def test_a_reset_or_resumed_one_day_job_is_run_by_the_driver_sensor(env, sim, instance):
    seed_day(env, DAY, 30)
    assert _run(instance, DAY).success  # a partition run: it gets a one-day job of its own
    [job_row] = jobs.list_jobs(env)
    assert job_row.origin == "partition_run"
    sim.reset()
    _control(instance, action="reset", job_id=job_row.id)
    assert [r.partition_key for r in _drive(instance)] == [DAY.isoformat()]
    assert jobs.get_job(env, job_row.id).status == "completed"
    assert len(sim.written) == 30

    with env.begin() as conn:  # as if an outage had stopped it mid-day
        conn.exec_driver_sql(
            "UPDATE gestao_scouter_export_jobs SET status = 'failed', processing_date = "
            f"last_completed_date, last_completed_date = NULL WHERE id = {job_row.id}"
        )
    _control(instance, action="resume", job_id=job_row.id)
    assert [r.partition_key for r in _drive(instance)] == [DAY.isoformat()]
    assert jobs.get_job(env, job_row.id).status == "completed"


def test_a_paused_export_run_fails_saying_so_and_does_not_materialize_the_day(env, sim, instance):
    seed_day(env, DAY, 60)
    _control(instance, action="start", start_date=DAY.isoformat(), end_date=DAY.isoformat())
    [job_row] = jobs.list_jobs(env)
    _control(instance, action="pause", job_id=job_row.id, reason="janela de manutenção")
    config = {"config": {"job_id": job_row.id}}
    result = _run(
        instance,
        DAY,
        {
            "ops": {
                "gestao_scouter__schema_validation": config,
                "gestao_scouter__leads_export": config,
            }
        },
    )
    assert not result.success
    assert not result.asset_materializations_for_node("gestao_scouter__leads_export")
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.to_string()
    assert "paused" in message and "janela de manutenção" in message and "resume" in message
    assert sim.written == {}
    assert _drive(instance) == []  # a paused job is not relaunched
