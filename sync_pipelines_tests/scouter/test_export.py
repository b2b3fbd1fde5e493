"""Exporting days and periods: every lead once, a bad lead isolated from its batch, pause and
resume without gaps or repeats, failures recorded and resumable, old errors purged."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from sync_pipelines.scouter import jobs
from sync_pipelines.scouter.export import ExportAborted, export_day, export_job
from sync_pipelines.scouter.mapping import resolve_mapping
from sync_pipelines.scouter.source import TZ, source_columns

from .conftest import DAY, dest_rows, seed_day

# Long after every exported day: each one is final (ended in São Paulo, plus the margin).
NOW = dt.datetime.combine(DAY + dt.timedelta(days=10), dt.time(12), tzinfo=TZ)


def _ctx(source_db, client):
    return resolve_mapping(), source_columns(source_db), client.columns()


def _errors(db) -> list[dict]:
    with db.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                sa.text(f"SELECT * FROM {db.table('gestao_scouter_export_errors')} ORDER BY id")
            ).mappings()
        ]


def test_a_day_with_1000_updated_leads_exports_each_of_them_once(source_db, client, sim):
    leads = seed_day(source_db, DAY, 1000)
    job = jobs.create_job(source_db, DAY, DAY, {})
    result = export_day(source_db, client, job.id, DAY, *_ctx(source_db, client), now=NOW)
    assert (result.read, result.exported, result.errors) == (1000, 1000, 0)
    assert result.requests == 20  # 1000 / 50
    assert set(sim.written) == {lead["id"] for lead in leads}
    assert set(sim.received.values()) == {1} and set(sim.written.values()) == {1}
    done = jobs.get_job(source_db, job.id)
    assert (done.status, done.exported_leads, done.total_leads) == ("completed", 1000, 1000)
    assert done.last_completed_date == DAY and done.processing_date is None


def test_one_invalid_lead_becomes_one_error_row_and_the_other_49_are_exported(
    source_db, client, sim
):
    seed_day(source_db, DAY, 50, first_id=1, bad={17: "number"})
    job = jobs.create_job(source_db, DAY, DAY, {})
    result = export_day(source_db, client, job.id, DAY, *_ctx(source_db, client), now=NOW)
    assert (result.exported, result.errors) == (49, 1)
    assert set(dest_rows(sim)) == set(range(1, 51)) - {17}
    [error] = _errors(source_db)
    assert error["lead_id"] == 17 and error["job_id"] == job.id
    assert error["response_status"] == 400 and error["error_details"]["code"] == "22P02"
    assert "MX-17" in error["error_message"]
    assert "maxsystem_id_ficha" in error["fields_sent"] and "nome" in error["fields_sent"]
    snapshot = error["lead_snapshot"]
    assert snapshot["maxsystem_id_ficha"] == "MX-17"
    assert snapshot["name"].endswith("***") and "*" in snapshot["telefone_trabalho"]
    assert jobs.get_job(source_db, job.id).error_leads == 1


def test_pause_mid_period_then_resume_skips_no_lead_and_sends_none_twice(source_db, client, sim):
    days = [DAY + dt.timedelta(days=n) for n in range(3)]
    ids: set[int] = set()
    for n, day in enumerate(days):
        ids |= {lead["id"] for lead in seed_day(source_db, day, 120, first_id=1000 * (n + 1))}
    job = jobs.create_job(source_db, days[0], days[-1], {})
    batches = []

    def pause_after_four_batches(result):
        batches.append(result.batches)
        if len(batches) == 4:  # day 2, second batch: someone clicks "pause"
            jobs.pause_job(source_db, job.id, "maintenance window")

    ctx = _ctx(source_db, client)
    first = export_job(source_db, client, job.id, *ctx, now=NOW, progress=pause_after_four_batches)
    paused = jobs.get_job(source_db, job.id)
    assert first[-1].paused and paused.status == "paused"
    assert paused.pause_reason == "maintenance window"
    assert paused.last_completed_date == days[0] and paused.processing_date == days[1]
    assert paused.exported_leads == 120 + 50  # day 1, then one batch of day 2
    assert len(sim.written) == 170

    jobs.resume_job(source_db, job.id)
    export_job(source_db, client, job.id, *ctx, now=NOW)
    done = jobs.get_job(source_db, job.id)
    assert done.status == "completed" and done.exported_leads == 360
    assert set(sim.written) == ids
    assert set(sim.received.values()) == {1}, "a lead was sent twice"


def test_reset_clears_progress_and_errors_and_starts_the_period_over(source_db, client, sim):
    seed_day(source_db, DAY, 10, first_id=1, bad={3: "time"})
    job = jobs.create_job(source_db, DAY, DAY, {})
    export_job(source_db, client, job.id, *_ctx(source_db, client), now=NOW)
    with pytest.raises(jobs.JobStateError):
        jobs.pause_job(source_db, job.id)  # completed: nothing to pause
    reset = jobs.reset_job(source_db, job.id)
    assert (reset.status, reset.exported_leads, reset.error_leads) == ("pending", 0, 0)
    assert reset.last_completed_date is None and reset.generation == 1
    assert _errors(source_db) == []
    export_job(source_db, client, job.id, *_ctx(source_db, client), now=NOW)
    again = jobs.get_job(source_db, job.id)
    assert (again.status, again.exported_leads, again.error_leads) == ("completed", 9, 1)


def test_a_job_without_end_date_covers_up_to_its_start_day_and_completes_once_that_is_final(
    source_db, client, sim
):
    last = DAY + dt.timedelta(days=2)
    seed_day(source_db, DAY, 5, first_id=1)
    seed_day(source_db, last, 5, first_id=100)
    job = jobs.create_job(source_db, DAY, None, {}, today=last)
    assert job.end_date == last
    afternoon = dt.datetime.combine(last, dt.time(15), tzinfo=TZ)
    results = export_job(source_db, client, job.id, *_ctx(source_db, client), now=afternoon)
    assert [(r.day, r.final) for r in results] == [
        (DAY, True), (DAY + dt.timedelta(days=1), True), (last, False)
    ]  # fmt: skip
    assert jobs.get_job(source_db, job.id).status == "running"
    after = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(1, 30), tzinfo=TZ)
    export_job(source_db, client, job.id, *_ctx(source_db, client), now=after)
    done = jobs.get_job(source_db, job.id)
    assert done.status == "completed" and done.last_completed_date == last
    assert set(dest_rows(sim)) == set(range(1, 6)) | set(range(100, 105))


def test_an_outage_fails_the_job_and_resume_continues_after_the_last_batch(source_db, client, sim):
    seed_day(source_db, DAY, 200, first_id=1)
    job = jobs.create_job(source_db, DAY, DAY, {})
    ctx = _ctx(source_db, client)

    def outage_after_two(result):
        if result.batches == 2:
            sim.set_faults(outage="503")

    with pytest.raises(ExportAborted, match="resumes from its last batch"):
        export_day(source_db, client, job.id, DAY, *ctx, now=NOW, progress=outage_after_two)
    failed = jobs.get_job(source_db, job.id)
    assert failed.status == "failed" and "503" in failed.last_error
    assert failed.exported_leads == 100 and failed.cursor is not None
    sim.clear_faults()
    jobs.resume_job(source_db, job.id)
    export_job(source_db, client, job.id, *ctx, now=NOW)
    assert jobs.get_job(source_db, job.id).exported_leads == 200
    assert set(sim.written.values()) == {1} and len(sim.written) == 200


def test_an_unknown_destination_column_stops_the_day_with_what_to_fix(source_db, client, sim):
    seed_day(source_db, DAY, 5, first_id=1)
    job = jobs.create_job(source_db, DAY, DAY, {})
    mapping, src, dst = _ctx(source_db, client)
    with sim.engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE {sim.table} DROP COLUMN etapa")
    sim.reload_schema()
    with pytest.raises(ExportAborted, match="etapa"):
        export_day(source_db, client, job.id, DAY, mapping, src, dst, now=NOW)
    assert jobs.get_job(source_db, job.id).status == "failed"


def test_rows_written_by_the_reverse_sync_are_skipped_unless_changed_again(source_db, client, sim):
    seed_day(source_db, DAY, 3, first_id=1)
    with source_db.begin() as conn:
        # 1: written by the reverse sync, untouched since; 2: written by it, edited afterwards.
        conn.exec_driver_sql(
            "UPDATE leads SET sync_source = 'gestao_scouter', last_sync_at = updated_at WHERE id = 1"
        )
        conn.exec_driver_sql(
            "UPDATE leads SET sync_source = 'gestao_scouter', "
            "last_sync_at = updated_at - interval '1 minute' WHERE id = 2"
        )
    job = jobs.create_job(source_db, DAY, DAY, {})
    result = export_day(source_db, client, job.id, DAY, *_ctx(source_db, client), now=NOW)
    assert (result.exported, result.skipped) == (2, 1)
    assert set(dest_rows(sim)) == {2, 3}
    assert {r["sync_source"] for r in dest_rows(sim).values()} == {"tabuladormax"}


def test_error_rows_older_than_the_retention_are_purged(source_db):
    job = jobs.create_job(source_db, DAY, DAY, {})
    with source_db.begin() as conn:
        for age in (5, 89, 91, 200):
            conn.execute(
                sa.text(
                    "INSERT INTO gestao_scouter_export_errors (job_id, lead_id, error_message, "
                    "created_at) VALUES (:j, :a, 'x', now() - make_interval(days => :a))"
                ),
                {"j": job.id, "a": age},
            )
    assert jobs.purge_errors(source_db, 90) == 2
    assert sorted(e["lead_id"] for e in _errors(source_db)) == [5, 89]
    assert json.dumps(jobs.get_job(source_db, job.id).field_mappings) == "{}"
