"""Cost of ``redact`` per log line, and on long repetitive input (the figures the tests used
to assert on a wall clock; the tests now assert the properties behind them).

    python -m bench.bench_redact [--lines 2000] [--secrets 600]

Prints microseconds per typical log line with one registered secret, after ``--secrets``
renewals of a rotating token registered in a slot (what the Tiny client does: the set stays
bounded) and, for comparison, after as many values registered for good (the old behaviour:
the set grows with every renewal). Then the time to redact 40 000 characters of each
repetitive pattern that would make a backtracking regex quadratic.
"""

from __future__ import annotations

import argparse
import time

from sync_pipelines.lib import redact as redaction

LINE = (
    "GET https://api.tiny.com.br/public-api/v3/ordem-servico?limit=100&offset=300 "
    "-> 200 in 0.31 s; page 4 of 30, 100 orders, 2 changed, window 2024-03-01..2024-03-31"
)
REPETITIVE_UNITS = ["x.", "ab-", "a@", "(1", "a://b:", "x@y.", "eyJ.", "1."]


def per_line_us(lines: int) -> float:
    start = time.perf_counter()
    for _ in range(lines):
        redaction.redact(LINE)
    return (time.perf_counter() - start) / lines * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--secrets", type=int, default=600)
    args = parser.parse_args()

    redaction.register_secret("bench-client-secret-0001")
    per_line_us(args.lines)  # warm-up: regex caches, CPU frequency
    base = per_line_us(args.lines)
    print(f"1 registered secret:                    {base:8.1f} µs/line")

    start = time.perf_counter()
    for n in range(args.secrets):
        redaction.register_secret(f"bench-rotating-access-token-{n:06d}", slot="bench:access")
    slot_register = time.perf_counter() - start
    slotted = per_line_us(args.lines)
    print(
        f"{args.secrets} renewals in a slot ({redaction.registered_secret_count()} kept): "
        f"{slotted:8.1f} µs/line ({slotted / base:.2f}x), registering took {slot_register:.3f} s"
    )

    start = time.perf_counter()
    for n in range(args.secrets):
        redaction.register_secret(f"bench-accumulated-token-{n:06d}")
    grow_register = time.perf_counter() - start
    grown = per_line_us(args.lines)
    print(
        f"{args.secrets} values kept for good ({redaction.registered_secret_count()} kept): "
        f"{grown:8.1f} µs/line ({grown / base:.2f}x), registering took {grow_register:.3f} s"
    )

    for unit in REPETITIVE_UNITS:
        text = unit * (40_000 // len(unit))
        start = time.perf_counter()
        redaction.redact(text)
        print(f"40 000 chars of {unit!r:10} {(time.perf_counter() - start) * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
