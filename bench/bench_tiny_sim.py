"""Requests per second the Tiny simulator serves for status- and date-filtered listings
(the figure ``test_list_requests_serve_at_least_50_per_second`` used to assert; the test now
bounds the index entries a listing walks).

    python -m bench.bench_tiny_sim [--orders 6000] [--requests 300]

Prints list requests per second over a real socket, and index entries walked per request
against the account's size. The sandbox runs several workers against one simulator on two
cores, so it should serve well over 50 requests/s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

import requests

from sync_pipelines.sandbox.tiny_sim import API_PREFIX, TinySimulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=6000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with TinySimulator(
        seed=3,
        n_orders=args.orders,
        today=dt.date(2024, 6, 15),
        per_minute_limit=10**6,
        burst_per_second=10**6,
    ) as sim:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {sim.issue_initial_tokens()['access_token']}"
        start = time.perf_counter()
        for i in range(args.requests):
            params = {"situacao": str(i % 8), "offset": (i * 13) % 200, "orderBy": "asc"}
            if i % 2:
                params |= {"dataInicialEmissao": "2016-01-01", "dataFinalEmissao": "2023-12-31"}
            reply = session.get(f"{sim.base_url}{API_PREFIX}/ordem-servico", params=params)
            reply.raise_for_status()
        elapsed = time.perf_counter() - start
        walked = sim.stats()["list_entries_walked"] / args.requests
    print(f"{args.requests / elapsed:8.1f} list requests/s (target > 50)")
    print(f"{walked:8.1f} index entries walked per request, account of {args.orders} orders")


if __name__ == "__main__":
    main()
