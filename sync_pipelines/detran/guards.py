"""The DETRAN alerts the users' plan asks for: many slots removed at once, login refused,
too many failed runs. Plain Python over ``agenda_slots``, ``agenda_sync_runs`` and the
alert state (lib/alerts.py); the Dagster layer turns them into checks and messages.

- **Removal guard.** A read that makes more than ``DETRAN_REMOVAL_ALERT_SHARE`` (0.30) of
  the examiner's current slots of the window vanish is recorded as read (the portal is the
  truth), but the condition is raised. While it is active, later reads compare the window's
  current slots with the count before the mass removal, so the condition stays active
  (no new message) until the slots come back (or the share falls under the threshold).
- **Login refused.** ``WrongCredentials`` (wrong password, blocked account) or
  ``UnitNotAvailable``: active until a later run logs in (or reuses a live session).
- **Failure rate.** Failed runs / finished runs of the examiner over the last 24 h, against
  ``DETRAN_FAILURE_RATE_ALERT`` (0.50).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import sqlalchemy as sa

from ..lib.alerts import AlertState
from ..lib.db import Database
from .slots import SOURCE
from .sync import SyncResult

REMOVAL_SHARE_VAR = "DETRAN_REMOVAL_ALERT_SHARE"
DEFAULT_REMOVAL_SHARE = 0.30
FAILURE_RATE_VAR = "DETRAN_FAILURE_RATE_ALERT"
DEFAULT_FAILURE_RATE = 0.50
FAILURE_RATE_HOURS = 24
LOGIN_FAILURES = ("WrongCredentials", "UnitNotAvailable")


def parse_share(name: str, raw: str | None, default: float) -> float:
    """A share in [0, 1] written ``0.3`` or ``30%`` (empty: ``default``); ``name`` is the
    variable it came from, for the error."""
    raw = (raw or "").strip()
    if not raw:
        return default
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a share like 0.3 or 30%, got {raw!r}") from None
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be between 0 and 1 (or 0% and 100%), got {raw!r}")
    return value


def removal_key(result: SyncResult) -> str:
    window = result.window_start.isoformat()
    if result.window_end != result.window_start:
        window += f"..{result.window_end.isoformat()}"
    return f"detran:removals:{result.usuario_id}:{window}"


def login_key(usuario_id: int) -> str:
    return f"detran:login:{usuario_id}"


@dataclass(frozen=True)
class RemovalGuard:
    key: str
    before: int  # current slots of the window before the mass removal (or before this read)
    vanished: int  # of those, how many are gone
    share: float
    threshold: float
    run_before: int  # this read's own numbers
    run_vanished: int
    carried_over: bool  # judged against the count stored when the condition was raised

    @property
    def active(self) -> bool:
        return self.share > self.threshold

    def details(self) -> dict:
        return asdict(self) | {"share": round(self.share, 4)}


def _current(db: Database, usuario_id: int, dates: list) -> int:
    with db.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(*) FROM agenda_slots WHERE source = :s AND usuario_id = :u"
                " AND data = ANY(:d) AND is_current"
            ),
            {"s": SOURCE, "u": usuario_id, "d": dates},
        ).scalar_one()


def removal_guard(
    db: Database, result: SyncResult, alerts: AlertState | None, threshold: float
) -> RemovalGuard | None:
    """Judge the run's removals; None when no day was read (nothing to judge)."""
    read = [d for d in result.days if d.ok]
    if not read:
        return None
    key = removal_key(result)
    run_before = sum(d.current_before for d in read)
    run_vanished = sum(d.removed for d in read)
    run_share = run_vanished / run_before if run_before else 0.0
    guard = RemovalGuard(
        key, run_before, run_vanished, run_share, threshold, run_before, run_vanished, False
    )
    if guard.active or alerts is None:
        return guard
    raised = alerts.get(key)
    if raised is None or not raised.active:
        return guard
    # The condition is on: this read removing nothing new does not mean the slots are back.
    baseline = int(raised.details.get("before") or 0)
    if not baseline:
        return guard
    missing = max(0, baseline - _current(db, result.usuario_id, [d.date for d in read]))
    return RemovalGuard(
        key, baseline, missing, missing / baseline, threshold, run_before, run_vanished, True
    )


def login_refused(result: SyncResult) -> bool | None:
    """True: the portal refused the login; False: a login or live session worked; None: unknown."""
    kinds = {result.fatal_kind, *(d.error_kind for d in result.days)}
    if kinds & set(LOGIN_FAILURES):
        return True
    if result.logins or result.session_reused:
        return False
    return None


@dataclass(frozen=True)
class FailureRate:
    failed: int
    finished: int
    threshold: float
    hours: int = FAILURE_RATE_HOURS

    @property
    def rate(self) -> float:
        return self.failed / self.finished if self.finished else 0.0

    @property
    def too_high(self) -> bool:
        return self.rate > self.threshold


def failure_rate(
    db: Database, usuario_id: int, threshold: float, hours: int = FAILURE_RATE_HOURS
) -> FailureRate:
    with db.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT count(*) FILTER (WHERE status = 'failed') AS failed, count(*) AS finished"
                " FROM agenda_sync_runs WHERE source = :s AND usuario_id = :u"
                " AND status <> 'running' AND started_at > now() - make_interval(hours => :h)"
            ),
            {"s": SOURCE, "u": usuario_id, "h": hours},
        ).one()
    return FailureRate(row.failed, row.finished, threshold, hours)
