"""What the Gestão Scouter syncs write locally names the Dagster run (``sync_run_id``): the
export's error rows, and the leads the reverse sync writes back where TabuladorMax's
``leads`` has the column (the migration adds it when the table is already there)."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from sync_pipelines.lib.db import Database
from sync_pipelines.lib.migrations import migrate
from sync_pipelines.sandbox.scouter_data import create_source_table
from sync_pipelines.scouter import jobs
from sync_pipelines.scouter.export import export_day
from sync_pipelines.scouter.mapping import resolve_mapping
from sync_pipelines.scouter.reverse import reverse_sync
from sync_pipelines.scouter.source import TZ, source_columns

from ..row_versions import run_ids_and_versions
from .conftest import DAY, seed_day

NOW = dt.datetime.combine(DAY + dt.timedelta(days=10), dt.time(12), tzinfo=TZ)


@pytest.fixture
def leads_before_migration(pg_db: Database) -> Database:
    """TabuladorMax as in production: its leads table exists before our migrations run."""
    create_source_table(pg_db.engine, pg_db.schema)
    migrate(pg_db, "tabuladormax")
    return pg_db


def _export(db, client, run_id):
    job = jobs.create_job(db, DAY, DAY, {})
    ctx = (resolve_mapping(), source_columns(db), client.columns())
    return export_day(db, client, job.id, DAY, *ctx, now=NOW, run_id=run_id)


def _lead_runs(db) -> dict[int, tuple]:
    return run_ids_and_versions(db, "leads", "id")


def test_export_error_rows_name_the_run_that_recorded_them(source_db, client, sim):
    leads = seed_day(source_db, DAY, 10)
    sim.reject_rows("22P02", f"NEW.id = {leads[3]['id']}", "'valor recusado'")
    result = _export(source_db, client, "run-x")
    assert result.errors == 1
    with source_db.connect() as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT lead_id, sync_run_id FROM {source_db.table('gestao_scouter_export_errors')}"
            )
        ).all()
    assert [tuple(r) for r in rows] == [(leads[3]["id"], "run-x")]


def test_reverse_sync_stamps_the_leads_it_writes_back_and_only_those(
    leads_before_migration, client, sim
):
    db = leads_before_migration
    assert "sync_run_id" in source_columns(db)
    seed_day(db, DAY, 10)
    _export(db, client, "run-export")
    before = _lead_runs(db)
    assert {run for run, _ in before.values()} == {None}  # the export writes no lead locally
    with sim.engine.begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE {sim.table} SET etapa = 'Aprovado', sync_source = 'gestao_scouter', "
            "updated_at = now() + interval '1 minute' WHERE id = 4"
        )
    assert reverse_sync(db, client, resolve_mapping(), run_id="run-r1").written == 1
    after = _lead_runs(db)
    assert after[4][0] == "run-r1"
    assert {i: v for i, v in after.items() if i != 4} == {i: v for i, v in before.items() if i != 4}
    # Nothing new in Gestão Scouter: the next poll writes nothing and the id stays.
    assert reverse_sync(db, client, resolve_mapping(), run_id="run-r2").written == 0
    assert _lead_runs(db) == after


def test_reverse_sync_without_the_column_writes_the_leads_unstamped(source_db, client, sim):
    assert "sync_run_id" not in source_columns(source_db)  # leads created after the migration
    seed_day(source_db, DAY, 5)
    _export(source_db, client, "run-export")
    with sim.engine.begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE {sim.table} SET etapa = 'Aprovado', sync_source = 'gestao_scouter', "
            "updated_at = now() + interval '1 minute' WHERE id = 2"
        )
    assert reverse_sync(source_db, client, resolve_mapping(), run_id="run-r").written == 1
