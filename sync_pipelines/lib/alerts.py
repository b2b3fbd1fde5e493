"""One alert per transition: which alert conditions are active, kept in the control database.

A guard (a sync, a check, a sensor tick) evaluates its condition every time it runs and
calls ``AlertState.transition(key, active, details)``. Only a change of state returns
something: ``"raised"`` when the condition becomes active, ``"resolved"`` when it clears,
``None`` otherwise. The caller sends one message on each, so a condition that stays active
over many runs, ticks or process restarts sends one alert, and its clearing one "resolved".

The change is decided by one statement per call (``INSERT ... ON CONFLICT DO UPDATE ...
WHERE`` / ``UPDATE ... WHERE active``, both ``RETURNING``): PostgreSQL's row lock makes two
racing callers see one transition between them, never two.

``announce`` is the usual pairing of a transition with its message; messages go through
``redact`` so a secret or a piece of personal data that slipped into them is masked.

**Every admin is told once, late if need be** (control/0004). The message of a transition is
committed in the same transaction as the transition, with one delivery row per recipient;
a delivery is marked only after the send succeeded. A send that failed (Telegram down, a
connection reset, 5xx, 429 after its retries) stays pending and is retried by the next
``announce``/``deliver_pending`` (the next run or sensor tick), for the recipients not reached
yet only. Given an ``AlertChannel`` (``lib/telegram.TelegramClient``), recipients are the
admins one by one; given a plain ``send(text)`` function (the callers' ``notify_admins``),
the recipient is that function as a whole (``'*'``): it is retried while nobody got the
message, and counted delivered once its outcome reports any chat reached. A refusal that
resending cannot change (bot blocked 403, chat not found 400, bad token 401) and a message
older than ``MAX_DELIVERY_AGE`` are given up and recorded (a send function that reports no
chat at all, e.g. notifications not configured, is retried until that age). A send that Telegram accepted but
whose reply was lost may be sent again: the Bot API has no idempotency key.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import sqlalchemy as sa

from .db import Database
from .redact import redact

Transition = Literal["raised", "resolved"]
log = logging.getLogger("sync_pipelines.alerts")
EVERY_ADMIN = "*"  # the recipient of a caller's own send function (it reaches every admin)
# Older undelivered messages are given up: a day-old "offline" notice misleads more than helps.
MAX_DELIVERY_AGE = dt.timedelta(hours=24)
# Refusals that resending cannot change (Telegram's error codes).
PERMANENT_SEND_STATUSES = frozenset({400, 401, 403, 404})


@runtime_checkable
class AlertChannel(Protocol):
    """Sends to one admin at a time; ``lib/telegram.TelegramClient`` is one."""

    admin_chat_ids: list[str]

    def send(self, chat_id: str, text: str) -> object:
        """Send ``text`` to one chat; raise when it was not accepted (``status`` attribute:
        the error code, used to tell permanent refusals from transient failures)."""


Send = Callable[[str], object] | AlertChannel


@dataclass
class DeliveryReport:
    """What one ``deliver_pending`` did."""

    delivered: int = 0
    failed: int = 0  # still pending, retried next time
    gave_up: int = 0
    errors: list[str] = field(default_factory=list)  # redacted, "<recipient>: <error>"


@dataclass(frozen=True)
class AlertRecord:
    condition_key: str
    active: bool
    since: dt.datetime
    last_change: dt.datetime
    details: dict[str, Any]


def _json(details: Mapping[str, Any] | None) -> str | None:
    return None if details is None else json.dumps(dict(details), default=str)


class AlertState:
    """The ``alert_state`` table of the control database (migration control/0003)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def transition(
        self, key: str, active: bool, details: Mapping[str, Any] | None = None
    ) -> Transition | None:
        """Record the condition's current state; return the change, if it is one.

        ``details`` are stored with a change (the numbers behind it); while the state stays
        the same the stored details are kept, so the ones of the raise remain readable.
        """
        with self.db.begin() as conn:
            return _transition(conn, key, active, details)

    def transition_with_message(
        self,
        key: str,
        active: bool,
        *,
        message: Callable[[Transition], str],
        recipients: Sequence[str],
        details: Mapping[str, Any] | None = None,
        now: dt.datetime | None = None,
    ) -> Transition | None:
        """``transition`` plus, on a change, its message queued for each recipient, in one
        transaction: a crash after it leaves the message pending, never lost nor doubled."""
        now = now or dt.datetime.now(dt.UTC)
        with self.db.begin() as conn:
            change = _transition(conn, key, active, details)
            if change is None:
                return None
            text = redact(message(change))
            message_id = conn.execute(
                sa.text(
                    "INSERT INTO alert_messages (condition_key, change, text, created_at)"
                    " VALUES (:k, :c, :t, :now) RETURNING id"
                ),
                {"k": key, "c": change, "t": text, "now": now},
            ).scalar_one()
            conn.execute(
                sa.text(
                    "INSERT INTO alert_deliveries (message_id, recipient) VALUES (:m, :r)"
                    " ON CONFLICT DO NOTHING"
                ),
                [{"m": message_id, "r": str(r)} for r in recipients or [EVERY_ADMIN]],
            )
        log.info("alert %s %s", key, change)
        return change

    def deliver_pending(
        self,
        send: Send,
        *,
        prefix: str = "",
        key: str | None = None,
        now: dt.datetime | None = None,
    ) -> DeliveryReport:
        """Send every pending delivery of one condition (``key``) or of the conditions whose
        key starts with ``prefix``.

        Each delivery is locked (``FOR UPDATE SKIP LOCKED``) while it is sent and marked in
        the same transaction after the send succeeded: two deliverers never send one twice,
        and a failure leaves it pending for the next call.
        """
        now = now or dt.datetime.now(dt.UTC)
        report = DeliveryReport()
        with self.db.connect() as conn:
            pending = conn.execute(
                sa.text(
                    "SELECT d.message_id, d.recipient FROM alert_deliveries d"
                    " JOIN alert_messages m ON m.id = d.message_id"
                    " WHERE d.delivered_at IS NULL AND d.gave_up_at IS NULL"
                    " AND starts_with(m.condition_key, :p)"
                    " AND (CAST(:k AS text) IS NULL OR m.condition_key = :k)"
                    " ORDER BY d.message_id, d.recipient"
                ),
                {"p": prefix, "k": key},
            ).all()
        for message_id, recipient in pending:
            self._deliver_one(send, message_id, recipient, now, report)
        return report

    def _deliver_one(
        self, send: Send, message_id: int, recipient: str, now: dt.datetime, report: DeliveryReport
    ) -> None:
        with self.db.begin() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT m.text, m.created_at FROM alert_deliveries d"
                    " JOIN alert_messages m ON m.id = d.message_id"
                    " WHERE d.message_id = :m AND d.recipient = :r"
                    " AND d.delivered_at IS NULL AND d.gave_up_at IS NULL"
                    " FOR UPDATE OF d SKIP LOCKED"
                ),
                {"m": message_id, "r": recipient},
            ).first()
            if row is None:
                return  # delivered meanwhile, or another deliverer holds it right now
            text, created_at = row
            mark = {"m": message_id, "r": recipient, "now": now}
            if now - created_at > MAX_DELIVERY_AGE:
                conn.execute(_GIVE_UP, mark | {"e": "expired: older than the delivery window"})
                report.gave_up += 1
                return
            delivered, error, permanent = _send(send, recipient, text)
            if delivered:
                conn.execute(
                    sa.text(
                        "UPDATE alert_deliveries SET delivered_at = :now, attempts = attempts + 1,"
                        " last_error = :e WHERE message_id = :m AND recipient = :r"
                    ),
                    mark | {"e": error or None},
                )
                report.delivered += 1
                return
            report.errors.append(f"{recipient}: {error}")
            if permanent:
                conn.execute(_GIVE_UP, mark | {"e": error})
                report.gave_up += 1
                return
            conn.execute(
                sa.text(
                    "UPDATE alert_deliveries SET attempts = attempts + 1, last_error = :e"
                    " WHERE message_id = :m AND recipient = :r"
                ),
                mark | {"e": error},
            )
            report.failed += 1

    def get(self, key: str) -> AlertRecord | None:
        with self.db.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT condition_key, active, since, last_change, details FROM alert_state"
                    " WHERE condition_key = :k"
                ),
                {"k": key},
            ).first()
        if row is None:
            return None
        return AlertRecord(row[0], row[1], row[2], row[3], dict(row[4] or {}))

    def active(self, prefix: str = "") -> list[AlertRecord]:
        """Active conditions whose key starts with ``prefix``, oldest first."""
        with self.db.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT condition_key, active, since, last_change, details FROM alert_state"
                    " WHERE active AND starts_with(condition_key, :p) ORDER BY since"
                ),
                {"p": prefix},
            ).all()
        return [AlertRecord(r[0], r[1], r[2], r[3], dict(r[4] or {})) for r in rows]


