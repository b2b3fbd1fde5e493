"""Stuck export jobs, against the PostgREST and Telegram simulators and real PostgreSQL: a job
frozen in 'running' past the limit is flagged by the check, moved to 'failed' with the
reason, announced once, and resumes from its last completed day without re-sending any."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from dagster import Definitions, SkipReason, build_sensor_context, instance_for_test

from sync_pipelines.lib.migrations import migrate
from sync_pipelines.resources import database_resources
from sync_pipelines.sandbox.telegram_sim import SANDBOX_ADMIN_IDS, TELEGRAM_PART
from sync_pipelines.scouter import defs as scouter_defs
from sync_pipelines.scouter import jobs
from sync_pipelines.scouter.export import export_day, export_job
from sync_pipelines.scouter.mapping import resolve_mapping
from sync_pipelines.scouter.source import TZ, source_columns
from sync_pipelines.scouter.stuck import fail_stuck_job, stuck_jobs

from .conftest import DAY, seed_day

# Long after every exported day: each one is final (ended in São Paulo, plus the margin).
NOW = dt.datetime.combine(DAY + dt.timedelta(days=10), dt.time(12), tzinfo=TZ)
ADMIN = SANDBOX_ADMIN_IDS[0]
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def env(monkeypatch, source_db, pg_url, pg_schema, telegram):
    for var, value in {
        "TABULADORMAX_DATABASE_URL": pg_url,
        "SYNC_DATABASE_URL": pg_url,  # the other roles, as the sandbox sets them
        "TABULADORMAX_DATABASE_SCHEMA": pg_schema,
        "SYNC_CONTROL_DATABASE_URL": pg_url,
        "SYNC_CONTROL_DATABASE_SCHEMA": pg_schema,
        **TELEGRAM_PART.env(telegram.base_url),
    }.items():
        monkeypatch.setenv(var, value)
    migrate(source_db, "control")
    return source_db


def age(db, job_id: int, minutes: int) -> None:
    """The job's last progress, ``minutes`` ago (a frozen worker)."""
    with db.begin() as conn:
        conn.execute(
            sa.text(
                f"UPDATE {db.table('gestao_scouter_export_jobs')} SET status = 'running',"
                " updated_at = now() - make_interval(mins => :m) WHERE id = :id"
            ),
            {"m": minutes, "id": job_id},
        )


def tick(instance):
    resources = {
        **database_resources(),
        "gestao_scouter": scouter_defs.GestaoScouterResource.from_env_vars(),
    }
    with build_sensor_context(instance=instance, resources=resources) as ctx:
        return scouter_defs.gestao_scouter_stuck_jobs_sensor(ctx)


def run_check(instance):
    resources = {
        **database_resources(),
        "gestao_scouter": scouter_defs.GestaoScouterResource.from_env_vars(),
    }
    defs = Definitions.merge(scouter_defs.defs, Definitions(resources=resources))
    result = defs.resolve_job_def("gestao_scouter_stuck_jobs").execute_in_process(instance=instance)
    assert result.success
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


def frozen_mid_period(db, client) -> tuple[jobs.ExportJob, set[int], set[int]]:
    """Day 1 exported, day 2 half done, then the worker froze with the job 'running'."""
    days = [DAY + dt.timedelta(days=n) for n in range(3)]
    per_day = [
        {lead["id"] for lead in seed_day(db, d, 40, first_id=1000 * (n + 1))}
        for n, d in enumerate(days)
    ]
    job = jobs.create_job(db, days[0], days[-1], {})
    ctx = resolve_mapping(), source_columns(db), client.columns()
    export_day(db, client, job.id, days[0], *ctx, now=NOW, batch_size=20)

    def freeze_after_first_batch(result):
        jobs.pause_job(db, job.id)  # stops the loop here; `age` puts it back to 'running'

    export_day(
        db, client, job.id, days[1], *ctx, now=NOW, batch_size=20,
        progress=freeze_after_first_batch,
    )  # fmt: skip
    age(db, job.id, 61)
    return jobs.get_job(db, job.id), per_day[0], set().union(*per_day)


