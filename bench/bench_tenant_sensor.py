"""What one tick of the tenant change sensor costs the main database, at 100 tenants.

    python -m bench.bench_tenant_sensor [--tenants 100] [--contacts 5000] [--window-rows 2000]
                                        [--per-tick 10] [--ticks 20] [--small]
                                        [--main postgresql|mysql] [--mysql-url URL] [--pg-url URL]

The main database (a fresh PostgreSQL schema, or with ``--main mysql`` a fresh MySQL/MariaDB
database) gets --tenants instances of --contacts contacts each, with the sandbox's generated
shape (about one chat per contact, sector links, old timestamps from 2023-24). Then
--window-rows contacts spread over the tenants are stamped within the last few minutes:
what the sensor's window holds on a busy day (the application changing contacts all the
time). The sensor's look (``local_sync/changes.py``, exactly what a tick runs) takes its
baseline, then each of --ticks ticks first changes --per-tick contacts of random tenants
and is timed. Printed per case, median and worst tick: milliseconds, rows grouped (rows in
the window), rows the database read to answer (PostgreSQL: ``EXPLAIN ANALYZE`` of each
query, rows out of every scan node plus rows it filtered away; MySQL/MariaDB: the session's
``Handler_read_*`` counters), and the tenants found changed.

Two cases: the main database as the contract describes it (primary keys and
``UNIQUE(instance, phone)`` only: every tick reads each table whole), then with the change
indexes the README recommends (``changes.CHANGE_INDEXES``: one per change-time column).
``--small`` (``make bench``): 100 tenants of 200 contacts, 200 window rows, 5 ticks.
Everything created is dropped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import sqlalchemy as sa

from bench.database import bench_database
from sync_pipelines.lib.db import Database, create_database, normalize_url, quote_ident
from sync_pipelines.local_sync import changes
from sync_pipelines.sandbox.local_sync_data import (
    create_source_tables,
    generate_instance,
    write_source,
)

OVERLAP = dt.timedelta(minutes=10)
HANDLER_READS = (
    "Handler_read_first",
    "Handler_read_key",
    "Handler_read_last",
    "Handler_read_next",
    "Handler_read_prev",
    "Handler_read_rnd",
    "Handler_read_rnd_next",
)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def seed(db: Database, tenants: int, contacts: int) -> list[str]:
    names = [f"tenant{n:03d}" for n in range(tenants)]
    for n, name in enumerate(names):
        first = 1 + n * contacts * 3
        write_source(
            db,
            generate_instance(name, contacts, first_contact_id=first, first_chat_id=first, seed=n),
        )
    return names


def stamp(db: Database, count: int, rng: random.Random, spread: dt.timedelta) -> None:
    """``count`` random contacts changed within the last ``spread`` (one UPDATE each)."""
    with db.connect() as conn:
        ids = conn.execute(sa.text("SELECT id FROM contacts")).scalars().all()
    now = _utc_now()
    with db.begin() as conn:
        for contact in rng.sample(ids, count):
            conn.execute(
                sa.text("UPDATE contacts SET updated_at = :t WHERE id = :id"),
                {"t": now - spread * rng.random(), "id": contact},
            )


def create_change_indexes(db: Database) -> None:
    with db.begin() as conn:
        for table, columns in changes.CHANGE_INDEXES.items():
            for column in columns:
                if column == "updated_at" and table == "chats":
                    continue  # the contract's chats has no updated_at
                conn.exec_driver_sql(f"CREATE INDEX {table}_{column}_idx ON {table} ({column})")


class ReadCounter:
    """Rows the database read for the sensor's queries on one connection."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.rows = 0

    def plan_rows(self, node: dict) -> int:
        rows = 0
        if node["Node Type"] in ("Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan"):
            kept = node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
            rows += (kept + node.get("Rows Removed by Index Recheck", 0)) * node["Actual Loops"]
        return rows + sum(self.plan_rows(child) for child in node.get("Plans", []))

    def explain(self, state: dict) -> None:
        """PostgreSQL: the look's queries again under EXPLAIN ANALYZE (same windows)."""
        for watched in changes.watched_tables(self.conn):
            before = state[watched.table]
            query = changes._query(self.conn, watched, before.low, before.low)
            compiled = query.compile(dialect=self.conn.dialect)
            plan = self.conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + compiled.string, compiled.params
            ).scalar_one()
            self.rows += self.plan_rows(plan[0]["Plan"])

    def handler_reads(self) -> int:
        rows = self.conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Handler_read%%'").all()
        return sum(int(value) for name, value in rows if name in HANDLER_READS)


