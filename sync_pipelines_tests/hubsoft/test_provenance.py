"""Every ticket write of the HubSoft sync names the Dagster run that made it (``sync_run_id``):
recovery links and failures, status changes, protocol links and the sync-run log. A pass
that changes nothing leaves the tickets' run ids as they were."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from sync_pipelines.hubsoft.recovery import recover_offline_tickets
from sync_pipelines.hubsoft.status import sync_statuses
from sync_pipelines.sandbox.hubsoft_data import BAD_SERVICE_ID

from ..row_versions import run_ids_and_versions
from .test_recovery import NOW, seed_offline


def versions(db) -> dict:
    return run_ids_and_versions(db, "support_tickets", "protocol")


def runs_of(db, table: str, key: str) -> dict:
    with db.connect() as conn:
        return dict(conn.execute(sa.text(f"SELECT {key}, sync_run_id FROM {table}")).all())


def test_recovery_stamps_links_and_a_quiet_rerun_leaves_them(sim, client, hubsoft_db):
    protocols = seed_offline(hubsoft_db, sim, count=3)
    assert set(runs_of(hubsoft_db, "support_tickets", "protocol").values()) == {None}
    recover_offline_tickets(client, hubsoft_db, now=NOW, run_id="run-a")
    linked = versions(hubsoft_db)
    assert {p: run for p, (run, _) in linked.items()} == dict.fromkeys(protocols, "run-a")
    assert set(runs_of(hubsoft_db, "hubsoft_protocol_map", "local_protocol").values()) == {"run-a"}

    # Everything is linked and messaged: the next pass writes no ticket.
    recover_offline_tickets(client, hubsoft_db, now=NOW + dt.timedelta(minutes=30), run_id="run-b")
    assert versions(hubsoft_db) == linked
    with hubsoft_db.connect() as conn:
        logged = conn.execute(
            sa.text("SELECT sync_run_id FROM hubsoft_sync_runs WHERE kind = 'recovery' ORDER BY id")
        )
        assert logged.scalars().all() == ["run-a", "run-b"]


def test_a_refused_ticket_names_the_run_that_failed_it(sim, client, hubsoft_db):
    (protocol,) = seed_offline(hubsoft_db, sim, count=1, service_id=BAD_SERVICE_ID)
    recover_offline_tickets(client, hubsoft_db, now=NOW, run_id="run-f")
    with hubsoft_db.connect() as conn:
        row = conn.execute(
            sa.text("SELECT sync_status, sync_run_id FROM support_tickets WHERE protocol = :p"),
            {"p": protocol},
        ).one()
    assert tuple(row) == ("failed", "run-f")


def test_status_sync_stamps_only_the_tickets_whose_status_changed(sim, client, hubsoft_db):
    seed_offline(hubsoft_db, sim, count=3)
    recover_offline_tickets(client, hubsoft_db, now=NOW, run_id="run-a")
    ids = runs_of(hubsoft_db, "support_tickets", "hubsoft_atendimento_id")
    first, *others = sorted(ids)
    later = NOW + dt.timedelta(minutes=15)
    sync_statuses(client, hubsoft_db, now=later, run_id="run-s1")
    # HubSoft said what the tickets already hold: checked again, not changed.
    assert runs_of(hubsoft_db, "support_tickets", "hubsoft_atendimento_id") == ids
    sim.set_ticket_status(first, "resolvido")
    sync_statuses(client, hubsoft_db, now=later, run_id="run-s2")
    after = runs_of(hubsoft_db, "support_tickets", "hubsoft_atendimento_id")
    assert after == {first: "run-s2", **dict.fromkeys(others, "run-a")}
