"""The Gestão Scouter part of the sandbox: PostgREST simulator, env, TabuladorMax's leads.

TabuladorMax's ``leads`` (45 columns with its CHECK constraints, contracts/scouter.md)
belongs to the application, not to this project, so it is created and seeded here rather
than by ``sql/`` migrations: a realistic set of leads updated over the last days, a few
with values Gestão Scouter refuses (a ``horario_agendamento`` that is not a time, a
``maxsystem_id_ficha`` that is not a number) so the error log has something to show.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Mapping
from decimal import Decimal

import sqlalchemy as sa

from ..lib.db import Database, database_for_role, quote_ident
from ..lib.upsert import bulk_upsert
from .postgrest_sim import SANDBOX_SERVICE_KEY, PostgrestSimulator, create_destination_table
from .simulators import SandboxPart

SOURCE_COLUMNS: list[tuple[str, str]] = [
    ("id", "bigint PRIMARY KEY"),
    ("name", "text"),
    ("age", "integer"),
    ("address", "text"),
    ("responsible", "text"),
    ("scouter", "text"),
    ("photo_url", "text"),
    ("celular", "text"),
    ("telefone_trabalho", "text"),
    ("telefone_casa", "text"),
    ("etapa", "text"),
    ("fonte", "text"),
    ("nome_modelo", "text"),
    ("local_abordagem", "text"),
    ("criado", "timestamptz"),
    ("date_modify", "timestamptz"),
    ("updated_at", "timestamptz DEFAULT now()"),
    ("ficha_confirmada", "boolean DEFAULT false"),
    ("presenca_confirmada", "boolean DEFAULT false"),
    ("compareceu", "boolean DEFAULT false"),
    ("cadastro_existe_foto", "boolean DEFAULT false"),
    ("data_criacao_ficha", "timestamptz"),
    ("data_confirmacao_ficha", "timestamptz"),
    ("data_criacao_agendamento", "timestamptz"),
    ("data_retorno_ligacao", "timestamptz"),
    ("valor_ficha", "numeric(10,2)"),
    ("horario_agendamento", "text"),
    ("data_agendamento", "date"),
    ("gerenciamento_funil", "text"),
    ("status_fluxo", "text"),
    ("etapa_funil", "text"),
    ("etapa_fluxo", "text"),
    ("funil_fichas", "text"),
    ("status_tabulacao", "text"),
    ("maxsystem_id_ficha", "text"),
    ("gestao_scouter", "text"),
    ("op_telemarketing", "text"),
    ("raw", "jsonb"),
    ("commercial_project_id", "uuid"),
    ("responsible_user_id", "uuid"),
    ("bitrix_telemarketing_id", "integer"),
    (
        "sync_source",
        "text CHECK (sync_source IN ('bitrix', 'supabase', 'gestao_scouter', 'csv'))",
    ),
    ("sync_status", "text CHECK (sync_status IN ('synced', 'syncing', 'error', 'pending'))"),
    ("last_sync_at", "timestamptz"),
    ("sync_error", "text"),
]
assert len(SOURCE_COLUMNS) == 45

TZ = dt.timezone(dt.timedelta(hours=-3))  # São Paulo has had no DST since 2019
FIRST_NAMES = ["Ana", "Bruno", "Carla", "Diego", "Elisa", "Fábio", "Gabriela", "Heitor", "Íris"]
LAST_NAMES = ["Souza", "Lima", "Oliveira", "Pereira", "Costa", "Almeida", "Ribeiro"]
ETAPAS = ["Lead", "Agendado", "Confirmado", "Compareceu", "Ficha"]
FONTES = ["Instagram", "Scouter", "Indicação", "Site"]
DEMO_DAYS = 5


def create_source_table(engine: sa.Engine, schema: str) -> None:
    """TabuladorMax's ``leads`` in ``schema`` (idempotent)."""
    cols = ",\n  ".join(f"{quote_ident(n)} {ddl}" for n, ddl in SOURCE_COLUMNS)
    table = f"{quote_ident(schema)}.leads"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        conn.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {table} (\n  {cols}\n)")
        conn.exec_driver_sql(
            f"CREATE INDEX IF NOT EXISTS leads_updated_at_id ON {table} (updated_at, id)"
        )


