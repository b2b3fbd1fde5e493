"""Checks hang on the tables they judge and run right after the job that writes them."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance

from sync_pipelines import catalog
from sync_pipelines.lib.db import create_database
from sync_pipelines.lib.migrations import migrate
from sync_pipelines.operations.checks import OPERATOR_CHECKS, TINY_MAX_ATTEMPTS
from sync_pipelines.tiny.sync import MAX_ATTEMPTS

from ..dagster_db import scratch_database

SCHEMAS = {
    "tiny": "tiny",
    "hubsoft": "hubsoft",
    "tabuladormax": "tabuladormax",
    "control": "sync_control",
}


def _specs():
    return [spec for check in OPERATOR_CHECKS for spec in check.check_specs]


def test_operator_checks_target_catalog_tables():
    from sync_pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    tables = {t.key for t in catalog.TABLES}
    for spec in _specs():
        assert spec.asset_key in tables, spec.key.to_user_string()
        assert "dagster/table_name" in graph.get(spec.asset_key).metadata
    selected = defs.resolve_job_def("table_checks").asset_layer.asset_graph.asset_check_keys
    assert {spec.key for spec in _specs()} <= set(selected)


def test_each_check_runs_after_a_sync_that_writes_its_table():
    writers = {t.key: set(t.written_by) for t in catalog.TABLES}
    for spec in _specs():
        waits_for = {dep.asset_key for dep in spec.additional_deps}
        assert waits_for and waits_for <= writers[spec.asset_key], spec.key.to_user_string()


def test_tiny_mirror_of_max_attempts_is_the_syncs():
    assert TINY_MAX_ATTEMPTS == MAX_ATTEMPTS


@pytest.fixture
def databases(pg_url, monkeypatch):
    with scratch_database(pg_url) as url:
        monkeypatch.setenv("SYNC_DATABASE_URL", url)
        for role, schema in SCHEMAS.items():
            db = create_database(role, url, schema)
            migrate(db)
            db.dispose()
        yield url


def _run_table_checks(instance) -> dict[tuple[str, str], object]:
    from sync_pipelines.definitions import build_defs

    job = build_defs().resolve_job_def("table_checks")
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    assert result.success
    return {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in result.get_asset_check_evaluations()
    }


def test_checks_warn_with_counts_of_what_waits_for_a_person(databases):
    url = databases
    tiny = create_database("tiny", url, "tiny")
    hubsoft = create_database("hubsoft", url, "hubsoft")
    tab = create_database("tabuladormax", url, "tabuladormax")
    with DagsterInstance.ephemeral() as instance:
        clean = _run_table_checks(instance)
        assert {k: e.passed for k, e in clean.items()} == {
            ("tiny/ordens_servico", "no_duplicate_order_numbers"): True,
            ("tiny/import_failures", "no_failures_awaiting_manual_review"): True,
            ("hubsoft/support_tickets", "no_failed_tickets"): True,
            ("gestao_scouter/export_errors", "no_export_errors_last_24h"): True,
        }
        with tiny.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO import_failures (id_ordem, erro, tentativas, resolvido) VALUES "
                    "(1, 'bad date', :max, false), (2, 'bad total', :below, false), "
                    "(3, 'fixed', :max, true)"
                ),
                {"max": MAX_ATTEMPTS, "below": MAX_ATTEMPTS - 1},
            )
        with tab.begin() as conn:
            job = conn.execute(
                sa.text(
                    "INSERT INTO gestao_scouter_export_jobs (status, start_date) VALUES "
                    "('completed', '2026-12-01') "
                    "RETURNING id"
                )
            ).scalar_one()
            conn.execute(
                sa.text(
                    "INSERT INTO gestao_scouter_export_errors (job_id, error_message, "
                    "response_status) VALUES (:j, 'x', 400), (:j, 'y', 400), (:j, 'z', NULL)"
                ),
                {"j": job},
            )
        found = _run_table_checks(instance)
    waiting = found[("tiny/import_failures", "no_failures_awaiting_manual_review")]
    assert not waiting.passed
    assert waiting.metadata["awaiting_manual_review"].value == 1
    errors = found[("gestao_scouter/export_errors", "no_export_errors_last_24h")]
    assert not errors.passed and errors.metadata["errors_last_24h"].value == 3
    rows = {r.data["http_status"]: r.data["errors"] for r in errors.metadata["by_status"].records}
    assert rows == {"400": 2, "no response": 1}
    for db in (tiny, hubsoft, tab):
        db.dispose()
