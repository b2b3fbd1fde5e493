"""Recovery of tickets the bot saved while HubSoft was down (local protocol ``LOC000123``).

Every ticket without ``hubsoft_atendimento_id`` is opened in HubSoft from its saved form data,
linked both ways (the local row gets the HubSoft id and protocol; the HubSoft ticket carries
the local protocol in ``descricao`` and ``parametros``; ``hubsoft_protocol_map`` keeps the
pair) and gets a message with its history (created offline at <time>, local protocol).

**Exactly once.** HubSoft has no idempotency key, so:
1. the whole pass holds an advisory lock: two recoveries at once never send the same ticket;
2. ``create_sent_at`` is committed *before* each create is sent: a ticket with it set may
   already be in HubSoft (reply lost, crash before the link was saved), so it is looked up by
   its local protocol (client's tickets since its creation; the tenant's paged list when the
   client has too many) and adopted instead of sent again;
3. a lost reply (``HubSoftUncertain``) is looked up at once; if not found yet it waits for
   the next pass, which looks it up again before sending.
Failures set ``sync_status='failed'`` with the reason and a backoff (``next_sync_at``); a
HubSoft outage in the middle of a pass stops it without burning the other tickets' attempts.
A category that matches none of the tenant's ticket types is such a failure (before any
create), never a ticket opened with HubSoft's default type. The history message is pending
until HubSoft accepted it (``history_message_at``), so every pass resumes the ones missing.
"""

from __future__ import annotations

import datetime as dt
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ..lib.db import Database
from ..lib.locks import AdvisoryLock, LockNotAvailable
from ..lib.redact import redact
from .client import (
    HubSoftClient,
    HubSoftError,
    HubSoftRejected,
    HubSoftUnavailable,
    HubSoftUncertain,
)

TZ = ZoneInfo("America/Sao_Paulo")
LOCK_NAME = "hubsoft:ticket-recovery"
BACKOFF_BASE = dt.timedelta(minutes=5)
BACKOFF_MAX = dt.timedelta(hours=6)
# A lost reply is looked up again soon: the ticket is probably there already.
UNCERTAIN_RETRY = dt.timedelta(minutes=1)
CLIENT_LOOKUP_LIMIT = 50

TICKET_COLUMNS = (
    "id, protocol, customer_cpf, customer_name, customer_phone, customer_email, service_id, "
    "category, description, status, created_at, sync_attempts, create_sent_at"
)


@dataclass
class LinkedTicket:
    local_protocol: str
    hubsoft_protocol: str
    kind: str  # created | adopted


@dataclass
class RecoveryResult:
    candidates: int = 0
    created: int = 0
    adopted: int = 0
    failed: int = 0
    uncertain: int = 0
    messages_added: int = 0
    messages_pending: int = 0  # history messages whose call failed: sent by the next pass
    skipped_reason: str = ""
    stopped_reason: str = ""
    linked: list[LinkedTicket] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (local protocol, reason)
    duration_s: float = 0.0

    @property
    def synced(self) -> int:
        return self.created + self.adopted

    @property
    def outcome(self) -> str:
        if self.skipped_reason:
            return "skipped"
        if self.stopped_reason or self.failed or self.uncertain:
            return "partial" if self.synced else "failed" if self.candidates else "ok"
        return "ok"

    def metadata(self) -> dict[str, int | float]:
        return {
            "candidates": self.candidates,
            "synced": self.synced,
            "created": self.created,
            "adopted": self.adopted,
            "failed": self.failed,
            "uncertain": self.uncertain,
            "history_messages_added": self.messages_added,
            "history_messages_pending": self.messages_pending,
            "duration_s": round(self.duration_s, 2),
        }

    def summary(self) -> str:
        """The admin notification of this pass (protocols only, no personal data)."""
        lines = [
            f"🔄 Recuperação HubSoft: {self.synced} chamado(s) offline sincronizado(s) "
            f"({self.created} criado(s), {self.adopted} já existente(s) vinculado(s)), "
            f"{self.failed} falha(s)."
        ]
        lines += [f"• {t.local_protocol} → #{t.hubsoft_protocol}" for t in self.linked[:20]]
        lines += [f"✖ {p}: {reason[:200]}" for p, reason in self.failures[:10]]
        if self.stopped_reason:
            lines.append(f"Interrompida: {self.stopped_reason[:200]}")
        return "\n".join(lines)


def backoff(attempts: int) -> dt.timedelta:
    """5 min, 10 min, 20 min… up to 6 h after the n-th failed attempt."""
    return min(BACKOFF_MAX, BACKOFF_BASE * 2 ** max(0, attempts - 1))


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode()
    return " ".join(text.upper().replace("_", " ").split())


