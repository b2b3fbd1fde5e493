"""dagster.yaml gives a PostgreSQL-backed instance with queues, pools, retries and monitoring,
and the demo runs end to end on it (against a server URL, and on the embedded PostgreSQL)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, materialize

from sync_pipelines.lib.db import normalize_url
from sync_pipelines.operations.defs import database_schema
from sync_pipelines.pools import POOL_LIMITS

from .dagster_db import scratch_database

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project_db(pg_url):
    with scratch_database(pg_url) as url:
        yield url


@pytest.fixture
def instance(project_db, tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", project_db)
    monkeypatch.setenv("SYNC_DATABASE_URL", project_db)
    with DagsterInstance.get() as inst:
        yield inst


def test_instance_uses_postgres_queue_retries_and_monitoring(instance):
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert instance.run_monitoring_enabled


def test_pool_limits_are_set_on_the_instance(instance):
    from sync_pipelines.sandbox.demo import set_pool_limits

    set_pool_limits(instance)
    for pool, limit in POOL_LIMITS.items():
        assert instance.event_log_storage.get_concurrency_info(pool).slot_count == limit


def test_schema_asset_migrates_every_role_and_reports_it(instance, project_db):
    result = materialize([database_schema], instance=instance)
    assert result.success
    mat = result.asset_materializations_for_node("database_schema")[0]
    assert mat.metadata["migrations_applied"].value >= 1
    engine = sa.create_engine(normalize_url(project_db))
    with engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names(schema="sync_control")
    engine.dispose()
    assert {"schema_migrations", "rate_limit_buckets", "sync_checkpoints"} <= set(tables)
    # the run and its metadata are in the PostgreSQL event log
    again = materialize([database_schema], instance=instance)
    assert (
        again.asset_materializations_for_node("database_schema")[0]
        .metadata["migrations_applied"]
        .value
        == 0
    )
    assert len(instance.get_runs()) == 2


def _run_demo(env_updates: dict[str, str], sandbox_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "DAGSTER_"))}
    env.update(env_updates, SYNC_SANDBOX_DIR=str(sandbox_dir))
    return subprocess.run(
        [sys.executable, "-m", "sync_pipelines.cli", "demo", "--no-ui"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_demo_runs_against_a_configured_database(project_db, tmp_path):
    result = _run_demo({"SYNC_DATABASE_URL": project_db}, tmp_path / "sandbox")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rows per table:" in result.stdout
    assert "0 failed" in result.stdout
    env_file = (tmp_path / "sandbox" / "env").read_text()
    assert "export SYNC_DATABASE_URL=" in env_file and "export DAGSTER_HOME=" in env_file


def test_demo_starts_an_embedded_postgres_when_no_database_is_set(tmp_path):
    pytest.importorskip("pgserver", reason="the embedded PostgreSQL needs the pgserver package")
    result = _run_demo({}, tmp_path / "sandbox")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "(embedded" in result.stdout
    assert "0 failed" in result.stdout