def measure(db: Database, names: list[str], args, rng: random.Random) -> dict:
    ms, grouped, read, found = [], [], [], []
    with db.connect() as conn:
        state = changes.look(conn, None, overlap=OVERLAP, now=dt.datetime.now(dt.UTC)).state
        conn.commit()
        for _ in range(args.ticks):
            stamp(db, args.per_tick, rng, dt.timedelta(seconds=1))
            counter = ReadCounter(conn)
            before_reads = counter.handler_reads() if not db.is_postgres else 0
            started = time.perf_counter()
            seen = changes.look(conn, state, overlap=OVERLAP, now=dt.datetime.now(dt.UTC))
            ms.append((time.perf_counter() - started) * 1000)
            if db.is_postgres:
                counter.explain(state)
                read.append(counter.rows)
            else:
                read.append(counter.handler_reads() - before_reads)
            conn.commit()
            state = seen.state
            grouped.append(seen.window_rows)
            found.append(len(seen.changed))
    return {"ms": ms, "grouped": grouped, "read": read, "found": found}


def _row(case: str, m: dict) -> str:
    def both(values, fmt="{:,.0f}"):
        return f"{fmt.format(statistics.median(values))} / {fmt.format(max(values))}"

    return (
        f"| {case} | {both(m['ms'], '{:.1f}')} | {both(m['grouped'])} | {both(m['read'])} "
        f"| {both(m['found'])} |"
    )


def run(args, db: Database) -> None:
    rng = random.Random(7)
    started = time.perf_counter()
    create_source_tables(db)
    names = seed(db, args.tenants, args.contacts)
    stamp(db, args.window_rows, rng, OVERLAP * 0.9)
    with db.connect() as conn:
        sizes = {t: conn.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar_one()
                 for t in ("contacts", "chats")}  # fmt: skip
    print(
        f"main database: {db.dialect}, {args.tenants} tenants, {sizes['contacts']:,} contacts, "
        f"{sizes['chats']:,} chats; {args.window_rows:,} contacts changed in the last "
        f"{OVERLAP * 0.9}; {args.per_tick} changed before each of {args.ticks} ticks "
        f"(seeded in {time.perf_counter() - started:.0f} s)"
    )
    print("\n| case | ms per tick (median / worst) | rows grouped | rows read | tenants changed |")
    print("|---|---:|---:|---:|---:|")
    print(_row("contract's indexes only", measure(db, names, args, rng)))
    create_change_indexes(db)
    with db.begin() as conn:
        conn.exec_driver_sql("ANALYZE contacts" if db.is_postgres else "ANALYZE TABLE contacts")
        conn.exec_driver_sql("ANALYZE chats" if db.is_postgres else "ANALYZE TABLE chats")
    print(_row("with the change indexes", measure(db, names, args, rng)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--contacts", type=int, default=5_000, help="per tenant")
    parser.add_argument("--window-rows", type=int, default=2_000)
    parser.add_argument("--per-tick", type=int, default=10)
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--small", action="store_true", help="200 contacts a tenant, 5 ticks")
    parser.add_argument("--main", choices=("postgresql", "mysql"), default="postgresql")
    parser.add_argument("--mysql-url", default=os.environ.get("SYNC_TEST_MYSQL_URL", ""))
    parser.add_argument("--pg-url", help="default: bench/database.py's choice")
    args = parser.parse_args()
    if args.small:
        args.contacts, args.window_rows, args.ticks = 200, 200, 5
    if args.main == "mysql" and not args.mysql_url:
        print("tenant sensor bench on MySQL skipped: give --mysql-url or set SYNC_TEST_MYSQL_URL")
        return
    with scratch_main(args) as db:
        run(args, db)


@contextmanager
def scratch_main(args) -> Iterator[Database]:
    """A fresh main database: a MySQL database or a PostgreSQL schema, dropped afterwards."""
    name = f"bench_ts_{uuid.uuid4().hex[:8]}"
    with ExitStack() as stack:
        if args.main == "mysql":
            server = normalize_url(args.mysql_url)._replace(database=None)
            create, drop = (
                f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4",
                f"DROP DATABASE IF EXISTS `{name}`",
            )
        else:
            server = normalize_url(stack.enter_context(bench_database(args.pg_url)))
            create, drop = (
                f"CREATE SCHEMA {quote_ident(name)}",
                f"DROP SCHEMA IF EXISTS {quote_ident(name)} CASCADE",
            )
        admin = sa.create_engine(server)
        stack.callback(admin.dispose)
        with admin.begin() as conn:
            conn.exec_driver_sql(create)

        def drop_it() -> None:
            with admin.begin() as conn:
                conn.exec_driver_sql(drop)

        stack.callback(drop_it)
        if args.main == "mysql":
            db = create_database("whatsapp", server._replace(database=name))
        else:
            db = create_database("whatsapp", server, name)
        stack.callback(db.dispose)
        yield db


if __name__ == "__main__":
    main()
