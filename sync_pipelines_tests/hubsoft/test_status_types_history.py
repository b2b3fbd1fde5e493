"""Issue 14's HubSoft points against the simulator and a real PostgreSQL schema: reopened
tickets, bot changes during a status pass, ticket types, and history messages under faults."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from sync_pipelines.hubsoft.recovery import recover_offline_tickets
from sync_pipelines.hubsoft.status import RECHECK_CLOSED, sync_statuses
from sync_pipelines.sandbox.hubsoft_data import insert_tickets, offline_ticket, online_ticket
from sync_pipelines.sandbox.hubsoft_sim import TICKET_TYPES

from ..clock import CALENDAR_EDGES, EDGE_IDS, pinned_clock
from .conftest import make_client

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def seed_offline(db, sim, count=3, **overrides):
    clients = [c.as_json() for c in sim.clients]
    rows = [
        offline_ticket(300 + n, clients[n], NOW - dt.timedelta(minutes=30 - n), **overrides)
        for n in range(count)
    ]
    insert_tickets(db, rows)
    return [r["protocol"] for r in rows]


def local(db, protocol):
    with db.connect() as conn:
        return conn.execute(
            sa.text("SELECT * FROM support_tickets WHERE protocol = :p"), {"p": protocol}
        ).one()


def history_messages(sim, protocol):
    [hub] = sim.tickets_with(f"[{protocol}]")
    return [m["mensagem"] for m in hub.mensagens if protocol in m["mensagem"]]


# ---- 9: a ticket reopened in HubSoft reopens locally ----------------------------------


def test_ticket_closed_then_reopened_in_hubsoft_is_open_again_after_the_next_sync(
    sim, client, hubsoft_db
):
    [protocol] = seed_offline(hubsoft_db, sim, count=1)
    recover_offline_tickets(client, hubsoft_db, now=NOW)
    hub_id = local(hubsoft_db, protocol).hubsoft_atendimento_id
    sim.set_ticket_status(hub_id, "resolvido")
    closed = sync_statuses(client, hubsoft_db, now=NOW + dt.timedelta(minutes=15))
    assert closed.closed == 1 and local(hubsoft_db, protocol).status == "closed"
    assert local(hubsoft_db, protocol).closed_at == NOW + dt.timedelta(minutes=15)

    sim.reopen_ticket(hub_id)
    result = sync_statuses(client, hubsoft_db, now=NOW + dt.timedelta(days=3))

    row = local(hubsoft_db, protocol)
    assert (row.status, row.hubsoft_status, row.closed_at) == ("in_progress", "Pendente", None)
    assert result.reopened == 1 and result.changes == [(protocol, "closed", "in_progress")]


def linked_local_tickets(db, sim, count):
    """Local rows for the simulator's own (open) tickets, as the bot saved them online."""
    raw = sorted((t.raw() for t in sim.tickets.values()), key=lambda t: t["id_atendimento"])
    by_service = {s: c.as_json() for c in sim.clients for s in c.service_ids}
    rows = [online_ticket(t, by_service[t["id_cliente_servico"]]) for t in raw[:count]]
    insert_tickets(db, rows)
    return [r["protocol"] for r in rows]


@pytest.mark.parametrize("instant", CALENDAR_EDGES, ids=EDGE_IDS)
def test_closed_tickets_are_rechecked_for_the_window_from_the_python_clock(
    sim, hubsoft_db, instant
):
    inside, outside = linked_local_tickets(hubsoft_db, sim, 2)
    with pinned_clock(instant):
        now = dt.datetime.now(dt.UTC)
        with hubsoft_db.begin() as conn:
            for protocol, age in (
                (inside, RECHECK_CLOSED - dt.timedelta(minutes=1)),
                (outside, RECHECK_CLOSED + dt.timedelta(minutes=1)),
            ):
                conn.execute(
                    sa.text(
                        "UPDATE support_tickets SET status = 'closed', closed_at = :t, "
                        "synced_at = :t WHERE protocol = :p"
                    ),
                    {"t": now - age, "p": protocol},
                )
        # Both are open in HubSoft (reopened there); only the one inside the window is read.
        with make_client(sim) as client:
            result = sync_statuses(client, hubsoft_db)
    assert (result.checked, result.reopened) == (1, 1)
    assert local(hubsoft_db, inside).status == "open"
    assert local(hubsoft_db, outside).status == "closed"


# ---- 10: a bot change during a status pass is kept ------------------------------------