def announce(
    state: AlertState,
    key: str,
    active: bool,
    *,
    raised: str | Callable[[], str],
    resolved: str | Callable[[], str],
    send: Send,
    details: Mapping[str, Any] | None = None,
) -> Transition | None:
    """``transition`` plus one message on a change, delivered to every admin once.

    The texts may be callables, built only when a change happens; messages are redacted.
    ``send`` is an ``AlertChannel`` (each admin tracked on its own) or a ``send(text)``
    function. Every call also retries this condition's earlier undelivered messages, so the
    caller's next evaluation is the retry.
    """

    def message(change: Transition) -> str:
        text = raised if change == "raised" else resolved
        return text() if callable(text) else text

    recipients = send.admin_chat_ids if isinstance(send, AlertChannel) else [EVERY_ADMIN]
    change = state.transition_with_message(
        key, active, message=message, recipients=recipients, details=details
    )
    report = state.deliver_pending(send, key=key)
    if report.errors:
        log.warning("alert %s: %s", key, "; ".join(report.errors[:5]))
    return change


_GIVE_UP = sa.text(
    "UPDATE alert_deliveries SET gave_up_at = :now, attempts = attempts + 1, last_error = :e"
    " WHERE message_id = :m AND recipient = :r"
)


def _transition(
    conn: sa.Connection, key: str, active: bool, details: Mapping[str, Any] | None
) -> Transition | None:
    params = {"k": key, "d": _json(details)}
    if active:
        changed = conn.execute(
            sa.text(
                "INSERT INTO alert_state AS a (condition_key, active, since, last_change,"
                " details) VALUES (:k, true, now(), now(), CAST(:d AS jsonb))"
                " ON CONFLICT (condition_key) DO UPDATE SET active = true, since = now(),"
                " last_change = now(), details = EXCLUDED.details WHERE NOT a.active"
                " RETURNING 1"
            ),
            params,
        ).first()
        return "raised" if changed else None
    # A condition never raised has no row and needs none: nothing to resolve.
    changed = conn.execute(
        sa.text(
            "UPDATE alert_state SET active = false, since = now(), last_change = now(),"
            " details = COALESCE(CAST(:d AS jsonb), details)"
            " WHERE condition_key = :k AND active RETURNING 1"
        ),
        params,
    ).first()
    return "resolved" if changed else None


