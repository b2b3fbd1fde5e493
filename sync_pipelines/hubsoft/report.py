"""The ``/health_hubsoft`` report: connectivity, latency, ticket sync counts, last successful
syncs and what an admin should do about it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import sqlalchemy as sa

from ..lib.db import Database
from .client import HealthCheck

SLOW_MS = 2000.0
STALE_STATUS_SYNC = dt.timedelta(hours=1)


@dataclass
class HealthReport:
    check: HealthCheck | None
    pending: int  # no HubSoft id yet, never failed
    failed: int
    synced: int
    uncertain: int  # failed after a lost reply: will be looked up before resending
    last_recovery: dt.datetime | None
    last_status_sync: dt.datetime | None
    last_online: dt.datetime | None
    recommendations: list[str] = field(default_factory=list)

    @property
    def online(self) -> bool:
        return bool(self.check and self.check.online)

    def markdown(self) -> str:
        def when(value: dt.datetime | None) -> str:
            return value.strftime("%Y-%m-%d %H:%M UTC") if value else "never"

        check = self.check
        latency = f"{check.latency_ms:.0f} ms" if check and check.latency_ms is not None else "-"
        lines = [
            f"**HubSoft {'🟢 online' if self.online else '🔴 offline'}** (latency {latency})",
            "",
            "| | |",
            "|---|---:|",
            f"| tickets synced | {self.synced} |",
            f"| pending sync | {self.pending} |",
            f"| failed (retried with backoff) | {self.failed} |",
            f"| last successful recovery | {when(self.last_recovery)} |",
            f"| last successful status sync | {when(self.last_status_sync)} |",
            f"| last seen online | {when(self.last_online)} |",
            "",
            "**Recommended actions**",
        ]
        lines += [f"- {r}" for r in self.recommendations]
        if check and check.error:
            lines += ["", f"Last error: `{check.error[:300]}`"]
        return "\n".join(lines)


def build_report(
    db: Database, check: HealthCheck | None, now: dt.datetime | None = None
) -> HealthReport:
    now = now or dt.datetime.now(dt.UTC)
    with db.connect() as conn:
        counts = dict(
            conn.execute(
                sa.text("SELECT sync_status, count(*) FROM support_tickets GROUP BY 1")
            ).all()
        )
        uncertain = conn.execute(
            sa.text(
                "SELECT count(*) FROM support_tickets WHERE sync_status = 'failed' "
                "AND hubsoft_atendimento_id IS NULL AND create_sent_at IS NOT NULL"
            )
        ).scalar_one()
        last = dict(
            conn.execute(
                sa.text(
                    "SELECT kind, max(finished_at) FROM hubsoft_sync_runs "
                    "WHERE outcome IN ('ok', 'partial') GROUP BY kind"
                )
            ).all()
        )
        last_online = conn.execute(
            sa.text("SELECT max(checked_at) FROM hubsoft_health_checks WHERE online")
        ).scalar()
    report = HealthReport(
        check=check,
        pending=counts.get("pending", 0),
        failed=counts.get("failed", 0),
        synced=counts.get("synced", 0),
        uncertain=uncertain,
        last_recovery=last.get("recovery"),
        last_status_sync=last.get("status"),
        last_online=last_online,
    )
    report.recommendations = recommendations(report, now)
    return report


def recommendations(report: HealthReport, now: dt.datetime) -> list[str]:
    todo: list[str] = []
    if not report.online:
        todo.append(
            "HubSoft is unreachable: check the tenant's API (HUBSOFT_API_URL) and credentials; "
            "the bot keeps saving tickets locally and recovery sends them when it is back."
        )
    elif report.check and (report.check.latency_ms or 0) > SLOW_MS:
        todo.append(f"HubSoft answers slowly (> {SLOW_MS:.0f} ms): expect slower syncs.")
    if report.failed:
        todo.append(
            f"{report.failed} ticket(s) failed to sync: read the reasons with SELECT protocol, "
            "sync_error, next_sync_at FROM support_tickets WHERE sync_status = 'failed'; fix "
            "the data (e.g. service id) and they are retried at next_sync_at (or set it to now())."
        )
    if report.pending and report.online:
        todo.append(
            f"{report.pending} ticket(s) wait for HubSoft: launch job sync_tickets "
            "(mode offline) or wait for the 30-minute schedule."
        )
    if report.online and (
        report.last_status_sync is None or now - report.last_status_sync > STALE_STATUS_SYNC
    ):
        todo.append(
            "No successful status sync in the last hour: check that the schedule "
            "hubsoft_status_sync_every_15_min is running (dagster-daemon)."
        )
    return todo or ["Nothing to do: HubSoft is online and every ticket is in sync."]
