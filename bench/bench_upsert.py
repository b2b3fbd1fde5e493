"""Bulk upsert against the real ceiling of each database, measured in one run.

    python -m bench.bench_upsert [--rows 100000] [--repeat 5] [--url postgresql://...]
                                 [--mysql-url mysql+pymysql://root@127.0.0.1:3306/test]

PostgreSQL ceiling: raw ``COPY`` of text serialised *before* the clock starts, straight
into an empty table of the same shape (bigint key, text, date, numeric, timestamptz, jsonb,
boolean): the database's own cost and nothing of ours. ``bulk_upsert`` is then timed from
Python rows (dicts) to committed data, in three passes over the same 100k keys: insert into
the empty table, no change (must write 0 rows), and 10 % of the rows updated.
MySQL/MariaDB ceiling: a plain multi-row ``INSERT`` of the same rows (1,000 per statement,
the helper's batch size) into an empty table, timed the same way.

Each case runs ``--repeat`` times, the cases taking turns round by round so all see the
same load, and the best time counts (the least disturbed by other processes). On
PostgreSQL the no-change pass is also checked by every row version (ctid, xmin, xmax)
before and after: nothing written, nothing locked. Without ``--url`` the PostgreSQL comes
from SYNC_DATABASE_URL, then SYNC_TEST_DATABASE_URL, else an embedded one; MySQL runs when
``--mysql-url`` or SYNC_TEST_MYSQL_URL is set. Target: every pass >= 0.65 x its ceiling.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import time
import uuid
from collections.abc import Callable
from decimal import Decimal

import sqlalchemy as sa

from bench.database import bench_database
from sync_pipelines.lib.db import create_database, normalize_url, quote_ident
from sync_pipelines.lib.upsert import bulk_upsert

PG_DDL = """CREATE TABLE {t} (id bigint PRIMARY KEY, numero text, situacao text, cliente text,
    data_pedido date, total numeric(14,2), data_emissao timestamptz, raw jsonb, ativo boolean)"""
MY_DDL = """CREATE TABLE {t} (id BIGINT PRIMARY KEY, numero VARCHAR(32), situacao VARCHAR(8),
    cliente VARCHAR(64), data_pedido DATE, total DECIMAL(14,2), data_emissao DATETIME(6),
    raw JSON, ativo TINYINT(1))"""
TARGET = 0.65


def make_rows(n: int) -> list[dict]:
    base = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    return [
        {
            "id": i,
            "numero": f"OS-{i}",
            "situacao": str(i % 8),
            "cliente": f"Cliente {i % 5000}",
            "data_pedido": dt.date(2020, 1, 1) + dt.timedelta(days=i % 2000),
            "total": Decimal(i % 10000) / 100,
            "data_emissao": base + dt.timedelta(minutes=i),
            "raw": {"id": i, "obs": "ordem de serviço", "itens": [i % 7, i % 11]},
            "ativo": i % 3 == 0,
        }
        for i in range(n)
    ]


def ten_percent_changed(rows: list[dict]) -> list[dict]:
    return [
        {**r, "situacao": "9", "total": r["total"] + 1} if r["id"] % 10 == 0 else r for r in rows
    ]


def raw_copy_text(rows: list[dict]) -> str:
    """The ceiling's input, built by hand outside the clock (no escaping needed here)."""
    lines = []
    for r in rows:
        i = r["id"]
        raw = f'{{"id": {i}, "obs": "ordem de serviço", "itens": [{i % 7}, {i % 11}]}}'
        lines.append(
            f"{r['id']}\t{r['numero']}\t{r['situacao']}\t{r['cliente']}\t{r['data_pedido']}\t"
            f"{r['total']}\t{r['data_emissao'].isoformat()}\t{raw}\t{'t' if r['ativo'] else 'f'}"
        )
    return "\n".join(lines) + "\n"


