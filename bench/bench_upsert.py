"""Upsert throughput on PostgreSQL: the helper against plain COPY and a row-at-a-time loop.

    python -m bench.bench_upsert [--rows 100000] [--url postgresql://...]

Without --url it uses SYNC_DATABASE_URL, then SYNC_TEST_DATABASE_URL, then starts the
embedded PostgreSQL in .sandbox/bench-pg. Each measurement runs in a fresh table of the
same shape as a real sync target (bigint key, text, numeric, timestamptz, jsonb, boolean).
Prints rows/s and ratios; the target is helper >= 0.65 x plain COPY.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
import uuid
from decimal import Decimal

import sqlalchemy as sa

from bench.database import bench_database
from sync_pipelines.lib.db import create_database, quote_ident
from sync_pipelines.lib.upsert import bulk_upsert, copy_into

DDL = """CREATE TABLE {t} (id bigint PRIMARY KEY, numero text, situacao text, cliente text,
    total numeric(14,2), data_emissao timestamptz, raw jsonb, ativo boolean)"""


def make_rows(n: int, *, version: int = 0) -> list[dict]:
    base = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    return [
        {
            "id": i,
            "numero": f"OS-{i}",
            "situacao": str((i + version) % 8),
            "cliente": f"Cliente {i % 5000}",
            "total": Decimal(i % 10000) / 100 + version,
            "data_emissao": base + dt.timedelta(minutes=i),
            "raw": {"id": i, "v": version, "obs": "ordem de serviço"},
            "ativo": (i + version) % 3 == 0,
        }
        for i in range(n)
    ]


def _fresh_table(db, conn) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    conn.exec_driver_sql(DDL.format(t=quote_ident(name)))
    return name


def timed(db, fn) -> float:
    with db.begin() as conn:
        table = _fresh_table(db, conn)
    started = time.perf_counter()
    fn(table)
    elapsed = time.perf_counter() - started
    with db.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {quote_ident(table)}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument(
        "--row-at-a-time", type=int, default=5_000, help="rows for the slow baseline"
    )
    parser.add_argument("--url")
    args = parser.parse_args()
    with bench_database(args.url) as url:
        run(args, url)


def run(args: argparse.Namespace, url: str) -> None:
    schema = f"bench_{uuid.uuid4().hex[:6]}"
    admin = create_database("bench", url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    db = create_database("bench", url, schema)
    n = args.rows
    rows, changed = make_rows(n), make_rows(n, version=1)
    results: dict[str, tuple[int, float]] = {}
    try:

        def plain_copy(table):
            with db.begin() as conn:
                copy_into(conn, quote_ident(table), rows, list(rows[0]))

        def row_at_a_time(table):
            # Today's scripts: one INSERT and one commit per record.
            cols = list(rows[0])
            stmt = sa.text(
                f"INSERT INTO {quote_ident(table)} ({', '.join(cols)}) "
                f"VALUES ({', '.join(':' + c for c in cols)})"
            )
            for row in rows[: args.row_at_a_time]:
                with db.begin() as conn:
                    conn.execute(stmt, {**row, "raw": json.dumps(row["raw"])})

        results["plain COPY (ceiling)"] = (n, timed(db, plain_copy))
        with db.begin() as conn:
            table = _fresh_table(db, conn)
        t0 = time.perf_counter()
        with db.begin() as conn:
            r1 = bulk_upsert(conn, table, rows, ["id"])
        t1 = time.perf_counter()
        with db.begin() as conn:
            r2 = bulk_upsert(conn, table, changed, ["id"])
        t2 = time.perf_counter()
        with db.begin() as conn:
            r3 = bulk_upsert(conn, table, changed, ["id"])
        t3 = time.perf_counter()
        assert (r1.inserted, r2.updated, r3.unchanged) == (n, n, n), (r1, r2, r3)
        results["helper: insert pass"] = (n, t1 - t0)
        results["helper: update pass"] = (n, t2 - t1)
        results["helper: no-change pass"] = (n, t3 - t2)
        results["row-at-a-time, commit each (baseline)"] = (
            args.row_at_a_time,
            timed(db, row_at_a_time),
        )
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        db.dispose()
        admin.dispose()

    ceiling = n / results["plain COPY (ceiling)"][1]
    baseline = results["row-at-a-time, commit each (baseline)"]
    baseline_rate = baseline[0] / baseline[1]
    print(f"\nupsert benchmark, {n:,} rows, PostgreSQL {url.split('@')[-1]}")
    print(f"{'case':42} {'rows':>8} {'seconds':>8} {'rows/s':>10} {'x COPY':>7} {'x baseline':>10}")
    for name, (count, secs) in results.items():
        rate = count / secs
        print(
            f"{name:42} {count:>8,} {secs:>8.2f} {rate:>10,.0f} {rate / ceiling:>7.2f} {rate / baseline_rate:>10.1f}"
        )
    ratio = (n / results["helper: insert pass"][1]) / ceiling
    print(f"\nhelper insert pass / plain COPY = {ratio:.2f} (target >= 0.65)")


if __name__ == "__main__":
    main()