def _digits(value: Any) -> str:
    return "".join(ch for ch in str(value or "") if ch.isdigit())


def marker(local_protocol: str) -> str:
    """What the HubSoft description starts with, so a person (and the lookup) can find it."""
    return f"[{local_protocol}]"


def _is_ours(ticket: dict[str, Any], local_protocol: str) -> bool:
    params = ticket.get("parametros") or {}
    if isinstance(params, dict) and params.get("protocolo_local") == local_protocol:
        return True
    return marker(local_protocol) in str(ticket.get("descricao_abertura") or "")


class _Recovery:
    def __init__(
        self, client: HubSoftClient, db: Database, now: dt.datetime, run_id: str | None
    ) -> None:
        self.client = client
        self.db = db
        self.now = now
        self.run_id = run_id  # the Dagster run, on every ticket it changes (sync_run_id)
        self.result = RecoveryResult()
        self._types: list[dict[str, Any]] | None = None

    # ---- database ---------------------------------------------------------------------

    def _update(self, ticket_id: int, sets: str, **params: Any) -> None:
        with self.db.begin() as conn:
            conn.execute(
                sa.text(f"UPDATE support_tickets SET {sets}, sync_run_id = :run WHERE id = :id"),
                {"id": ticket_id, "run": self.run_id, **params},
            )

    def _fail(self, row: Any, reason: str, retry_in: dt.timedelta | None) -> None:
        reason = redact(reason)[:500]
        self._update(
            row.id,
            "sync_status = 'failed', sync_error = :e, next_sync_at = :n",
            e=reason,
            n=self.now + retry_in if retry_in else None,
        )
        self.result.failures.append((row.protocol, reason))

    def _link(self, row: Any, ticket: dict[str, Any], kind: str) -> None:
        hub_id = int(ticket["id_atendimento"])
        hub_protocol = str(ticket["protocolo"])
        status = ticket.get("status")
        if isinstance(status, dict):
            status = status.get("descricao")
        try:
            self._save_link(row, hub_id, hub_protocol, status, kind)
        except sa.exc.IntegrityError:
            # The unique index refused a second local ticket for one HubSoft ticket.
            raise HubSoftError(
                f"HubSoft ticket #{hub_protocol} is already linked to another local ticket; "
                "check both tickets by hand"
            ) from None
        self.result.linked.append(LinkedTicket(row.protocol, hub_protocol, kind))
        if kind == "created":
            self.result.created += 1
        else:
            self.result.adopted += 1

    def _save_link(self, row: Any, hub_id: int, hub_protocol: str, status: Any, kind: str) -> None:
        with self.db.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE support_tickets SET hubsoft_atendimento_id = :hid, "
                    "hubsoft_protocol = :hp, hubsoft_status = coalesce(:hs, hubsoft_status), "
                    "sync_status = 'synced', synced_at = :now, sync_error = NULL, "
                    "next_sync_at = NULL, sync_run_id = :run "
                    "WHERE id = :id AND hubsoft_atendimento_id IS NULL"
                ),
                {
                    "hid": hub_id,
                    "hp": hub_protocol,
                    "hs": status,
                    "now": self.now,
                    "id": row.id,
                    "run": self.run_id,
                },
            )
            conn.execute(
                sa.text(
                    "INSERT INTO hubsoft_protocol_map (local_protocol, hubsoft_protocol, "
                    "hubsoft_atendimento_id, ticket_id, link_kind, linked_at, sync_run_id) "
                    "VALUES (:lp, :hp, :hid, :tid, :kind, :now, :run) ON CONFLICT DO NOTHING"
                ),
                {
                    "lp": row.protocol,
                    "hp": hub_protocol,
                    "hid": hub_id,
                    "tid": row.id,
                    "kind": kind,
                    "now": self.now,
                    "run": self.run_id,
                },
            )

    # ---- HubSoft ----------------------------------------------------------------------

    def find_existing(self, row: Any) -> dict[str, Any] | None:
        """The HubSoft ticket an earlier attempt opened for this local ticket, if any."""
        since = row.created_at.astimezone(TZ).date()
        found = self.client.tickets_of_client(
            row.customer_cpf, data_inicio=since, limit=CLIENT_LOOKUP_LIMIT
        )
        for ticket in found:
            if _is_ours(ticket, row.protocol):
                return ticket
        if len(found) < CLIENT_LOOKUP_LIMIT:
            return None
        # The client has more tickets than one lookup returns: walk the tenant's list.
        for ticket in self.client.iter_tickets(data_inicio=since):
            if _is_ours(ticket, row.protocol):
                return ticket
        return None

    def _ticket_type(self, row: Any) -> int:
        """The tenant's ``id_tipo_atendimento`` for the ticket's category (by name, accents
        and case ignored, or by id). No match is an error naming the ticket: HubSoft would
        otherwise open it silently with its default type."""
        category = (row.category or "").strip()
        if self._types is None:
            self._types = self.client.ticket_types()
        wanted = _norm(category)
        for known in self._types:
            ident = known.get("id_tipo_atendimento")
            if category and (
                _norm(str(known.get("descricao"))) == wanted or str(ident) == category
            ):
                try:
                    return int(ident)
                except (TypeError, ValueError):
                    break
        names = ", ".join(str(t.get("descricao")) for t in self._types[:12]) or "none"
        what = f"category {category!r}" if category else "no category"
        raise HubSoftRejected(
            f"ticket {row.protocol}: {what} matches no HubSoft ticket type "
            f"(tenant types: {names}); fix the category, then set next_sync_at = now()"
        )

    def form_data(self, row: Any) -> dict[str, Any]:
        """The create payload rebuilt from what the bot saved (and the client, if needed)."""
        service_id, name, phone = row.service_id, row.customer_name, _digits(row.customer_phone)
        if not service_id or not name or not phone:
            clients = self.client.find_clients_by_cpf(row.customer_cpf)
            if not clients:
                raise HubSoftRejected("no HubSoft client with this ticket's CPF")
            found = clients[0]
            services = found.get("servicos") or []
            if not service_id:
                if not services:
                    raise HubSoftRejected("the HubSoft client has no service to open a ticket on")
                service_id = services[0]["id_cliente_servico"]
            name = name or found.get("nome_razaosocial")
            phone = phone or _digits(found.get("telefone_primario"))
        created = row.created_at.astimezone(TZ)
        description = (
            f"{marker(row.protocol)} {row.description.strip()}\n"
            f"(Aberto pelo bot com o HubSoft fora do ar em {created:%d/%m/%Y %H:%M}; "
            f"protocolo local {row.protocol}"
            + (f"; categoria {row.category}" if row.category else "")
            + ")"
        )
        payload: dict[str, Any] = {
            "id_cliente_servico": int(service_id),
            "descricao": description,
            "nome": name,
            "telefone": phone,
            "parametros": {
                "protocolo_local": row.protocol,
                "origem": "sync_pipelines/hubsoft_recovery",
                "criado_offline_em": created.isoformat(),
            },
        }
        if row.customer_email:
            payload["email"] = row.customer_email
        payload["id_tipo_atendimento"] = self._ticket_type(row)
        return payload

    def recover(self, row: Any) -> None:
        self._update(
            row.id,
            "last_sync_attempt = :now, sync_attempts = sync_attempts + 1",
            now=self.now,
        )
        attempts = row.sync_attempts + 1
        if row.create_sent_at is not None:
            existing = self.find_existing(row)
            if existing is not None:
                self._link(row, existing, "adopted")
                return
        try:
            payload = self.form_data(row)
        except HubSoftRejected as exc:
            self.result.failed += 1
            self._fail(row, str(exc), backoff(attempts))
            return
        self._update(row.id, "create_sent_at = :now", now=self.now)
        try:
            ticket = self.client.open_ticket(payload)
        except HubSoftUncertain as exc:
            existing = self._lookup_quietly(row)
            if existing is not None:
                self._link(row, existing, "adopted")
                return
            self.result.uncertain += 1
            self._fail(
                row,
                f"reply lost, will look it up before resending: {exc}",
                UNCERTAIN_RETRY,
            )
            return
        except HubSoftRejected as exc:
            # Refused, so not created: the next attempt needs no lookup.
            self._update(row.id, "create_sent_at = NULL")
            self.result.failed += 1
            self._fail(row, str(exc), backoff(attempts))
            return
        self._link(row, ticket, "created")

    def _lookup_quietly(self, row: Any) -> dict[str, Any] | None:
        try:
            return self.find_existing(row)
        except HubSoftError:
            return None

    def add_history_messages(self) -> None:
        """The historical-context message on each recovered ticket that does not have it yet.

        ``history_message_at`` is set only after HubSoft accepted the message, so a message
        whose call failed (error reply, 5xx, reset, outage, a pass stopped before this step)
        is sent by the next pass. HubSoft has no call that lists a ticket's messages, so a
        reply lost after HubSoft stored the message cannot be checked: it is resent too
        (a second copy of a note beats a ticket without its local protocol's history).
        """
        with self.db.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT t.id, t.protocol, t.created_at, m.hubsoft_atendimento_id, m.link_kind "
                    "FROM support_tickets t JOIN hubsoft_protocol_map m ON m.ticket_id = t.id "
                    "WHERE t.history_message_at IS NULL ORDER BY t.id"
                )
            ).all()
        for row in rows:
            created = row.created_at.astimezone(TZ)
            text = (
                f"Chamado criado offline pelo bot em {created:%d/%m/%Y %H:%M} (horário de "
                f"Brasília), protocolo local {row.protocol}; sincronizado com o HubSoft em "
                f"{self.now.astimezone(TZ):%d/%m/%Y %H:%M} pela recuperação automática."
            )
            try:
                self.client.add_message(row.hubsoft_atendimento_id, text)
            except HubSoftError as exc:
                self._update(
                    row.id,
                    "history_message_attempts = history_message_attempts + 1, "
                    "history_message_error = :e",
                    e=redact(f"{type(exc).__name__}: {exc}")[:500],
                )
                self.result.messages_pending += 1
                if isinstance(exc, HubSoftUnavailable) and not isinstance(exc, HubSoftUncertain):
                    raise  # HubSoft is down: the rest wait for the next pass
                continue
            self._update(
                row.id,
                "history_message_at = :now, history_message_attempts = "
                "history_message_attempts + 1, history_message_error = NULL",
                now=self.now,
            )
            self.result.messages_added += 1


