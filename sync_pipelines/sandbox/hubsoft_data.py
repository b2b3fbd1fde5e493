"""HubSoft's sandbox part: the simulator, its environment, and an outage story for the demo.

``prepare`` plays what happened to the support bot before the demo's runs:
1. tickets the bot opened while HubSoft was online (linked, ``synced``);
2. HubSoft goes down (the simulator's ``outage`` fault): the health monitor records it and
   tells the admins through the Telegram simulator;
3. meanwhile the bot saves tickets locally with ``LOC`` protocols: one with a service id
   HubSoft will refuse, one without a service id (looked up by CPF), and one whose create had
   reached HubSoft before the outage hid the reply (recovery must adopt it, not duplicate it);
4. HubSoft comes back: the monitor records it and tells the admins.
The demo's materialization of ``hubsoft/offline_ticket_recovery`` then sends the offline
tickets, and the Telegram simulator holds every notification.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import requests
import sqlalchemy as sa

from ..hubsoft.client import HubSoftSettings, build_client
from ..hubsoft.health import MonitorState, monitor_tick, transition_message
from ..hubsoft.recovery import marker, pending_count
from ..lib.db import Database, database_for_role
from ..lib.migrations import migrate
from ..lib.telegram import TelegramClient
from ..lib.upsert import bulk_upsert
from .hubsoft_sim import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_PASSWORD,
    SANDBOX_USERNAME,
    HubSoftSimulator,
)
from .simulators import SandboxPart

TICKET_COLUMNS = [
    "protocol", "customer_cpf", "customer_name", "customer_phone", "customer_email",
    "service_id", "category", "description", "status", "created_at",
    "hubsoft_atendimento_id", "hubsoft_protocol", "sync_status", "synced_at", "create_sent_at",
]  # fmt: skip
BAD_SERVICE_ID = 999999
CATEGORIES = ["SEM ACESSO A INTERNET", "INTERNET LENTA", "FINANCEIRO", "SUPORTE TÉCNICO"]


def local_protocol(number: int) -> str:
    """The bot's offline protocol: ``LOC`` + 6 digits."""
    return f"LOC{number:06d}"


def offline_ticket(
    number: int,
    client: Mapping[str, Any],
    created_at: dt.datetime,
    *,
    service_id: int | None | str = "first",
    description: str = "Sem internet desde ontem à noite",
    category: str | None = "SEM ACESSO A INTERNET",
) -> dict[str, Any]:
    """A ticket as the bot saves it with HubSoft down (no HubSoft id)."""
    if service_id == "first":
        service_id = client["servicos"][0]["id_cliente_servico"]
    return {
        "protocol": local_protocol(number),
        "customer_cpf": client["cpf_cnpj"],
        "customer_name": client["nome_razaosocial"],
        "customer_phone": client["telefone_primario"],
        "customer_email": client["email_principal"],
        "service_id": service_id,
        "category": category,
        "description": description,
        "status": "open",
        "created_at": created_at,
        "hubsoft_atendimento_id": None,
        "hubsoft_protocol": None,
        "sync_status": "pending",
        "synced_at": None,
        "create_sent_at": None,
    }


def online_ticket(ticket: Mapping[str, Any], client: Mapping[str, Any]) -> dict[str, Any]:
    """A ticket the bot opened in HubSoft directly (raw row of ``atendimento/todos``)."""
    created = dt.datetime.fromisoformat(ticket["data_cadastro"]).replace(tzinfo=dt.UTC)
    return {
        "protocol": ticket["protocolo"],
        "customer_cpf": client["cpf_cnpj"],
        "customer_name": client["nome_razaosocial"],
        "customer_phone": client["telefone_primario"],
        "customer_email": client["email_principal"],
        "service_id": ticket["id_cliente_servico"],
        "category": None,
        "description": ticket["descricao_abertura"],
        "status": "open",
        "created_at": created,
        "hubsoft_atendimento_id": ticket["id_atendimento"],
        "hubsoft_protocol": ticket["protocolo"],
        "sync_status": "synced",
        "synced_at": created,
        "create_sent_at": None,
    }


def insert_tickets(db: Database, rows: list[dict[str, Any]]) -> int:
    """Insert tickets the table does not have yet (by protocol); existing ones are kept."""
    with db.begin() as conn:
        result = bulk_upsert(
            conn, "support_tickets", rows, ["protocol"], columns=TICKET_COLUMNS, update_columns=[]
        )
    return result.inserted


