"""Benchmark: leads/s exported to Gestão Scouter (PostgREST simulator over a real table),
batches of 50 vs one request per lead (today's exporter), in the same run.

    python -m bench.bench_scouter_export [--leads 1000] [--url postgresql://...]

Without --url it uses SYNC_DATABASE_URL, then SYNC_TEST_DATABASE_URL, then starts the
embedded PostgreSQL. Everything lives in two throw-away schemas, dropped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import time
import uuid

import sqlalchemy as sa

from bench.database import bench_database
from sync_pipelines.lib.db import create_database, normalize_url, quote_ident
from sync_pipelines.lib.migrations import migrate
from sync_pipelines.sandbox.postgrest_sim import SANDBOX_SERVICE_KEY, PostgrestSimulator
from sync_pipelines.sandbox.scouter_data import create_source_table, insert_leads, leads_for_day
from sync_pipelines.scouter import jobs
from sync_pipelines.scouter.client import GestaoScouterClient
from sync_pipelines.scouter.export import export_day
from sync_pipelines.scouter.mapping import resolve_mapping
from sync_pipelines.scouter.source import TZ, source_columns

DAY = dt.date(2024, 11, 5)


def run(url: str, leads: int) -> None:
    tag = uuid.uuid4().hex[:8]
    source_schema, dest_schema = f"bench_tab_{tag}", f"bench_gs_{tag}"
    db = create_database("tabuladormax", url, source_schema)
    sim = PostgrestSimulator(database_url=url, schema=dest_schema)
    sim.start()
    try:
        migrate(db, "tabuladormax")
        create_source_table(db.engine, source_schema)
        insert_leads(db, leads_for_day(DAY, leads, 1, random.Random(1)))
        mapping, src = resolve_mapping(), source_columns(db)
        results = {}
        with GestaoScouterClient(sim.base_url, SANDBOX_SERVICE_KEY) as client:
            dst = client.columns()
            for label, batch in (("batch of 50", 50), ("one request per lead", 1)):
                with sim.engine.begin() as conn:
                    conn.exec_driver_sql(f"TRUNCATE {sim.table}")
                sim.reset()
                job = jobs.create_job(db, DAY, DAY, {})
                started = time.perf_counter()
                result = export_day(
                    db,
                    client,
                    job.id,
                    DAY,
                    mapping,
                    src,
                    dst,
                    batch_size=batch,
                    now=dt.datetime.combine(DAY + dt.timedelta(days=1), dt.time(2), tzinfo=TZ),
                )
                seconds = time.perf_counter() - started
                assert result.exported == leads and len(sim.written) == leads
                results[label] = (seconds, result.requests)
        print(f"export of {leads} leads (one day) to the PostgREST simulator:")
        for label, (seconds, requests) in results.items():
            print(
                f"  {label:<22} {leads / seconds:>9.0f} leads/s  {seconds:6.2f} s  {requests} requests"
            )
        ratio = results["one request per lead"][0] / results["batch of 50"][0]
        print(f"  batch of 50 is {ratio:.1f}x faster than one request per lead")
    finally:
        sim.stop()
        db.dispose()
        engine = sa.create_engine(normalize_url(url))
        with engine.begin() as conn:
            for schema in (source_schema, dest_schema):
                conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=1000)
    parser.add_argument("--url")
    args = parser.parse_args()
    with bench_database(args.url) as url:
        run(url, args.leads)


if __name__ == "__main__":
    main()