def best_of(repeat: int, cases: dict[str, tuple[Callable[[], object], Callable]]) -> dict:
    """Best time of each case over ``repeat`` rounds; every round runs every case once, in
    turn, so the ceiling and the passes see the same load on a shared machine."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, (setup, case) in cases.items():
            state = setup()
            started = time.perf_counter()
            case(state)
            times[name].append(time.perf_counter() - started)
    return {name: min(t) for name, t in times.items()}


def upsert_passes(
    db,
    rows: list[dict],
    repeat: int,
    empty_table,
    ceiling_name: str,
    ceiling,
    versions: Callable[[str], str] | None = None,
) -> dict[str, float]:
    """The ceiling, then bulk_upsert's three passes over the same keys, each checked by its
    counts; ``versions`` (PostgreSQL: a digest of every row version) shows that the no-change
    pass wrote, and even locked, nothing."""
    counts: dict[str, tuple[int, int, int]] = {}
    untouched: dict[str, str] = {}

    def loaded_table() -> str:
        table = empty_table()
        with db.begin() as conn:
            bulk_upsert(conn, table, rows, ["id"])
        return table

    def loaded_and_recorded() -> str:
        table = loaded_table()
        if versions:
            untouched[table] = versions(table)
        return table

    def upsert(batch: list[dict], label: str) -> Callable[[str], None]:
        def run(table: str) -> None:
            with db.begin() as conn:
                r = bulk_upsert(conn, table, batch, ["id"])
            counts[label] = (r.inserted, r.updated, r.unchanged)

        return run

    changed = ten_percent_changed(rows)
    seconds = best_of(
        repeat,
        {
            ceiling_name: (empty_table, ceiling),
            "bulk_upsert: insert pass": (empty_table, upsert(rows, "insert")),
            "bulk_upsert: no-change pass": (loaded_and_recorded, upsert(rows, "no-change")),
            "bulk_upsert: 10 % update pass": (loaded_table, upsert(changed, "update")),
        },
    )
    n = len(rows)
    assert counts["insert"] == (n, 0, 0), counts
    assert counts["no-change"] == (0, 0, n), counts
    assert counts["update"] == (0, n // 10, n - n // 10), counts
    if versions:
        rewritten = [table for table, digest in untouched.items() if versions(table) != digest]
        assert not rewritten, f"the no-change pass wrote or locked rows of {rewritten}"
        print(f"no-change pass: every row version untouched (ctid, xmin, xmax) in {repeat} rounds")
    return seconds


def bench_postgres(url: str, rows: list[dict], repeat: int) -> dict[str, float]:
    schema = f"bench_{uuid.uuid4().hex[:6]}"
    admin = create_database("bench", url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    db = create_database("bench", url, schema)
    text = raw_copy_text(rows)
    columns = ", ".join(rows[0])

    def empty_table() -> str:
        name = f"t_{uuid.uuid4().hex[:8]}"
        with db.begin() as conn:
            conn.exec_driver_sql(PG_DDL.format(t=quote_ident(name)))
        return name

    def raw_copy(table: str) -> None:
        with db.begin() as conn:
            cursor = conn.connection.dbapi_connection.cursor()
            cursor.copy_expert(
                f"COPY {quote_ident(table)} ({columns}) FROM STDIN", io.StringIO(text), 1 << 20
            )

    def versions(table: str) -> str:
        with db.begin() as conn:
            return conn.exec_driver_sql(
                "SELECT md5(string_agg(ctid::text || xmin::text || xmax::text, ',' "
                f"ORDER BY ctid)) FROM {quote_ident(table)}"
            ).scalar()

    try:
        seconds = upsert_passes(
            db,
            rows,
            repeat,
            empty_table,
            "raw COPY, pre-serialised (ceiling)",
            raw_copy,
            versions,
        )
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        db.dispose()
        admin.dispose()
    return seconds


def bench_mysql(url: str, rows: list[dict], repeat: int) -> dict[str, float]:
    name = f"bench_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(normalize_url(url))
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    db = create_database("bench", normalize_url(url).set(database=name))
    columns = list(rows[0])

    def empty_table() -> str:
        table = f"t_{uuid.uuid4().hex[:8]}"
        with db.begin() as conn:
            conn.exec_driver_sql(MY_DDL.format(t=table))
        return table

    import json

    # The ceiling's parameters are built outside the clock, as a plain script would have them.
    plain = [tuple(json.dumps(r[c]) if c == "raw" else r[c] for c in columns) for r in rows]

    def plain_insert(table: str) -> None:
        marks = "(" + ", ".join(["%s"] * len(columns)) + ")"
        with db.begin() as conn:
            cursor = conn.connection.dbapi_connection.cursor()
            for start in range(0, len(plain), 1000):
                chunk = plain[start : start + 1000]
                cursor.execute(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                    + ", ".join([marks] * len(chunk)),
                    [v for row in chunk for v in row],
                )

    try:
        seconds = upsert_passes(
            db, rows, repeat, empty_table, "plain multi-row INSERT (ceiling)", plain_insert
        )
    finally:
        db.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()
    return seconds


def report(title: str, n: int, seconds: dict[str, float]) -> list[float]:
    ceiling_name = next(iter(seconds))
    ceiling = n / seconds[ceiling_name]
    print(f"\n{title}, {n:,} rows (best of the repeats)")
    print(f"{'case':40} {'seconds':>8} {'rows/s':>10} {'x ceiling':>10}")
    ratios = []
    for name, secs in seconds.items():
        rate = n / secs
        ratios.append(rate / ceiling)
        print(f"{name:40} {secs:>8.3f} {rate:>10,.0f} {rate / ceiling:>10.2f}")
    passes = ratios[1:]
    verdict = "met" if min(passes) >= TARGET else "NOT met"
    print(f"lowest pass / ceiling = {min(passes):.2f} (target >= {TARGET}): {verdict}")
    return passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--url")
    parser.add_argument("--mysql-url", default=os.environ.get("SYNC_TEST_MYSQL_URL"))
    args = parser.parse_args()
    rows = make_rows(args.rows)
    with bench_database(args.url) as url:
        report("PostgreSQL", args.rows, bench_postgres(url, rows, args.repeat))
    if args.mysql_url:
        report("MySQL/MariaDB", args.rows, bench_mysql(args.mysql_url, rows, args.repeat))
    else:
        print("\nMySQL/MariaDB: skipped (set --mysql-url or SYNC_TEST_MYSQL_URL)")


if __name__ == "__main__":
    main()
