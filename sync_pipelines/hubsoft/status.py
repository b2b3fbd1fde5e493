"""Status sync: each active local ticket takes its HubSoft status.

Active = linked to HubSoft and not closed locally. Each is looked up by its HubSoft protocol
(closed tickets included: ``apenas_pendente=nao``), HubSoft's status text is kept in
``hubsoft_status`` and mapped to the bot's own vocabulary in ``status``:
``closed`` (HubSoft closed it: ``data_fechamento``/``status_fechamento``), ``open`` (waiting
for analysis / new) or ``in_progress`` (any other tenant status). ``synced_at`` records the
check. Changed rows are written in one batch.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..lib.db import Database
from ..lib.redact import redact
from .client import HubSoftClient, HubSoftError, HubSoftUnavailable
from .recovery import record_run

OPEN_PREFIXES = frozenset({"aguardando_analise", "novo_atendimento"})
CLOSED = "closed"


@dataclass
class StatusSyncResult:
    checked: int = 0
    changed: int = 0
    closed: int = 0
    not_found: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    changes: list[tuple[str, str, str]] = field(default_factory=list)  # protocol, old, new
    stopped_reason: str = ""
    duration_s: float = 0.0

    @property
    def outcome(self) -> str:
        if self.stopped_reason:
            return "partial" if self.checked else "failed"
        return "partial" if self.errors else "ok"

    def metadata(self) -> dict[str, int | float]:
        return {
            "active_checked": self.checked,
            "status_changed": self.changed,
            "closed": self.closed,
            "not_found_in_hubsoft": self.not_found,
            "errors": len(self.errors),
            "duration_s": round(self.duration_s, 2),
        }


def local_status(ticket: dict[str, Any], prefix_by_text: dict[str, str]) -> tuple[str, str]:
    """(local status, HubSoft status text) of a ticket as ``cliente/atendimento`` lists it."""
    text = ticket.get("status")
    if isinstance(text, dict):
        text = text.get("descricao")
    text = str(text or "")
    if ticket.get("data_fechamento") or ticket.get("status_fechamento"):
        return CLOSED, text
    if prefix_by_text.get(text.strip().lower()) in OPEN_PREFIXES:
        return "open", text
    return "in_progress", text


def sync_statuses(
    client: HubSoftClient, db: Database, *, now: dt.datetime | None = None, limit: int = 1000
) -> StatusSyncResult:
    started = time.monotonic()
    now = now or dt.datetime.now(dt.UTC)
    result = StatusSyncResult()
    with db.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT id, protocol, hubsoft_protocol, status, hubsoft_status "
                "FROM support_tickets WHERE hubsoft_atendimento_id IS NOT NULL "
                "AND hubsoft_protocol IS NOT NULL AND status <> :closed "
                "ORDER BY synced_at NULLS FIRST, id LIMIT :limit"
            ),
            {"closed": CLOSED, "limit": limit},
        ).all()
    updates: list[dict[str, Any]] = []
    try:
        prefixes = {
            str(s.get("descricao", "")).strip().lower(): str(s.get("prefixo", ""))
            for s in client.statuses()
        }
        for row in rows:
            try:
                ticket = client.ticket_by_protocol(row.hubsoft_protocol)
            except HubSoftUnavailable:
                raise
            except HubSoftError as exc:
                result.errors.append((row.protocol, redact(str(exc))[:300]))
                continue
            result.checked += 1
            if ticket is None:
                result.not_found += 1
                continue
            status, text = local_status(ticket, prefixes)
            if status != row.status:
                result.changed += 1
                result.changes.append((row.protocol, row.status, status))
                result.closed += status == CLOSED
            updates.append({"id": row.id, "status": status, "hs": text, "now": now})
    except HubSoftUnavailable as exc:
        result.stopped_reason = f"HubSoft unavailable: {exc}"
    if updates:
        with db.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE support_tickets SET status = :status, hubsoft_status = :hs, "
                    "synced_at = :now WHERE id = :id"
                ),
                updates,
            )
    result.duration_s = time.monotonic() - started
    detail = result.stopped_reason or "; ".join(f"{p}: {e}" for p, e in result.errors[:5])
    record_run(db, "status", now, result.outcome, result.checked, len(result.errors), detail)
    return result