def _admin(base_url: str, method: str, path: str, json: Any = None) -> Any:
    reply = requests.request(method, f"{base_url}/__admin/{path}", json=json, timeout=10)
    reply.raise_for_status()
    return reply.json()


def _notify(env: Mapping[str, str], text: str) -> None:
    token = env.get("TELEGRAM_BOT_TOKEN", "")
    if not token:
        return
    with TelegramClient(
        token, env.get("ADMIN_USER_IDS", ""), base_url=env.get("TELEGRAM_API_BASE_URL", "")
    ) as telegram:
        telegram.send_admins(text)


def prepare(env: Mapping[str, str]) -> None:
    """Seed the outage story (module docstring). Idempotent: tickets are keyed by protocol."""
    base_url = env["HUBSOFT_API_URL"]
    db = database_for_role("hubsoft", env)
    try:
        migrate(db, "hubsoft")
        clients = _admin(base_url, "GET", "hubsoft/clients")
        sim_tickets = _admin(base_url, "GET", "hubsoft/tickets")
        by_service = {s["id_cliente_servico"]: c for c in clients for s in c["servicos"]}
        # The simulator's own tickets, not the ones an earlier prepare or recovery opened.
        opened_online = [t for t in sim_tickets if "protocolo_local" not in t["parametros"]]
        insert_tickets(
            db, [online_ticket(t, by_service[t["id_cliente_servico"]]) for t in opened_online]
        )

        client = build_client(HubSoftSettings.from_variables(env), for_health=True)
        state = MonitorState()
        try:
            _admin(base_url, "POST", "faults", {"outage": {"mode": "503"}})
            down = monitor_tick(client, db, state, dt.datetime.now(dt.UTC))
            if down.transition:
                _notify(env, transition_message(down, pending_count(db)))
            now = dt.datetime.now(dt.UTC)
            offline = [
                offline_ticket(101, clients[0], now - dt.timedelta(minutes=50)),
                offline_ticket(102, clients[1], now - dt.timedelta(minutes=41),
                               category="INTERNET LENTA", description="Internet muito lenta à noite"),
                offline_ticket(103, clients[2], now - dt.timedelta(minutes=33),
                               description="Roteador reiniciando sozinho"),
                offline_ticket(104, clients[3], now - dt.timedelta(minutes=25), service_id=None,
                               category="FINANCEIRO", description="Boleto não chegou"),
                offline_ticket(105, clients[4], now - dt.timedelta(minutes=12),
                               service_id=BAD_SERVICE_ID, description="Sem sinal na fibra"),
            ]  # fmt: skip
            inserted = insert_tickets(db, offline)
            if inserted:
                _reply_lost_before_the_outage(db, base_url, offline[2])
            _admin(base_url, "POST", "faults", {"outage": None})
            up = monitor_tick(client, db, down.state, dt.datetime.now(dt.UTC))
            if up.transition:
                _notify(env, transition_message(up, pending_count(db)))
        finally:
            client.close()
    finally:
        db.dispose()


def _reply_lost_before_the_outage(db: Database, base_url: str, ticket: dict[str, Any]) -> None:
    """The bot's create for this ticket reached HubSoft, but the outage ate the reply."""
    protocol = ticket["protocol"]
    _admin(
        base_url,
        "POST",
        "hubsoft/tickets",
        {
            "id_cliente_servico": ticket["service_id"],
            "descricao": f"{marker(protocol)} {ticket['description']}",
            "parametros": {"protocolo_local": protocol},
        },
    )
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE support_tickets SET create_sent_at = created_at + interval '1 second', "
                "sync_attempts = 1, last_sync_attempt = created_at WHERE protocol = :p"
            ),
            {"p": protocol},
        )


def sandbox_env(base_url: str) -> dict[str, str]:
    return {
        "HUBSOFT_ENABLED": "true",
        "HUBSOFT_API_URL": base_url,
        "HUBSOFT_CLIENT_ID": SANDBOX_CLIENT_ID,
        "HUBSOFT_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
        "HUBSOFT_USERNAME": SANDBOX_USERNAME,
        "HUBSOFT_PASSWORD": SANDBOX_PASSWORD,
    }


HUBSOFT_PART = SandboxPart(
    name="hubsoft",
    simulator=lambda seed: HubSoftSimulator(seed),
    env=sandbox_env,
    prepare=prepare,
    planted={
        "hubsoft/support_tickets:no_failed_tickets": (
            "red because the outage story saves a ticket with a service id HubSoft refuses: "
            "it waits with sync_status='failed', the reason and a backoff, never dropped"
        ),
    },
)
