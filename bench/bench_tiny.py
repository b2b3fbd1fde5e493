"""Tiny historical load against the simulator: rate-limit use, 429s, calls per stored order.

    python -m bench.bench_tiny [--orders 5500] [--limit 600] [--window 6]

The simulator enforces ``--limit`` requests per ``--window`` seconds per account (Tiny's
per-minute bucket, with the window shortened so the run takes minutes, not hours) and the
client shares a ``SharedRateLimiter`` of the same budget in PostgreSQL. Three runs:
every month serially, then every month again from an empty table with 4 months in parallel
(4 clients, one shared limiter), then the incremental sync with nothing changed. Prints
achieved requests per window vs the limit (target >= 0.9), the share of 429s (<= 1%) and
API calls per stored order (<= 1.02).
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from bench.database import bench_database
from sync_pipelines.lib.db import create_database
from sync_pipelines.lib.migrations import migrate
from sync_pipelines.lib.ratelimit import SharedRateLimiter
from sync_pipelines.sandbox.tiny_sim import (
    API_PREFIX,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_CREDENTIALS_KEY,
    TOKEN_PATH,
    TinySimulator,
)
from sync_pipelines.tiny.client import OAuthSettings, TinyClient, TokenManager
from sync_pipelines.tiny.sync import sync_incremental, sync_month


def months(start: dt.date, end: dt.date) -> list[dt.date]:
    out, day = [], start.replace(day=1)
    while day <= end:
        out.append(day)
        day = (day + dt.timedelta(days=32)).replace(day=1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=5500)
    parser.add_argument("--limit", type=int, default=300, help="requests per window")
    parser.add_argument("--window", type=float, default=6.0, help="seconds (Tiny: 60)")
    parser.add_argument("--url")
    args = parser.parse_args()
    with bench_database(args.url) as url:
        run(args, url)


def run(args: argparse.Namespace, url: str) -> None:

    sim = TinySimulator(
        seed=3,
        n_orders=args.orders,
        per_minute_limit=args.limit,
        window_s=args.window,
        burst_per_second=10_000,
    )
    sim.start()
    admin = create_database("bench", url)
    schemas: list[str] = []

    def fresh_db():
        schema = f"bench_tiny_{uuid.uuid4().hex[:6]}"
        schemas.append(schema)
        db = create_database("tiny", url, schema, pool_size=8)
        migrate(db, "tiny")
        migrate(db, "control")
        return db

    def client_for(db, refresh: str) -> TinyClient:
        settings = OAuthSettings(
            sim.base_url + TOKEN_PATH,
            SANDBOX_CLIENT_ID,
            SANDBOX_CLIENT_SECRET,
            initial_refresh_token=refresh,
            credentials_key=SANDBOX_CREDENTIALS_KEY,
        )
        limiter = SharedRateLimiter(
            db, f"tiny:{SANDBOX_CLIENT_ID}", args.limit, args.window, burst=2
        )
        return TinyClient(
            sim.base_url + API_PREFIX, TokenManager(db, settings), rate_limiter=limiter
        )

    all_months = months(dt.date(sim.start_year, 1, 1), sim.today)

    def load_months(client: TinyClient, share: list[dt.date], db) -> None:
        for month in share:
            sync_month(client, db, month)

    rows = []
    try:
        for parallel in (1, 4):
            db = fresh_db()
            refresh = sim.issue_initial_tokens()["refresh_token"]
            clients = [client_for(db, refresh) for _ in range(parallel)]
            clients[0].tokens.access_token()  # the pair is in the DB before workers start
            sim.reset()
            started = time.monotonic()
            # Each worker owns one client (a requests.Session is not thread-safe) and takes
            # every Nth month; all of them share the one limiter row.
            shares = [all_months[i::parallel] for i in range(parallel)]
            with ThreadPoolExecutor(parallel) as pool:
                list(pool.map(load_months, clients, shares, [db] * parallel))
            elapsed = time.monotonic() - started
            with db.connect() as conn:
                stored = conn.exec_driver_sql("SELECT count(*) FROM ordens_servico").scalar()
            requests = sum(c.stats.get("requests", 0) for c in clients)
            too_many = sum(c.stats.get("429", 0) for c in clients)
            per_window = requests / elapsed * args.window
            rows.append(
                (
                    f"historical load, {parallel} partition(s) at once",
                    requests,
                    elapsed,
                    per_window,
                    too_many,
                    stored,
                )
            )
            if parallel == 1:
                quiet = sync_incremental(clients[0], db)
                incremental = (quiet.api_calls, quiet.pages, quiet.details_fetched)
            for c in clients:
                c.close()
            db.dispose()
    finally:
        sim.stop()
        with admin.begin() as conn:
            for schema in schemas:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()

    print(
        f"\nTiny historical load: {args.orders:,} orders in {len(all_months)} month partitions; "
        f"limit {args.limit} requests / {args.window:g} s window"
    )
    print(
        f"{'run':42} {'requests':>8} {'seconds':>8} {'req/window':>10} {'x limit':>7} {'429s':>6} {'calls/order':>11}"
    )
    for name, requests, elapsed, per_window, too_many, stored in rows:
        print(
            f"{name:42} {requests:>8,} {elapsed:>8.1f} {per_window:>10.1f} {per_window / args.limit:>7.2f} "
            f"{too_many / requests:>6.2%} {requests / stored:>11.3f}"
        )
    calls, pages, details = incremental
    print(
        f"\nincremental sync with nothing changed: {calls} API calls ({pages} list pages, {details} details)"
    )
    print("targets: x limit >= 0.90, 429s <= 1%, calls/order <= 1.02")


if __name__ == "__main__":
    main()
