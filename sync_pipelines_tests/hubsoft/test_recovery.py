"""Offline-ticket recovery, status sync and health monitoring against the HubSoft simulator
and a real PostgreSQL schema."""

from __future__ import annotations

import datetime as dt
import threading

import sqlalchemy as sa

from sync_pipelines.hubsoft.health import MonitorState, monitor_tick
from sync_pipelines.hubsoft.recovery import LOCK_NAME, recover_offline_tickets
from sync_pipelines.hubsoft.report import build_report
from sync_pipelines.hubsoft.status import RECHECK_CLOSED, sync_statuses
from sync_pipelines.lib.locks import AdvisoryLock
from sync_pipelines.sandbox.hubsoft_data import (
    BAD_SERVICE_ID,
    insert_tickets,
    offline_ticket,
)

from .conftest import make_client

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def clients_json(sim):
    return [c.as_json() for c in sim.clients]


def seed_offline(db, sim, count=4, **overrides):
    clients = clients_json(sim)
    rows = [
        offline_ticket(100 + n, clients[n], NOW - dt.timedelta(minutes=60 - n), **overrides)
        for n in range(count)
    ]
    insert_tickets(db, rows)
    return [r["protocol"] for r in rows]


def tickets(db):
    with db.connect() as conn:
        return {
            r.protocol: r
            for r in conn.execute(sa.text("SELECT * FROM support_tickets ORDER BY id")).all()
        }


def test_outage_then_recovery_links_every_offline_ticket_exactly_once(sim, client, hubsoft_db):
    sim.set_faults(outage="refuse")
    protocols = seed_offline(hubsoft_db, sim)
    sim.set_faults(outage=None)

    result = recover_offline_tickets(client, hubsoft_db, now=NOW)

    assert (result.created, result.failed, result.messages_added) == (4, 0, 4)
    rows = tickets(hubsoft_db)
    for protocol in protocols:
        found = sim.tickets_with(f"[{protocol}]")
        assert len(found) == 1, protocol
        hub = found[0]
        row = rows[protocol]
        assert (row.hubsoft_atendimento_id, row.hubsoft_protocol) == (
            hub.id_atendimento,
            hub.protocolo,
        )
        assert row.sync_status == "synced" and row.synced_at is not None and row.sync_error is None
        assert hub.parametros["protocolo_local"] == protocol
        assert (
            protocol in hub.mensagens[0]["mensagem"] and "offline" in hub.mensagens[0]["mensagem"]
        )
    with hubsoft_db.connect() as conn:
        mapped = dict(
            conn.execute(
                sa.text("SELECT local_protocol, hubsoft_protocol FROM hubsoft_protocol_map")
            ).all()
        )
    assert mapped == {p: rows[p].hubsoft_protocol for p in protocols}
    # A second pass finds nothing to do and sends nothing.
    again = recover_offline_tickets(client, hubsoft_db, now=NOW)
    assert (again.candidates, again.synced) == (0, 0)
    assert sim.count("/atendimento$", "POST") == 4


def test_dropped_create_reply_still_gives_exactly_one_hubsoft_ticket(sim, client, hubsoft_db):
    [protocol] = seed_offline(hubsoft_db, sim, count=1)
    sim.set_faults(drop_after_commit={"count": 1, "path": "atendimento$", "method": "POST"})

    result = recover_offline_tickets(client, hubsoft_db, now=NOW)

    assert (result.created, result.adopted) == (0, 1)
    assert len(sim.tickets_with(f"[{protocol}]")) == 1
    row = tickets(hubsoft_db)[protocol]
    assert row.sync_status == "synced"
    assert row.hubsoft_atendimento_id == sim.tickets_with(f"[{protocol}]")[0].id_atendimento
    assert sim.count("/atendimento$", "POST") == 1


def test_ticket_sent_before_a_crash_is_adopted_not_sent_again(sim, client, hubsoft_db):
    [protocol] = seed_offline(hubsoft_db, sim, count=1)
    # The earlier run sent the create and died before saving the link.
    sim._add_ticket(sim.clients[0], sim.clients[0].service_ids[0], f"[{protocol}] sem internet")
    with hubsoft_db.begin() as conn:
        conn.execute(sa.text("UPDATE support_tickets SET create_sent_at = now()"))

    result = recover_offline_tickets(client, hubsoft_db, now=NOW)

    assert result.adopted == 1 and sim.count("/atendimento$", "POST") == 0
    assert len(sim.tickets_with(f"[{protocol}]")) == 1


def test_rejected_ticket_fails_with_the_reason_and_the_others_sync(sim, client, hubsoft_db):
    protocols = seed_offline(hubsoft_db, sim, count=3)
    with hubsoft_db.begin() as conn:
        conn.execute(
            sa.text("UPDATE support_tickets SET service_id = :bad WHERE protocol = :p"),
            {"bad": BAD_SERVICE_ID, "p": protocols[1]},
        )

    result = recover_offline_tickets(client, hubsoft_db, now=NOW)

    rows = tickets(hubsoft_db)
    assert (result.created, result.failed) == (2, 1)
    bad = rows[protocols[1]]
    assert bad.sync_status == "failed" and bad.hubsoft_atendimento_id is None
    assert f"{BAD_SERVICE_ID} não existe" in bad.sync_error
    assert bad.next_sync_at == NOW + dt.timedelta(minutes=5)
    assert bad.create_sent_at is None  # refused, so the retry needs no lookup
    assert [rows[p].sync_status for p in (protocols[0], protocols[2])] == ["synced", "synced"]

    # Not retried before its backoff; retried after it (and fails again, backing off more).
    assert (
        recover_offline_tickets(client, hubsoft_db, now=NOW + dt.timedelta(minutes=1)).candidates
        == 0
    )
    later = recover_offline_tickets(client, hubsoft_db, now=NOW + dt.timedelta(minutes=6))
    assert later.candidates == 1 and later.failed == 1
    assert tickets(hubsoft_db)[protocols[1]].next_sync_at == NOW + dt.timedelta(minutes=16)