def pending_count(db: Database) -> int:
    with db.connect() as conn:
        return conn.execute(
            sa.text("SELECT count(*) FROM support_tickets WHERE hubsoft_atendimento_id IS NULL")
        ).scalar_one()


def record_run(
    db: Database,
    kind: str,
    started: dt.datetime,
    outcome: str,
    synced: int,
    failed: int,
    detail: str,
    run_id: str | None = None,
) -> None:
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO hubsoft_sync_runs (kind, started_at, finished_at, outcome, synced, "
                "failed, detail, sync_run_id) VALUES (:k, :s, now(), :o, :sy, :f, :d, :run)"
            ),
            {
                "run": run_id,
                "k": kind,
                "s": started,
                "o": outcome,
                "sy": synced,
                "f": failed,
                "d": redact(detail)[:1000],
            },
        )


def recover_offline_tickets(
    client: HubSoftClient,
    db: Database,
    *,
    now: dt.datetime | None = None,
    limit: int = 500,
    on_ticket=None,
    run_id: str | None = None,
) -> RecoveryResult:
    """Open in HubSoft every local ticket still without a HubSoft id (see module docstring).
    ``run_id`` (the Dagster run) goes on every ticket and link it writes (``sync_run_id``)."""
    started = time.monotonic()
    now = now or dt.datetime.now(dt.UTC)
    try:
        lock = AdvisoryLock(db, LOCK_NAME, holder_hint="(another ticket recovery)").acquire()
    except LockNotAvailable as exc:
        return RecoveryResult(skipped_reason=str(exc))
    work = _Recovery(client, db, now, run_id)
    result = work.result
    try:
        with db.connect() as conn:
            rows = conn.execute(
                sa.text(
                    f"SELECT {TICKET_COLUMNS} FROM support_tickets "
                    "WHERE hubsoft_atendimento_id IS NULL "
                    "AND (next_sync_at IS NULL OR next_sync_at <= :now) "
                    "ORDER BY created_at, id LIMIT :limit"
                ),
                {"now": now, "limit": limit},
            ).all()
        result.candidates = len(rows)
        for index, row in enumerate(rows):
            lock.ensure_held()
            try:
                work.recover(row)
            except HubSoftUnavailable as exc:
                # HubSoft went away: this ticket waits for it (no backoff), the rest untouched.
                result.failed += 1
                work._fail(row, f"HubSoft unavailable: {exc}", None)
                result.stopped_reason = f"HubSoft became unavailable after {index} ticket(s)"
                break
            except HubSoftError as exc:
                result.failed += 1
                work._fail(row, str(exc), backoff(row.sync_attempts + 1))
            if on_ticket is not None:
                on_ticket(index + 1, len(rows), result)
        if not result.stopped_reason:
            lock.ensure_held()
            try:
                work.add_history_messages()
            except HubSoftError as exc:
                result.stopped_reason = f"history messages interrupted: {exc}"
    finally:
        lock.release()
        result.duration_s = time.monotonic() - started
    record_run(
        db,
        "recovery",
        now,
        result.outcome,
        result.synced,
        result.failed,
        result.stopped_reason,
        run_id,
    )
    return result