def test_frozen_job_is_flagged_failed_announced_once_and_resumes_without_resending(
    env, client, sim, telegram
):
    job, day_one, every_lead = frozen_mid_period(env, client)
    assert job.status == "running" and job.last_completed_date == DAY
    sent_before = sum(sim.received.values())
    assert sent_before == 60  # day 1 (40) and the first batch of day 2 (20)

    with instance_for_test() as instance:
        assert tick(instance).run_key.startswith(f"stuck-{job.id}@")
        evaluation = run_check(instance)
        assert not evaluation.passed
        assert evaluation.metadata["moved_to_failed_now"].value == 1
        assert evaluation.metadata["job_ids"].value == str(job.id)
        failed = jobs.get_job(env, job.id)
        assert failed.status == "failed" and failed.pause_reason.startswith("stuck:")
        assert "no progress for more than 60 min" in failed.pause_reason
        assert f"continue from {DAY + dt.timedelta(days=1)}" in failed.pause_reason
        assert failed.last_completed_date == DAY and failed.cursor is not None

        # Later ticks: nothing new to do, and a forced check run sends nothing again.
        assert isinstance(tick(instance), SkipReason)
        assert not run_check(instance).passed
        texts = telegram.texts(ADMIN)
        assert len(texts) == 1 and f"export job {job.id} was stuck" in texts[0]
        assert len(telegram.messages) == len(SANDBOX_ADMIN_IDS)

        jobs.resume_job(env, job.id)
        ctx = resolve_mapping(), source_columns(env), client.columns()
        export_job(env, client, job.id, *ctx, now=NOW, batch_size=20)
        done = jobs.get_job(env, job.id)
        assert done.status == "completed" and done.exported_leads == len(every_lead)
        assert set(sim.written) == every_lead
        assert set(sim.received.values()) == {1}, "a lead was sent twice"
        assert all(sim.received[i] == 1 for i in day_one)

        assert tick(instance).run_key.startswith(f"moved-{job.id}@")
        assert run_check(instance).passed
    texts = telegram.texts(ADMIN)
    assert len(texts) == 2 and f"export job {job.id} is completed again" in texts[1]


def test_a_running_job_with_recent_progress_is_left_alone(env, client, sim, telegram):
    seed_day(env, DAY, 30)
    job = jobs.create_job(env, DAY, DAY + dt.timedelta(days=1), {})
    age(env, job.id, 59)
    with instance_for_test() as instance:
        assert isinstance(tick(instance), SkipReason)
        assert run_check(instance).passed
    assert jobs.job_status(env, job.id) == "running" and telegram.messages == []


def test_the_limit_is_configurable(env, monkeypatch):
    job = jobs.create_job(env, DAY, DAY, {})
    age(env, job.id, 20)
    assert stuck_jobs(env, HOUR) == []
    monkeypatch.setenv("GESTAO_SCOUTER_STUCK_AFTER_MINUTES", "15")
    with instance_for_test() as instance:
        assert not run_check(instance).passed
    assert jobs.job_status(env, job.id) == "failed"


def test_a_job_that_progressed_meanwhile_is_not_failed(env):
    job = jobs.create_job(env, DAY, DAY, {})
    age(env, job.id, 90)
    [seen] = stuck_jobs(env, HOUR)
    age(env, job.id, 0)  # a batch landed between the look and the move
    assert fail_stuck_job(env, seen, HOUR) is None
    assert jobs.job_status(env, job.id) == "running"


def test_a_run_still_alive_stops_at_its_next_batch_once_the_job_is_failed(env, client, sim):
    seed_day(env, DAY, 100)
    job = jobs.create_job(env, DAY, DAY, {})
    ctx = resolve_mapping(), source_columns(env), client.columns()

    def flagged_by_the_guard(result):
        if result.batches == 1:
            age(env, job.id, 120)
            fail_stuck_job(env, jobs.get_job(env, job.id), HOUR)

    result = export_day(
        env, client, job.id, DAY, *ctx, now=NOW, batch_size=25, progress=flagged_by_the_guard
    )
    assert result.batches == 1 and len(sim.written) == 25
    assert jobs.job_status(env, job.id) == "failed"
