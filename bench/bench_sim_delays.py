"""Simulator fault delays as a client sees them: the time a reply takes vs the delay asked for.

    python -m bench.bench_sim_delays [--delay 0.3] [--requests 20]

The harness tests check that a latency or outage-timeout fault holds the reply back (with a
gate, no clock); this measures how long it really takes on this machine, for each fault and
without one, and prints the ratio to the delay asked for (>= 1.0 expected; how far above 1.0
is the machine's overhead, which depends on its load and is why no test asserts it).
"""

from __future__ import annotations

import argparse
import statistics
import time

import requests

from sync_pipelines.sandbox.harness import Request, Response, Simulator, route


class EchoSimulator(Simulator):
    name = "echo"

    @route("GET", r"/ping")
    def ping(self, request: Request) -> Response:
        return Response.json({"ok": True})


def timed_replies(sim: EchoSimulator, count: int) -> list[float]:
    durations = []
    with requests.Session() as session:
        for _ in range(count):
            start = time.perf_counter()
            session.get(f"{sim.base_url}/ping", timeout=30)
            durations.append(time.perf_counter() - start)
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.3)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    cases = {
        "no fault": {},
        "latency": {"latency": args.delay},
        "outage timeout": {"outage": {"mode": "timeout", "seconds": args.delay}},
    }
    print(f"{'fault':<16} {'median s':>9} {'max s':>7} {'median / delay':>15}")
    for label, faults in cases.items():
        with EchoSimulator(faults=faults) as sim:
            durations = timed_replies(sim, args.requests)
        median = statistics.median(durations)
        print(f"{label:<16} {median:>9.3f} {max(durations):>7.3f} {median / args.delay:>15.2f}")


if __name__ == "__main__":
    main()