def test_missing_service_id_is_found_through_the_client_cpf(sim, client, hubsoft_db):
    [protocol] = seed_offline(hubsoft_db, sim, count=1, service_id=None)
    recover_offline_tickets(client, hubsoft_db, now=NOW)
    [hub] = sim.tickets_with(f"[{protocol}]")
    assert hub.id_cliente_servico == sim.clients[0].service_ids[0]
    assert sim.count("/integracao/cliente$", "GET") == 1


def test_two_recoveries_at_once_never_duplicate(sim, hubsoft_db):
    protocols = seed_offline(hubsoft_db, sim, count=6)
    sim.set_faults(latency={"seconds": 0.05, "path": "atendimento"})
    results = []

    def run():
        with make_client(sim) as c:
            results.append(recover_offline_tickets(c, hubsoft_db, now=NOW))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.created for r in results) == 6
    assert sorted(bool(r.skipped_reason) for r in results) == [False, True]
    assert all(len(sim.tickets_with(f"[{p}]")) == 1 for p in protocols)


def test_recovery_skips_while_another_holds_the_lock(sim, client, hubsoft_db):
    seed_offline(hubsoft_db, sim, count=1)
    with AdvisoryLock(hubsoft_db, LOCK_NAME):
        result = recover_offline_tickets(client, hubsoft_db, now=NOW)
    assert "held by another run" in result.skipped_reason and result.created == 0
    assert sim.count("/atendimento$", "POST") == 0


def test_outage_mid_pass_stops_without_burning_attempts(sim, client, hubsoft_db):
    protocols = seed_offline(hubsoft_db, sim, count=3)
    sim.set_faults(outage="503")
    result = recover_offline_tickets(client, hubsoft_db, now=NOW)
    assert result.stopped_reason and result.synced == 0
    rows = tickets(hubsoft_db)
    assert rows[protocols[0]].sync_status == "failed" and rows[protocols[0]].next_sync_at is None
    assert [rows[p].sync_attempts for p in protocols] == [1, 0, 0]
    sim.set_faults(outage=None)
    assert recover_offline_tickets(client, hubsoft_db, now=NOW).created == 3


def test_status_sync_follows_hubsoft_and_records_synced_at(sim, client, hubsoft_db):
    seed_offline(hubsoft_db, sim, count=3)
    recover_offline_tickets(client, hubsoft_db, now=NOW)
    rows = tickets(hubsoft_db)
    ids = [r.hubsoft_atendimento_id for r in rows.values()]
    sim.set_ticket_status(ids[0], "resolvido")
    sim.set_ticket_status(ids[1], "base_tecnica")

    later = NOW + dt.timedelta(minutes=15)
    result = sync_statuses(client, hubsoft_db, now=later)

    assert (result.checked, result.changed, result.closed) == (3, 2, 1)
    after = {r.hubsoft_atendimento_id: r for r in tickets(hubsoft_db).values()}
    assert (after[ids[0]].status, after[ids[0]].hubsoft_status) == ("closed", "Resolvido")
    assert (after[ids[1]].status, after[ids[1]].hubsoft_status) == ("in_progress", "Base Técnica")
    assert after[ids[2]].status == "open" and after[ids[2]].synced_at == later
    # A closed ticket is re-read for RECHECK_CLOSED (a reopen must be seen), then no longer.
    assert sync_statuses(client, hubsoft_db, now=later).checked == 3
    past_window = later + RECHECK_CLOSED + dt.timedelta(minutes=1)
    assert sync_statuses(client, hubsoft_db, now=past_window).checked == 2


def test_monitor_announces_each_transition_once_and_the_report_counts(sim, client, hubsoft_db):
    t0 = NOW
    state = MonitorState()
    first = monitor_tick(client, hubsoft_db, state, t0)
    assert (first.check.kind, first.transition, first.state.state) == ("full", None, "online")
    quick = monitor_tick(client, hubsoft_db, first.state, t0 + dt.timedelta(minutes=1))
    assert quick.check.kind == "quick" and quick.transition is None
    sim.set_faults(outage="refuse")
    down = monitor_tick(client, hubsoft_db, quick.state, t0 + dt.timedelta(minutes=2))
    assert (down.check.kind, down.transition) == ("full", "offline")
    still = monitor_tick(client, hubsoft_db, down.state, t0 + dt.timedelta(minutes=3))
    assert still.transition is None and still.state.state == "offline"
    sim.set_faults(outage=None)
    up = monitor_tick(client, hubsoft_db, still.state, t0 + dt.timedelta(minutes=4))
    assert up.transition == "online"
    full_again = monitor_tick(client, hubsoft_db, up.state, t0 + dt.timedelta(minutes=10))
    assert full_again.check.kind == "full"

    with hubsoft_db.connect() as conn:
        logged = conn.execute(
            sa.text("SELECT kind, online, transition FROM hubsoft_health_checks ORDER BY id")
        ).all()
    assert [r.transition for r in logged] == [None, None, "offline", None, "online", None]

    seed_offline(hubsoft_db, sim, count=2)
    report = build_report(hubsoft_db, up.check)
    assert (report.online, report.pending, report.failed) == (True, 2, 0)
    assert any("sync_tickets" in r for r in report.recommendations)
    assert "pending sync | 2" in report.markdown()
