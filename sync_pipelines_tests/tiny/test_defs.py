"""Tiny assets through Dagster: a month partition and the incremental sync run on a real
instance with the project's resources, report numeric metadata, and leak nothing."""

from __future__ import annotations

import sqlalchemy as sa
from dagster import DagsterInstance, materialize

from sync_pipelines.lib.db import create_database
from sync_pipelines.sandbox.tiny_sim import SANDBOX_CLIENT_SECRET
from sync_pipelines.tiny.defs import (
    import_failure_retries,
    integrity_report,
    service_orders_history,
    service_orders_incremental,
)

from .conftest import own, resources, stored_pair


def materialize_month(instance, partition_key: str):
    result = materialize(
        [service_orders_history],
        partition_key=partition_key,
        resources=resources(),
        instance=instance,
    )
    assert result.success
    return result, own(result, "tiny__service_orders_history").metadata


def test_month_partition_materializes_with_metadata_and_no_leaks(project):
    sim, url = project
    sim.add_orders(130, month="2022-07", situacao=None)
    with DagsterInstance.ephemeral() as instance:
        result, meta = materialize_month(instance, "2022-07-01")
        assert meta["orders_inserted"].value >= 130
        assert meta["pages"].value == 2 and meta["api_calls"].value >= 132
        events = "\n".join(str(e) for e in instance.all_logs(result.run_id))
        tables = {
            m.asset_key.path[-1]: m.metadata["dagster/row_count"].value
            for m in result.asset_materializations_for_node("tiny__service_orders_history")
            if "dagster/row_count" in m.metadata
        }
    db = create_database("tiny", url, "tiny")
    # The tables it wrote report their row counts on their catalog assets.
    with db.connect() as conn:
        stored = {
            t: conn.execute(sa.text(f"SELECT count(*) FROM {db.table(t)}")).scalar_one()
            for t in ("ordens_servico", "ordem_status_history", "import_failures")
        }
    assert tables == stored and stored["ordens_servico"] >= 130
    access, refresh = stored_pair(db)
    with db.connect() as conn:
        people = conn.execute(
            sa.text("SELECT cliente_nome, cliente_email, cliente_celular FROM ordens_servico")
        ).all()
    db.dispose()
    secrets = [access, refresh, SANDBOX_CLIENT_SECRET]
    personal = [v for row in people for v in row if v and len(v) > 5]
    assert personal
    assert [s for s in secrets if s in events] == []
    assert [p for p in personal if p in events] == []


def test_incremental_retries_and_integrity_run_as_one_job(project):
    sim, _ = project
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [service_orders_incremental, import_failure_retries, integrity_report],
            resources=resources(),
            instance=instance,
        )
        assert result.success
        report = own(result, "tiny__integrity_report").metadata
        assert (
            report["api_total"].value == report["db_total"].value + 0
            or report["persistent_failures"].value == 0
        )
        # Per-status counts are table metadata (sortable in the UI), one row per status.
        by_status = {r.data["situacao"]: r.data for r in report["by_status"].records}
        assert sorted(by_status) == list(range(8))
        assert sum(row["table"] for row in by_status.values()) == report["db_total"].value
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert "api_and_table_agree" in checks


def test_run_metadata_counts_the_runs_rows_and_its_query_lists_them(project):
    sim, url = project
    sim.add_orders(40, month="2022-08", situacao=None)
    with DagsterInstance.ephemeral() as instance:
        result, meta = materialize_month(instance, "2022-08-01")
    query = meta["run_rows_query"].value
    statements = query.split("```sql\n", 1)[1].split("\n```", 1)[0].splitlines()
    assert len(statements) == 3 and all(result.run_id in s for s in statements)
    db = create_database("tiny", url, "tiny")
    try:
        with db.connect() as conn:
            listed = {
                s.split(" FROM ", 1)[1].split(" WHERE ", 1)[0]: conn.exec_driver_sql(s).all()
                for s in statements
            }
            stored = conn.execute(sa.text("SELECT count(*) FROM ordens_servico")).scalar_one()
    finally:
        db.dispose()
    orders = listed[db.table("ordens_servico")]
    assert len(orders) == meta["run_rows/ordens_servico"].value == stored >= 40
    assert len(listed[db.table("ordem_status_history")]) == (
        meta["run_rows/ordem_status_history"].value
    )
    assert {row.sync_run_id for row in orders} == {result.run_id}