def _send(send: Send, recipient: str, text: str) -> tuple[bool, str, bool]:
    """(delivered, error, permanent) of one attempt; never raises."""
    try:
        if isinstance(send, AlertChannel):
            send.send(recipient, text)
            return True, "", False
        outcome = send(text)
    except Exception as exc:  # noqa: BLE001 - any failure leaves the delivery pending
        status = getattr(exc, "status", None)
        error = redact(f"{type(exc).__name__}: {exc}")[:500]
        return False, error, status in PERMANENT_SEND_STATUSES
    # A notify_admins outcome: per-chat results, or why nothing was sent.
    results = getattr(outcome, "results", None)
    if results is None:
        return True, "", False
    failures = [r for r in results if not getattr(r, "ok", False)]
    error = redact("; ".join(f"{r.chat_id}: {r.error}" for r in failures))[:500]
    if len(failures) < len(results):
        return True, error, False  # someone was told; resending would repeat it to them
    if not results:
        # Nothing was sent (not configured yet, or the client failed): retried until it
        # works or the message is too old.
        reason = str(getattr(outcome, "skipped_reason", "") or "nothing sent")
        return False, redact(reason)[:500], False
    permanent = all(getattr(r, "status", None) in PERMANENT_SEND_STATUSES for r in failures)
    return False, error, permanent
