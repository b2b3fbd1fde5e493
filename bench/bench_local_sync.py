"""Local tenant sync into MariaDB/MySQL: bulk upserts against row-at-a-time inserts, and the
cost of a re-sync when nothing changed.

    python -m bench.bench_local_sync [--contacts 100000] [--baseline-rows 20000]
                                     [--mysql-url mysql+pymysql://root@127.0.0.1:3306/test]
                                     [--pg-url postgresql://postgres@127.0.0.1:5432/test]

The main (and control) database is a fresh schema on the PostgreSQL at --pg-url (default
SYNC_TEST_DATABASE_URL, then SYNC_DATABASE_URL); the tenant is a fresh database on the
MySQL/MariaDB at --mysql-url (default SYNC_TEST_MYSQL_URL). Everything created is dropped
at the end. Prints rows/s of the sync (read from the main database, compare, write) and of
a row-at-a-time INSERT ... ON DUPLICATE KEY UPDATE loop on the same rows (measured on
--baseline-rows of them, it is slow), their ratio, and the seconds and rows written of a
no-change full reconcile and incremental sync. Target: >= 20,000 rows/s into MariaDB.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

import sqlalchemy as sa

from sync_pipelines.lib.db import create_database, normalize_url, quote_ident
from sync_pipelines.lib.migrations import migrate
from sync_pipelines.local_sync.sync import SyncSettings, sync_tenant
from sync_pipelines.local_sync.target import CONTACT_COLUMNS
from sync_pipelines.sandbox.local_sync_data import (
    SourceData,
    create_source_tables,
    generate_instance,
    write_source,
)

INSTANCE = "bench"


def _mysql_database(admin: sa.Engine, name: str) -> None:
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")


def row_at_a_time(tenant, rows: list[dict]) -> float:
    """The old way: one INSERT ... ON DUPLICATE KEY UPDATE per contact, one transaction."""
    cols = ", ".join(CONTACT_COLUMNS)
    marks = ", ".join(["%s"] * len(CONTACT_COLUMNS))
    updates = ", ".join(f"{c} = VALUES({c})" for c in CONTACT_COLUMNS[1:])
    sql = f"INSERT INTO wpp_contacts ({cols}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {updates}"
    started = time.perf_counter()
    with tenant.begin() as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        for r in rows:
            cursor.execute(
                sql,
                (
                    r["id"],
                    r["instance"],
                    r["name"],
                    r["phone"],
                    r["customer_id"],
                    int(r["is_deleted"]),
                ),
            )
        cursor.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--baseline-rows", type=int, default=20_000)
    parser.add_argument("--mysql-url", default=os.environ.get("SYNC_TEST_MYSQL_URL", ""))
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("SYNC_TEST_DATABASE_URL") or os.environ.get("SYNC_DATABASE_URL", ""),
    )
    args = parser.parse_args()
    if not args.mysql_url or not args.pg_url:
        raise SystemExit(
            "give --mysql-url and --pg-url (or SYNC_TEST_MYSQL_URL / SYNC_TEST_DATABASE_URL)"
        )

    tag = uuid.uuid4().hex[:8]
    schema = f"bench_ls_{tag}"
    pg_admin = sa.create_engine(normalize_url(args.pg_url))
    my_admin = sa.create_engine(normalize_url(args.mysql_url)._replace(database=None))
    with pg_admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {quote_ident(schema)}")
    tenant_name, baseline_name = f"bench_ls_{tag}", f"bench_ls_{tag}_rows"
    _mysql_database(my_admin, tenant_name)
    _mysql_database(my_admin, baseline_name)
    main_db = create_database("whatsapp", args.pg_url, schema)
    tenant = create_database(
        "tenant:bench", normalize_url(args.mysql_url).set(database=tenant_name)
    )
    baseline = create_database(
        "tenant:rows", normalize_url(args.mysql_url).set(database=baseline_name)
    )
    settings = SyncSettings()
    try:
        create_source_tables(main_db)
        migrate(main_db, role="control")
        data = generate_instance(
            INSTANCE, args.contacts, first_contact_id=1, first_chat_id=1, seed=11
        )
        write_source(main_db, SourceData(contacts=data.contacts))
        migrate(tenant, role="tenant")
        migrate(baseline, role="tenant")
        print(f"main: PostgreSQL schema {schema}; tenant: {tenant.describe()}")
        print(f"{args.contacts:,} contacts of one instance\n")

        def run(full: bool):
            started = time.perf_counter()
            outcome = sync_tenant(
                main_db,
                tenant,
                main_db,
                INSTANCE,
                tables=["wpp_contacts"],
                full=full,
                settings=settings,
            )
            return time.perf_counter() - started, outcome.tables["wpp_contacts"]

        first_s, first = run(full=True)
        bulk_rate = first.upsert.inserted / first_s
        print(
            f"sync (bulk upsert), first run:     {first_s:7.2f} s  {bulk_rate:10,.0f} rows/s"
            f"  ({first.upsert.inserted:,} inserted; read + compare + write)"
        )
        sample = data.contacts[: args.baseline_rows]
        loop_s = row_at_a_time(baseline, sample)
        loop_rate = len(sample) / loop_s
        print(
            f"row-at-a-time INSERT loop:         {loop_s:7.2f} s  {loop_rate:10,.0f} rows/s"
            f"  ({len(sample):,} rows)"
        )
        print(f"ratio bulk / row-at-a-time:        {bulk_rate / loop_rate:7.1f} x")
        print(f"target >= 20,000 rows/s:           {'met' if bulk_rate >= 20_000 else 'NOT met'}\n")

        full_s, full = run(full=True)
        print(
            f"no-change full reconcile:          {full_s:7.2f} s  rows written {full.written}"
            f"  ({full.source_rows:,} compared)"
        )
        inc_s, inc = run(full=False)
        print(
            f"no-change incremental sync:        {inc_s:7.2f} s  rows written {inc.written}"
            f"  ({inc.source_rows:,} read)"
        )
    finally:
        for db in (main_db, tenant, baseline):
            db.dispose()
        with pg_admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
        with my_admin.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{tenant_name}`")
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{baseline_name}`")
        pg_admin.dispose()
        my_admin.dispose()


if __name__ == "__main__":
    main()