def make_lead(
    lead_id: int, updated_at: dt.datetime, rng: random.Random, bad: str | None = None
) -> dict:
    """One plausible lead; ``bad`` = "time" or "number" gives a value the destination refuses."""
    name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    created = updated_at - dt.timedelta(days=rng.randint(0, 30), minutes=rng.randint(0, 600))
    phone = f"(11) 9{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}"
    return {
        "id": lead_id,
        "name": name,
        "age": rng.randint(16, 45),
        "address": f"Rua {rng.choice(LAST_NAMES)}, {rng.randint(1, 999)}",
        "responsible": rng.choice(["Marta", "Paulo", "Rita"]),
        "scouter": rng.choice(["Scouter A", "Scouter B"]),
        "photo_url": f"https://fotos.example.com/{lead_id}.jpg",
        "celular": phone if rng.random() < 0.8 else None,
        "telefone_trabalho": f"(11) 3{rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
        "telefone_casa": None,
        "etapa": rng.choice(ETAPAS),
        "fonte": rng.choice(FONTES),
        "nome_modelo": name.split()[0],
        "local_abordagem": rng.choice(["Shopping Center Norte", "Av. Paulista", "Ibirapuera"]),
        "criado": created,
        "date_modify": updated_at,
        "updated_at": updated_at,
        "ficha_confirmada": rng.random() < 0.5,
        "presenca_confirmada": rng.random() < 0.4,
        "compareceu": rng.random() < 0.3,
        "cadastro_existe_foto": rng.random() < 0.7,
        "data_criacao_ficha": created,
        "data_confirmacao_ficha": updated_at if rng.random() < 0.5 else None,
        "data_criacao_agendamento": None,
        "data_retorno_ligacao": None,
        "valor_ficha": Decimal(rng.choice(["0.00", "150.00", "250.50"])),
        "horario_agendamento": "amanhã 14h" if bad == "time" else f"{rng.randint(9, 18)}:30",
        "data_agendamento": (updated_at + dt.timedelta(days=2)).date(),
        "gerenciamento_funil": None,
        "status_fluxo": rng.choice(["novo", "em andamento"]),
        "etapa_funil": rng.choice(["topo", "meio", "fundo"]),
        "etapa_fluxo": rng.choice(["1", "2", "3"]),
        "funil_fichas": None,
        "status_tabulacao": rng.choice(["Agendado", "Sem interesse", "Retornar"]),
        "maxsystem_id_ficha": f"MX-{lead_id}" if bad == "number" else str(900000 + lead_id),
        "gestao_scouter": None,
        "op_telemarketing": rng.choice(["op1", "op2"]),
        "raw": {"bitrix": {"ID": lead_id}},
        "commercial_project_id": None,
        "responsible_user_id": None,
        "bitrix_telemarketing_id": rng.randint(1, 50),
        "sync_source": "bitrix",
        "sync_status": "synced",
        "last_sync_at": None,
        "sync_error": None,
    }


def leads_for_day(
    day: dt.date, count: int, first_id: int, rng: random.Random, bad_ids: Mapping[int, str] = {}
) -> list[dict]:
    """``count`` leads updated through ``day`` (São Paulo time), ids from ``first_id``."""
    start = dt.datetime.combine(day, dt.time(8, 0), tzinfo=TZ)
    step = dt.timedelta(seconds=max(1, 12 * 3600 // max(count, 1)))
    leads = []
    for n in range(count):
        lead_id = first_id + n
        # Every third lead shares its instant with the previous one: the keyset must use id.
        moment = start + step * (n - (1 if n % 3 == 2 else 0))
        leads.append(make_lead(lead_id, moment, rng, bad_ids.get(lead_id)))
    return leads


def insert_leads(db: Database, leads: list[dict]) -> None:
    table = f"{db.schema}.leads" if db.schema else "leads"
    with db.begin() as conn:
        bulk_upsert(conn, table, leads, ["id"], columns=[c for c, _ in SOURCE_COLUMNS])


def demo_days(today: dt.date | None = None) -> list[dt.date]:
    today = today or dt.datetime.now(TZ).date()
    return [today - dt.timedelta(days=n) for n in range(DEMO_DAYS, 0, -1)]


def prepare(env: Mapping[str, str]) -> None:
    """Create and seed TabuladorMax's leads and Gestão Scouter's (empty) table. Idempotent."""
    db = database_for_role("tabuladormax", env)
    try:
        create_source_table(db.engine, db.schema or "public")
        create_destination_table(db.engine)
        rng = random.Random(6)
        for index, day in enumerate(demo_days()):
            first_id = 100000 + index * 1000
            bad = {first_id + 7: "time", first_id + 23: "number"}
            insert_leads(db, leads_for_day(day, 60 + 10 * index, first_id, rng, bad))
    finally:
        db.dispose()


SCOUTER_PART = SandboxPart(
    name="gestao_scouter",
    simulator=lambda seed: PostgrestSimulator(seed),
    env=lambda base_url: {
        "GESTAO_SCOUTER_URL": base_url,
        "GESTAO_SCOUTER_SERVICE_KEY": SANDBOX_SERVICE_KEY,
        "GESTAO_SCOUTER_REVERSE_SYNC": "false",
    },
    prepare=prepare,
    planted={
        "tabuladormax.gestao_scouter_export_errors": (
            "two leads a day carry values Gestão Scouter refuses ('amanhã 14h' as a time, "
            "'MX-…' as a number): each is isolated as an error row, the rest is exported"
        ),
        "gestao_scouter/export_errors:no_export_errors_last_24h": (
            "red because of those planted leads (see gestao_scouter_export_errors)"
        ),
    },
    demo_partitions=lambda: {
        "gestao_scouter/leads_export": [d.isoformat() for d in demo_days()[-2:]],
    },
)
