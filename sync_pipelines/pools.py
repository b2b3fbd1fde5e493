"""Dagster concurrency pools: one per rate-limited external API (and one per shared target).

A pool caps how many asset steps talk to one service at once across every run and backfill;
the shared rate limiter (lib/ratelimit.py) then caps their combined request rate. Pool
limits cannot be written in dagster.yaml, so ``sync-pipelines pools`` (run by the demo and at
deployment start-up) sets them on the instance from this table.
"""

from __future__ import annotations

POOL_LIMITS: dict[str, int] = {
    "tiny_api": 4,  # Tiny v3: one account-wide limit; 4 month partitions in parallel share it
    "detran_portal": 4,  # e-CNHsp: one session per examiner (locks), a few examiners at once
    "hubsoft_api": 1,  # HubSoft: recovery and status sync must not race each other
    "gestao_scouter_api": 2,  # PostgREST export batches
    "telegram_api": 1,  # admin notifications: Telegram allows ~1 message/s per chat
    "tenant_databases": 4,  # local sync: tenant MySQL servers written in parallel
    "migrations": 1,  # schema changes: never two at once
}
