"""HubSoft health monitoring: one check per sensor tick, the known state, its transitions.

The state machine the sensor drives (plain Python, so it is tested without Dagster):
- while **online**, a quick check (does HubSoft answer at all, no token spent) every tick and
  a full check (token + authenticated GET, timed) every ``FULL_CHECK_EVERY``; a failed quick
  check is confirmed by a full check before HubSoft is declared offline, so one lost packet
  does not page the admins;
- while **offline** or **unknown**, every tick is a full check: coming back is noticed within
  a minute and recovery starts at once.
Every check is recorded in ``hubsoft_health_checks`` (with the transition it caused), which
the report and the schedules read.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass

import sqlalchemy as sa

from ..lib.db import Database
from ..lib.redact import redact
from .client import HealthCheck, HubSoftClient

FULL_CHECK_EVERY = dt.timedelta(minutes=5)
ONLINE, OFFLINE, UNKNOWN = "online", "offline", "unknown"


@dataclass(frozen=True)
class MonitorState:
    """What the sensor keeps in its cursor between ticks."""

    state: str = UNKNOWN
    since: str | None = None  # ISO time of the last transition
    last_full_at: str | None = None  # ISO time of the last full check

    def to_cursor(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_cursor(cls, cursor: str | None) -> MonitorState | None:
        if not cursor:
            return None
        try:
            data = json.loads(cursor)
            return cls(**{k: data.get(k) for k in ("state", "since", "last_full_at")})
        except (ValueError, TypeError):
            return None  # an unreadable cursor: start from the recorded checks instead


@dataclass(frozen=True)
class TickOutcome:
    check: HealthCheck
    state: MonitorState
    transition: str | None  # "online" | "offline" when the state changed
    previous: MonitorState


def record_check(db: Database, check: HealthCheck, transition: str | None = None) -> None:
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO hubsoft_health_checks "
                "(checked_at, kind, online, latency_ms, error, transition) "
                "VALUES (:t, :k, :o, :l, :e, :tr)"
            ),
            {
                "t": check.checked_at,
                "k": check.kind,
                "o": check.online,
                "l": check.latency_ms,
                "e": redact(check.error)[:500] or None,
                "tr": transition,
            },
        )


def latest_full_check(db: Database) -> dict | None:
    """The newest full check as a dict (``checked_at``, ``online``, ``latency_ms``, ``error``)."""
    with db.connect() as conn:
        row = (
            conn.execute(
                sa.text(
                    "SELECT checked_at, online, latency_ms, error FROM hubsoft_health_checks "
                    "WHERE kind = 'full' ORDER BY checked_at DESC, id DESC LIMIT 1"
                )
            )
            .mappings()
            .first()
        )
    return dict(row) if row else None


def state_from_history(db: Database) -> MonitorState:
    """The known state when the sensor has no cursor (first tick, or the cursor was reset)."""
    with db.connect() as conn:
        last = conn.execute(
            sa.text(
                "SELECT checked_at, online FROM hubsoft_health_checks "
                "ORDER BY checked_at DESC, id DESC LIMIT 1"
            )
        ).first()
        since = conn.execute(
            sa.text(
                "SELECT max(checked_at) FROM hubsoft_health_checks WHERE transition IS NOT NULL"
            )
        ).scalar()
    if last is None:
        return MonitorState()
    return MonitorState(
        state=ONLINE if last.online else OFFLINE,
        since=since.isoformat() if since else None,
        last_full_at=None,
    )


def monitor_tick(
    client: HubSoftClient,
    db: Database,
    previous: MonitorState,
    now: dt.datetime,
    *,
    full_every: dt.timedelta = FULL_CHECK_EVERY,
) -> TickOutcome:
    """One sensor tick: check, record, and say whether HubSoft changed state."""
    last_full = dt.datetime.fromisoformat(previous.last_full_at) if previous.last_full_at else None
    full_due = previous.state != ONLINE or last_full is None or now - last_full >= full_every
    if full_due:
        check = client.health_check()
    else:
        check = client.probe()
        if not check.online:
            check = client.health_check()  # confirm before declaring an outage
    transition: str | None = None
    if check.online and previous.state == OFFLINE:
        transition = ONLINE
    elif not check.online and previous.state != OFFLINE:
        # unknown -> offline is announced too: an outage at start-up is still an outage.
        transition = OFFLINE
    record_check(db, check, transition)
    state = MonitorState(
        state=ONLINE if check.online else OFFLINE,
        since=now.isoformat() if transition or not previous.since else previous.since,
        last_full_at=now.isoformat() if check.kind == "full" else previous.last_full_at,
    )
    return TickOutcome(check=check, state=state, transition=transition, previous=previous)


def transition_message(
    outcome: TickOutcome, pending_tickets: int, *, offline: bool | None = None
) -> str:
    """The admin notification for a transition (no personal data in it); ``offline`` says
    which one when the caller decided it (the alert state), else the tick's transition."""
    when = outcome.check.checked_at.astimezone(dt.timezone(dt.timedelta(hours=-3)))
    stamp = when.strftime("%d/%m/%Y %H:%M")
    if offline is None:
        offline = outcome.transition == OFFLINE
    if offline:
        return (
            f"🔴 HubSoft OFFLINE desde {stamp} (BRT).\n"
            f"Erro: {redact(outcome.check.error)[:300]}\n"
            "O bot continua registrando chamados localmente (protocolos LOC…); "
            "eles serão enviados ao HubSoft quando ele voltar."
        )
    duration = ""
    if outcome.previous.since:
        down_since = dt.datetime.fromisoformat(outcome.previous.since)
        minutes = int((outcome.check.checked_at - down_since).total_seconds() // 60)
        duration = f" após {minutes} min fora do ar"
    latency = outcome.check.latency_ms or 0.0
    return (
        f"🟢 HubSoft ONLINE novamente às {stamp} (BRT){duration}; latência {latency:.0f} ms.\n"
        f"{pending_tickets} chamado(s) aguardando sincronização: recuperação iniciada."
    )