def test_a_change_the_bot_makes_during_a_status_pass_is_not_overwritten(sim, hubsoft_db):
    first, second = seed_offline(hubsoft_db, sim, count=2)
    with make_client(sim) as c:
        recover_offline_tickets(c, hubsoft_db, now=NOW)
    for protocol in (first, second):
        sim.set_ticket_status(local(hubsoft_db, protocol).hubsoft_atendimento_id, "base_tecnica")
    hub_first = local(hubsoft_db, first).hubsoft_protocol

    class BotClosesDuringThePass(type(make_client(sim))):
        def ticket_by_protocol(self, protocolo):
            if protocolo == hub_first:  # the bot closes the ticket while the pass runs
                with hubsoft_db.begin() as conn:
                    conn.execute(
                        sa.text("UPDATE support_tickets SET status = 'closed' WHERE protocol = :p"),
                        {"p": first},
                    )
            return super().ticket_by_protocol(protocolo)

    with make_client(sim) as plain:
        racing = BotClosesDuringThePass(plain.settings, retry=plain.http.retry, timeout=(1.0, 2.0))
    with racing:
        result = sync_statuses(racing, hubsoft_db, now=NOW + dt.timedelta(minutes=15))
    assert local(hubsoft_db, first).status == "closed"  # the bot's change, not HubSoft's
    assert local(hubsoft_db, second).status == "in_progress"
    assert (result.conflicts, result.changed) == (1, 1)
    # Not marked as checked, so the next pass reads it first.
    assert local(hubsoft_db, first).synced_at == NOW


# ---- 11: ticket types ------------------------------------------------------------------


def test_category_opens_the_ticket_with_the_tenants_type_id(sim, client, hubsoft_db):
    [protocol] = seed_offline(hubsoft_db, sim, count=1, category="internet lenta")
    recover_offline_tickets(client, hubsoft_db, now=NOW)
    [hub] = sim.tickets_with(f"[{protocol}]")
    assert hub.id_tipo_atendimento == dict((d, i) for i, d in TICKET_TYPES)["INTERNET LENTA"]


@pytest.mark.parametrize("category", ["CATEGORIA INEXISTENTE", None])
def test_unresolvable_category_fails_naming_the_ticket_and_opens_nothing(
    sim, client, hubsoft_db, category
):
    good, bad = seed_offline(hubsoft_db, sim, count=2)
    with hubsoft_db.begin() as conn:
        conn.execute(
            sa.text("UPDATE support_tickets SET category = :c WHERE protocol = :p"),
            {"c": category, "p": bad},
        )

    result = recover_offline_tickets(client, hubsoft_db, now=NOW)

    assert (result.created, result.failed) == (1, 1)
    row = local(hubsoft_db, bad)
    assert row.sync_status == "failed" and row.hubsoft_atendimento_id is None
    assert bad in row.sync_error and "matches no HubSoft ticket type" in row.sync_error
    assert row.customer_name not in row.sync_error and row.customer_cpf not in row.sync_error
    assert row.create_sent_at is None and sim.tickets_with(f"[{bad}]") == []
    assert sim.count("/atendimento$", "POST") == 1 and len(sim.tickets_with(f"[{good}]")) == 1


# ---- 18: exactly one history message, resumed by the next pass -------------------------


@pytest.mark.parametrize(
    "fault",
    [
        {"fail_next": {"count": 1, "status": 503, "path": "adicionar_mensagem"}},
        {"outage": {"mode": "refuse", "path": "adicionar_mensagem"}},
        {"outage": {"mode": "503", "path": "adicionar_mensagem"}},
    ],
    ids=["one-503", "connection-reset", "messages-down"],
)
def test_failed_history_message_is_sent_by_the_next_pass_exactly_once(
    sim, client, hubsoft_db, fault
):
    protocols = seed_offline(hubsoft_db, sim, count=2)
    sim.set_faults(**fault)
    first = recover_offline_tickets(client, hubsoft_db, now=NOW)
    assert first.created == 2 and first.messages_pending >= 1
    sim.clear_faults()

    later = recover_offline_tickets(client, hubsoft_db, now=NOW + dt.timedelta(minutes=30))

    assert later.candidates == 0 and first.messages_added + later.messages_added == 2
    for protocol in protocols:
        assert len(history_messages(sim, protocol)) == 1, protocol
        assert local(hubsoft_db, protocol).history_message_at is not None
    again = recover_offline_tickets(client, hubsoft_db, now=NOW + dt.timedelta(hours=1))
    assert again.messages_added == 0
    assert all(len(history_messages(sim, p)) == 1 for p in protocols)


def test_under_five_percent_faults_every_ticket_ends_with_one_history_message(sim, hubsoft_db):
    protocols = seed_offline(hubsoft_db, sim, count=10)
    # 5xx and resets before processing anywhere, lost create replies after commit.
    sim.set_faults(
        error_rate={"rate": 0.05, "status": 503},
        drop_after_commit={"rate": 0.05, "path": "atendimento$", "method": "POST"},
    )
    with make_client(sim) as c:
        for n in range(8):
            recover_offline_tickets(c, hubsoft_db, now=NOW + dt.timedelta(hours=n))
    sim.clear_faults()
    with make_client(sim) as c:
        recover_offline_tickets(c, hubsoft_db, now=NOW + dt.timedelta(days=1))
    for protocol in protocols:
        assert len(sim.tickets_with(f"[{protocol}]")) == 1, protocol
        assert len(history_messages(sim, protocol)) == 1, protocol
