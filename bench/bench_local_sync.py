"""Local tenant sync into MariaDB/MySQL against a plain reference script, side by side.

    python -m bench.bench_local_sync [--contacts 50000 --links 120000 --chats 30000]
                                     [--small] [--repeat 3] [--main postgresql|mysql]
                                     [--mysql-url mysql+pymysql://root@127.0.0.1:3306/test]
                                     [--pg-url postgresql://postgres@127.0.0.1:5432/test]

One instance of --contacts contacts, --links contact-sector links and --chats chats is
written to the main database (a fresh PostgreSQL schema, or with ``--main mysql`` a fresh
MySQL database; the control database is always the PostgreSQL schema). Each repetition then
creates two fresh tenant databases on the MySQL/MariaDB at --mysql-url and runs, in turns,
the project's ``sync_tenant(full=True)`` into one and ``bench/reference_local_sync.py`` (plain
SELECTs + multi-row ``INSERT ... ON DUPLICATE KEY UPDATE``) into the other: first the full
copy into the empty tenant, then a pass where nothing changed. After each pass the two
tenants' tables must be equal row for row. Each case keeps the best of --repeat runs (the
machine is shared: the best run is the least disturbed one). Prints seconds, rows/s, rows
written and the ratio of speeds (project / reference, target >= 1.0x). ``--small`` (used by
``make bench``) is 5,000 / 12,000 / 3,000. Without --pg-url the PostgreSQL is chosen like
the other benches (bench/database.py); without a MySQL URL the bench says so and stops.
Everything created is dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import time
import uuid
from zoneinfo import ZoneInfo

import psycopg2
import pymysql
import sqlalchemy as sa

from bench.database import bench_database
from bench.reference_local_sync import reference_sync
from sync_pipelines.lib.db import Database, create_database, normalize_url, quote_ident
from sync_pipelines.lib.migrations import migrate
from sync_pipelines.local_sync.sync import SyncSettings, sync_tenant
from sync_pipelines.sandbox.local_sync_data import (
    SourceData,
    create_source_tables,
    generate_instance,
    write_source,
)

INSTANCE = "bench"
TARGET = 1.0
TABLES = {
    "wpp_contacts": "id",
    "wpp_contact_sectors": "contact_id, sector_id",
    "wpp_chats": "id",
}


def bench_tenant(contacts: int, links: int, chats: int, seed: int = 11) -> SourceData:
    """The sandbox's generated instance, with exactly ``links`` links and ``chats`` chats.

    ``generate_instance`` draws 0-3 sectors and 0-2 chats per contact; the bench wants a
    given shape (e.g. 2.4 links and 0.6 chats per contact), so links are drawn again here
    (each contact ``links // contacts`` distinct sectors of 8, the first ones one more) and
    chats are cut to the count, or repeated under new ids when there are too few.
    """
    if links > 8 * contacts:
        raise SystemExit(f"--links: at most 8 per contact ({8 * contacts:,})")
    data = generate_instance(INSTANCE, contacts, first_contact_id=1, first_chat_id=1, seed=seed)
    rng = random.Random(seed)
    per, extra = divmod(links, contacts)
    data.links = [
        {"contactId": c["id"], "sectorId": s}
        for n, c in enumerate(data.contacts)
        for s in rng.sample(range(1, 9), per + (n < extra))
    ]
    made = data.chats
    if not made:
        raise SystemExit("--chats: the generated instance has no chats to repeat")
    data.chats = [
        {**made[n % len(made)], "id": n + 1} if n >= len(made) else made[n] for n in range(chats)
    ]
    return data


def _mysql_url(url: str, database: str | None) -> sa.URL:
    return normalize_url(url)._replace(database=database)


def _pymysql(url: sa.URL) -> pymysql.Connection:
    """A plain PyMySQL connection (no FOUND_ROWS flag: affected rows = rows really changed)."""
    return pymysql.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
        database=url.database,
        charset="utf8mb4",
        autocommit=False,
    )


def _psycopg2(url: str, schema: str):
    parsed = normalize_url(url)
    return psycopg2.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database,
        options=f"-c search_path={schema},public",
    )


def table_rows(db: Database) -> dict[str, list[tuple]]:
    with db.connect() as conn:
        return {
            table: [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY {key}")]
            for table, key in TABLES.items()
        }


class Side:
    """One competitor's timings: the best seconds and the rows written of each pass."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seconds: dict[str, float] = {}
        self.written: dict[str, int] = {}

        self.tables: dict[str, dict[str, float]] = {}

    def record(self, case: str, seconds: float, written: int, tables: dict[str, float]) -> None:
        if case not in self.seconds or seconds < self.seconds[case]:
            self.seconds[case] = seconds
            self.tables[case] = tables
        self.written[case] = max(written, self.written.get(case, 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument("--links", type=int, default=120_000)
    parser.add_argument("--chats", type=int, default=30_000)
    parser.add_argument("--small", action="store_true", help="5,000 / 12,000 / 3,000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--main", choices=("postgresql", "mysql"), default="postgresql")
    parser.add_argument(
        "--profile",
        help="cProfile the project's first run of each case into PROFILE.full/.no-change",
    )
    parser.add_argument("--mysql-url", default=os.environ.get("SYNC_TEST_MYSQL_URL", ""))
    parser.add_argument("--pg-url", help="default: bench/database.py's choice")
    args = parser.parse_args()
    if args.small:
        args.contacts, args.links, args.chats = 5_000, 12_000, 3_000
    if not args.mysql_url:
        print("local sync bench skipped: give --mysql-url or set SYNC_TEST_MYSQL_URL")
        return
    with bench_database(args.pg_url) as pg_url:
        args.pg_url = pg_url
        run(args)


def run(args: argparse.Namespace) -> None:
    tag = uuid.uuid4().hex[:8]
    schema = f"bench_ls_{tag}"
    pg_admin = sa.create_engine(normalize_url(args.pg_url))
    my_admin = sa.create_engine(_mysql_url(args.mysql_url, None))
    databases: list[str] = []
    opened: list[Database] = []

    def mysql_database(name: str) -> Database:
        with my_admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        databases.append(name)
        db = create_database(f"tenant:{name}", _mysql_url(args.mysql_url, name))
        opened.append(db)
        return db

    with pg_admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {quote_ident(schema)}")
    control_db = create_database("control", args.pg_url, schema)
    opened.append(control_db)
    settings = SyncSettings()
    tz: ZoneInfo = settings.timezone
    try:
        migrate(control_db, role="control")
        main_db = control_db if args.main == "postgresql" else mysql_database(f"{schema}_main")
        create_source_tables(main_db)
        data = bench_tenant(args.contacts, args.links, args.chats)
        write_source(main_db, data)
        total = len(data.contacts) + len(data.links) + len(data.chats)

        def open_main():
            if args.main == "postgresql":
                return _psycopg2(args.pg_url, schema)
            return _pymysql(_mysql_url(args.mysql_url, f"{schema}_main"))

        print(
            f"main: {args.main} ({'schema' if args.main == 'postgresql' else 'database'} "
            f"{schema}); tenants: fresh MySQL/MariaDB databases on {my_admin.url.host}"
        )
        print(
            f"one instance: {len(data.contacts):,} contacts, {len(data.links):,} links, "
            f"{len(data.chats):,} chats = {total:,} rows; best of {args.repeat}\n"
        )
        project, reference = Side("project sync_tenant"), Side("reference script")

        def run_project(tenant: Database, case: str, profile: str | None = None) -> None:
            profiler = None
            if profile:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            started = time.perf_counter()
            outcome = sync_tenant(main_db, tenant, control_db, INSTANCE, full=True,
                                  settings=settings)  # fmt: skip
            seconds = time.perf_counter() - started
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(profile)
            written = sum(t.written for t in outcome.tables.values())
            if case == "full copy" and written != total:
                raise SystemExit(f"project wrote {written:,} rows of {total:,} on the full copy")
            tables = {t: r.duration_s for t, r in outcome.tables.items()}
            project.record(case, seconds, written, tables)

        def run_reference(tenant: Database, case: str) -> None:
            main_conn, tenant_conn = open_main(), _pymysql(tenant.engine.url)
            try:
                started = time.perf_counter()
                stats = reference_sync(
                    main_conn, tenant_conn, INSTANCE, postgres=args.main == "postgresql", tz=tz
                )
                seconds = time.perf_counter() - started
            finally:
                main_conn.close()
                tenant_conn.close()
            if stats["read"] != total:
                raise SystemExit(f"reference read {stats['read']:,} rows of {total:,}")
            reference.record(case, seconds, stats["written"], stats["seconds"])

        for rep in range(args.repeat):
            ours = mysql_database(f"{schema}_p{rep}")
            theirs = mysql_database(f"{schema}_r{rep}")
            migrate(ours, role="tenant")
            migrate(theirs, role="tenant")
            for case in ("full copy", "no-change pass"):
                # Alternate who goes first: neither side always gets the warmer caches.
                profile = None
                if args.profile and rep == 0:
                    profile = f"{args.profile}.{case.split()[0]}"
                if rep % 2 == 0:
                    run_project(ours, case, profile)
                    run_reference(theirs, case)
                else:
                    run_reference(theirs, case)
                    run_project(ours, case)
                mine, yours = table_rows(ours), table_rows(theirs)
                for table in TABLES:
                    if mine[table] != yours[table]:
                        raise SystemExit(f"{case}: {table} differs between project and reference")
                    if len(mine[table]) == 0:
                        raise SystemExit(f"{case}: {table} is empty")

        print(f"{'case':<16} {'side':<22} {'seconds':>8} {'rows/s':>10} {'written':>9}")
        ratios = {}
        for case in ("full copy", "no-change pass"):
            for side in (project, reference):
                s = side.seconds[case]
                per_table = "  ".join(
                    f"{t.removeprefix('wpp_')} {side.tables[case][t]:.2f}" for t in TABLES
                )
                print(
                    f"{case:<16} {side.name:<22} {s:8.2f} {total / s:10,.0f} "
                    f"{side.written[case]:9,}   ({per_table})"
                )
            ratios[case] = reference.seconds[case] / project.seconds[case]
        print("\nthe tenants' three tables were equal row for row after every pass")
        for case, ratio in ratios.items():
            print(
                f"{case}: project / reference speed {ratio:5.2f}x  (target >= {TARGET}x: "
                f"{'met' if ratio >= TARGET else 'NOT met'})"
            )
        no_change = project.written["no-change pass"]
        print(f"project rows written on the no-change pass: {no_change} (must be 0)")
        if no_change:
            raise SystemExit("the project wrote rows on a pass where nothing changed")
    finally:
        for db in opened:
            db.dispose()
        with pg_admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
        with my_admin.begin() as conn:
            for name in databases:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        pg_admin.dispose()
        my_admin.dispose()


if __name__ == "__main__":
    main()
