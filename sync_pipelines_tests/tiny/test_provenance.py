"""Every Tiny row the syncs write names the run that last changed it (``sync_run_id``); a
rerun that finds nothing new leaves the rows and their run id as they were."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from sync_pipelines.tiny.reparse import reparse_month
from sync_pipelines.tiny.sync import retry_failures, sync_month

from ..row_versions import run_ids_and_versions as versions

MONTH = "2023-05"
MONTH_START = dt.date(2023, 5, 1)


def test_a_month_stamps_its_rows_and_a_quiet_rerun_leaves_them_untouched(sim, tiny_db, client):
    ids = sim.add_orders(120, month=MONTH, situacao="0")
    first = sync_month(client, tiny_db, MONTH_START, run_id="run-a")
    orders = versions(tiny_db, "ordens_servico", "id")
    history = versions(tiny_db, "ordem_status_history", "id")
    assert set(ids) <= set(orders) and first.upserted.inserted == len(orders)
    assert {run for run, _ in orders.values()} == {"run-a"}
    assert len(history) == len(orders) and {run for run, _ in history.values()} == {"run-a"}

    again = sync_month(client, tiny_db, MONTH_START, run_id="run-b")
    assert (again.upserted.inserted, again.upserted.updated) == (0, 0)
    assert versions(tiny_db, "ordens_servico", "id") == orders  # same run id, same xmin
    assert versions(tiny_db, "ordem_status_history", "id") == history

    moved = ids[7]
    sim.set_status(moved, "6")
    sync_month(client, tiny_db, MONTH_START, run_id="run-c")
    after = versions(tiny_db, "ordens_servico", "id")
    assert after[moved][0] == "run-c"
    assert {i: v for i, v in after.items() if i != moved} == {
        i: v for i, v in orders.items() if i != moved
    }
    with tiny_db.connect() as conn:
        change = conn.execute(
            sa.text(
                "SELECT status_antigo, status_novo, sync_run_id FROM ordem_status_history "
                "WHERE id_os = :i ORDER BY seq DESC LIMIT 1"
            ),
            {"i": moved},
        ).one()
    assert tuple(change) == (0, 6, "run-c")


def test_import_failures_name_the_run_that_recorded_or_resolved_them(sim, tiny_db, client):
    broken = sorted(sim.broken_ids)[0]
    month_start = dt.date.fromisoformat(sim.list_item(broken)["data"][:7] + "-01")
    sync_month(client, tiny_db, month_start, run_id="run-a")

    def failure():
        with tiny_db.connect() as conn:
            return conn.execute(
                sa.text(
                    "SELECT tentativas, resolvido, sync_run_id FROM import_failures "
                    "WHERE id_ordem = :i"
                ),
                {"i": broken},
            ).one()

    assert tuple(failure()) == (1, False, "run-a")
    sim._broken.pop(broken)  # Tiny fixed the order: the next retry imports it
    with tiny_db.begin() as conn:
        conn.execute(sa.text("UPDATE import_failures SET proxima_tentativa = now()"))
    retry_failures(client, tiny_db, run_id="run-r")
    assert tuple(failure()) == (1, True, "run-r")
    assert versions(tiny_db, "ordens_servico", "id")[broken][0] == "run-r"


def test_reparse_stamps_only_the_orders_whose_derived_values_it_changes(sim, tiny_db, client):
    sim.add_orders(30, month=MONTH, situacao="0")
    sync_month(client, tiny_db, MONTH_START, run_id="run-a")
    loaded = versions(tiny_db, "ordens_servico", "id")
    reparse_month(tiny_db, MONTH_START, run_id="run-r1")  # same parser: nothing to change
    assert versions(tiny_db, "ordens_servico", "id") == loaded
    drifted = sorted(loaded)[3]
    with tiny_db.begin() as conn:  # a derived column no longer what the raw JSON says
        conn.execute(
            sa.text("UPDATE ordens_servico SET total_pecas = -1 WHERE id = :i"), {"i": drifted}
        )
    reparse_month(tiny_db, MONTH_START, run_id="run-r2")
    after = versions(tiny_db, "ordens_servico", "id")
    assert after[drifted][0] == "run-r2"
    assert {i: v for i, v in after.items() if i != drifted} == {
        i: v for i, v in loaded.items() if i != drifted
    }
