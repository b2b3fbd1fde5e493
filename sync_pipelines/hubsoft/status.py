"""Status sync: each active or recently closed local ticket takes its HubSoft status.

Read: linked to HubSoft and either not closed locally, or closed by this sync less than
``RECHECK_CLOSED`` (30 days) ago: HubSoft agents reopen tickets when the customer calls back,
and a ticket that is never read again would stay closed locally forever. ``closed_at`` is
when this sync saw HubSoft close the ticket; tickets the bot closed itself (no
``closed_at``) and tickets closed longer ago are not re-read. Each is looked up by its
HubSoft protocol (closed tickets included: ``apenas_pendente=nao``), HubSoft's status text is
kept in ``hubsoft_status`` and mapped to the bot's own vocabulary in ``status``:
``closed`` (HubSoft closed it: ``data_fechamento``/``status_fechamento``), ``open`` (waiting
for analysis / new) or ``in_progress`` (any other tenant status). ``synced_at`` records the
check. Changed rows are written in one batch, each only if its local status is still the one
read at the start of the pass (``WHERE status = old``): a change the bot made meanwhile wins
and the ticket is read again by the next pass (counted as ``conflicts``).
"""

from __future__ import annotations

import datetime as dt
import json
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
# How long after HubSoft closed a ticket the sync still re-reads it to notice a reopen.
RECHECK_CLOSED = dt.timedelta(days=30)


@dataclass
class StatusSyncResult:
    checked: int = 0
    changed: int = 0
    closed: int = 0
    not_found: int = 0
    reopened: int = 0
    conflicts: int = 0  # the bot changed the ticket during the pass: its change was kept
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
            "reopened": self.reopened,
            "bot_changes_kept": self.conflicts,
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
    client: HubSoftClient,
    db: Database,
    *,
    now: dt.datetime | None = None,
    limit: int = 1000,
    recheck_closed: dt.timedelta = RECHECK_CLOSED,
    run_id: str | None = None,
) -> StatusSyncResult:
    """HubSoft's status onto the linked tickets; ``run_id`` (the Dagster run) goes on each
    ticket whose status it changes (``sync_run_id``), not on one it only checked again."""
    started = time.monotonic()
    # "now" comes from Python, never PostgreSQL's now(): it decides the re-check window.
    now = now or dt.datetime.now(dt.UTC)
    result = StatusSyncResult()
    with db.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT id, protocol, hubsoft_protocol, status, hubsoft_status "
                "FROM support_tickets WHERE hubsoft_atendimento_id IS NOT NULL "
                "AND hubsoft_protocol IS NOT NULL "
                "AND (status <> :closed OR closed_at >= :recheck_since) "
                "ORDER BY synced_at NULLS FIRST, id LIMIT :limit"
            ),
            {"closed": CLOSED, "recheck_since": now - recheck_closed, "limit": limit},
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
            updates.append({"id": row.id, "protocol": row.protocol, "old": row.status,
                            "status": status, "hs": text})  # fmt: skip
    except HubSoftUnavailable as exc:
        result.stopped_reason = f"HubSoft unavailable: {exc}"
    applied = _write(db, updates, now, run_id)
    for update in updates:
        if update["id"] not in applied:
            result.conflicts += 1
            continue
        old, new = update["old"], update["status"]
        if new != old:
            result.changed += 1
            result.changes.append((update["protocol"], old, new))
            result.closed += new == CLOSED
            result.reopened += old == CLOSED
    result.duration_s = time.monotonic() - started
    detail = result.stopped_reason or "; ".join(f"{p}: {e}" for p, e in result.errors[:5])
    record_run(
        db, "status", now, result.outcome, result.checked, len(result.errors), detail, run_id
    )
    return result


def _write(
    db: Database, updates: list[dict[str, Any]], now: dt.datetime, run_id: str | None
) -> set[int]:
    """Apply the statuses read, each only where the local status is still the one read
    (the bot may have changed it meanwhile); return the ids written."""
    if not updates:
        return set()
    rows = [{k: u[k] for k in ("id", "old", "status", "hs")} for u in updates]
    with db.begin() as conn:
        written = conn.execute(
            sa.text(
                "UPDATE support_tickets t SET status = v.status, hubsoft_status = v.hs, "
                "sync_run_id = CASE WHEN (t.status, t.hubsoft_status) IS DISTINCT FROM "
                "(v.status, v.hs) THEN :run ELSE t.sync_run_id END, "
                "synced_at = :now, closed_at = CASE WHEN v.status <> :closed THEN NULL "
                "WHEN v.old = :closed THEN coalesce(t.closed_at, :now) ELSE :now END "
                "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
                "AS v(id bigint, old text, status text, hs text) "
                "WHERE t.id = v.id AND t.status = v.old RETURNING t.id"
            ),
            {"rows": json.dumps(rows), "now": now, "closed": CLOSED, "run": run_id},
        ).scalars()
        return set(written)
