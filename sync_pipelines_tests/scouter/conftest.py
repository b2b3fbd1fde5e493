"""Fixtures of the Gestão Scouter tests: TabuladorMax's leads in the test's schema (with the
project's migrations), the PostgREST simulator over a real table in a schema of its own, and
a client with short backoffs."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from sync_pipelines.lib.db import Database, quote_ident
from sync_pipelines.lib.http import RetryPolicy
from sync_pipelines.lib.migrations import migrate
from sync_pipelines.sandbox.postgrest_sim import SANDBOX_SERVICE_KEY, PostgrestSimulator
from sync_pipelines.sandbox.scouter_data import create_source_table, insert_leads, leads_for_day
from sync_pipelines.scouter.client import GestaoScouterClient

DAY = dt.date(2024, 11, 5)


@pytest.fixture
def source_db(pg_db: Database) -> Database:
    migrate(pg_db, "tabuladormax")
    create_source_table(pg_db.engine, pg_db.schema)
    return pg_db


@pytest.fixture
def sim(pg_url, pg_schema, pg_admin) -> Iterator[PostgrestSimulator]:
    schema = f"{pg_schema}_gs"
    simulator = PostgrestSimulator(database_url=pg_url, schema=schema)
    simulator.start()
    yield simulator
    simulator.stop()
    with pg_admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE"))


@pytest.fixture
def client(sim) -> Iterator[GestaoScouterClient]:
    with GestaoScouterClient(
        sim.base_url,
        SANDBOX_SERVICE_KEY,
        retry=RetryPolicy(max_attempts=4, base_backoff=0.01, max_backoff=0.05),
    ) as c:
        yield c


def seed_day(db: Database, day: dt.date, count: int, first_id: int = 1, bad=None) -> list[dict]:
    leads = leads_for_day(day, count, first_id, random.Random(first_id), bad or {})
    insert_leads(db, leads)
    return leads


def dest_rows(sim: PostgrestSimulator) -> dict[int, dict]:
    with sim.engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT * FROM {sim.table}")).mappings().all()
    return {r["id"]: dict(r) for r in rows}
