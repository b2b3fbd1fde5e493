"""One examiner's agenda for some days: portal → ``agenda_slots``, with a row in the run log.

``sync_examiner`` is plain Python (no Dagster): it takes the database, the examiner, a
portal client and the session cache, and returns a ``SyncResult``. Its rules:

- one sync per examiner at a time: a PostgreSQL advisory lock on a dedicated connection
  (``LockNotAvailable`` at once for the second caller, before it touches the portal);
- a cached session is reused when the portal confirms it; an expired session during the
  run logs in again once;
- each day read successfully is written in one transaction: upsert of its bookings
  (unchanged ones are not rewritten), then the examiner's current slots of that date that
  the page no longer shows become ``removed`` (history kept). A day whose page failed,
  expired or was not recognised writes nothing and removes nothing;
- one ``agenda_sync_runs`` row per call: ``running`` at start, then ``success`` (every day
  read), ``partial`` (some days, or some rows, could not be read) or ``failed``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from ..lib.db import Database
from ..lib.http import HttpError
from ..lib.locks import AdvisoryLock
from ..lib.redact import install_log_redaction, mask_cpf, redact
from ..lib.upsert import bulk_upsert
from .client import (
    Credentials,
    DayAgenda,
    PortalClient,
    PortalError,
    SessionExpired,
    UnrecognisedPage,
)
from .examiners import CredentialsKeyError, Examiner
from .sessions import SessionCache
from .slots import SOURCE, slot_rows

log = logging.getLogger("sync_pipelines.detran.sync")
install_log_redaction("sync_pipelines.detran")

# Columns whose change is a real change of the booking; first/last_seen_at are left out so
# an unchanged slot is not rewritten (last_seen_at is refreshed at most every touch_interval).
UPDATE_COLUMNS = [
    "unidade_code",
    "servico_code",
    "data",
    "hora",
    "status",
    "is_current",
    "payload",
    "content_hash",
    "usuario_id",
]
SLOT_COLUMNS = [
    "source",
    "external_uid",
    *UPDATE_COLUMNS,
    "first_seen_at",
    "last_seen_at",
]


def lock_name(usuario_id: int) -> str:
    return f"detran:examiner:{usuario_id}"


@dataclass
class SyncOptions:
    # How stale last_seen_at of an unchanged, still-present slot may get before it is
    # refreshed: 0 refreshes it on every read (a write per slot per run).
    touch_interval: dt.timedelta = dt.timedelta(hours=1)
    logout_after_run: bool = False
    holder_hint: str = ""  # e.g. the Dagster run id, shown to the run that cannot lock


@dataclass
class DayOutcome:
    date: dt.date
    ok: bool
    bookings: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    touched: int = 0
    current_before: int = 0  # the examiner's current slots of the day before this read
    error: str | None = None
    error_kind: str | None = None
    saved_page: str | None = None


@dataclass
class SyncResult:
    run_id: int
    usuario_id: int
    window_start: dt.date
    window_end: dt.date
    status: str = "running"
    days: list[DayOutcome] = field(default_factory=list)
    row_problems: list[dict] = field(default_factory=list)
    error: str | None = None
    fatal_kind: str | None = None  # the exception class that stopped the run, if any
    logins: int = 0
    session_reused: bool = False
    pages_saved: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def _sum(self, name: str) -> int:
        return sum(getattr(d, name) for d in self.days)

    @property
    def totals(self) -> dict[str, int]:
        return {
            "inserted": self._sum("inserted"),
            "updated": self._sum("updated"),
            "removed": self._sum("removed"),
            "unchanged": self._sum("unchanged"),
        }

    @property
    def days_ok(self) -> int:
        return sum(d.ok for d in self.days)

    @property
    def days_failed(self) -> int:
        return sum(not d.ok for d in self.days)


PortalFactory = Callable[[Credentials], PortalClient]


def sync_examiner(
    db: Database,
    examiner: Examiner,
    dates: Sequence[dt.date],
    *,
    portal_factory: PortalFactory,
    sessions: SessionCache | None = None,
    options: SyncOptions | None = None,
) -> SyncResult:
    """Sync ``dates`` of one examiner. Raises ``LockNotAvailable`` when another sync of the
    same examiner runs; every other failure is recorded in the result and the run log.
    ``portal_factory`` builds the client from the examiner's decrypted credentials."""
    options = options or SyncOptions()
    if not dates:
        raise ValueError("no dates to sync")
    days = sorted(set(dates))
    with AdvisoryLock(db, lock_name(examiner.usuario_id), holder_hint=options.holder_hint):
        return _Run(db, examiner, days, portal_factory, sessions, options).execute()


class _Run:
    def __init__(
        self,
        db: Database,
        examiner: Examiner,
        days: list[dt.date],
        portal_factory: PortalFactory,
        sessions: SessionCache | None,
        options: SyncOptions,
    ) -> None:
        self.db = db
        self.examiner = examiner
        self.days = days
        self.portal_factory = portal_factory
        self.portal: PortalClient | None = None
        self.sessions = sessions
        self.options = options
        self.relogged = False
        self.result = SyncResult(0, examiner.usuario_id, days[0], days[-1])

    def execute(self) -> SyncResult:
        started = time.monotonic()
        self.result.run_id = self._start_run()
        fatal: str | None = None
        details: dict = {}
        try:
            self.portal = self.portal_factory(self.examiner.credentials())
            self._open_session()
            for day in self.days:
                outcome = self._sync_day(day)
                self.result.days.append(outcome)
                if outcome.error_kind in ("WrongCredentials", "UnitNotAvailable"):
                    break
        except (PortalError, HttpError, CredentialsKeyError) as exc:
            fatal = f"{type(exc).__name__}: {redact(exc)}"
            self.result.fatal_kind = type(exc).__name__
            log.warning("examiner %s: %s", self.examiner.usuario_id, fatal)
        except Exception as exc:  # recorded in the run log, then re-raised for the caller
            fatal = f"{type(exc).__name__}: {redact(exc)}"
            details["traceback"] = redact(traceback.format_exc())
            self._finish(fatal, details, started)
            raise
        finally:
            self._close_session()
        self._finish(fatal, details, started)
        return self.result

    # ---- the run log ----------------------------------------------------------------

    def _start_run(self) -> int:
        with self.db.begin() as conn:
            # We hold the examiner's lock, so a 'running' row of theirs is a crashed run.
            conn.execute(
                sa.text(
                    "UPDATE agenda_sync_runs SET status = 'failed', finished_at = now(),"
                    " error = 'interrupted: the process running this sync stopped before it ended'"
                    " WHERE source = :s AND usuario_id = :u AND status = 'running'"
                ),
                {"s": SOURCE, "u": self.examiner.usuario_id},
            )
            return conn.execute(
                sa.text(
                    "INSERT INTO agenda_sync_runs (source, usuario_id, window_start, window_end,"
                    " status, totals, started_at) VALUES (:s, :u, :ws, :we, 'running',"
                    " CAST(:t AS jsonb), now()) RETURNING id"
                ),
                {
                    "s": SOURCE,
                    "u": self.examiner.usuario_id,
                    "ws": self.days[0],
                    "we": self.days[-1],
                    "t": '{"inserted": 0, "updated": 0, "removed": 0, "unchanged": 0}',
                },
            ).scalar_one()

    def _finish(self, fatal: str | None, details: dict, started: float) -> None:
        result = self.result
        failed_days = [d for d in result.days if not d.ok]
        if fatal or not result.days_ok:
            result.status = "failed"
        elif failed_days or result.row_problems or len(result.days) < len(self.days):
            result.status = "partial"
        else:
            result.status = "success"
        errors = [f"{d.date.isoformat()}: {d.error}" for d in failed_days]
        if result.row_problems:
            errors.append(f"{len(result.row_problems)} booking(s) could not be stored")
        result.error = fatal or ("; ".join(errors) if errors else None)
        if failed_days:
            details["days"] = [
                {
                    "date": d.date.isoformat(),
                    "kind": d.error_kind,
                    "error": d.error,
                    "saved_page": d.saved_page,
                }
                for d in failed_days
            ]
        if result.row_problems:
            details["rows"] = result.row_problems
        result.seconds = time.monotonic() - started
        result.logins = self.portal.logins if self.portal else 0
        result.pages_saved = [str(p) for p in self.portal.pages_saved] if self.portal else []
        details["logins"] = result.logins
        details["session_reused"] = result.session_reused
        with self.db.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE agenda_sync_runs SET status = :st, totals = CAST(:t AS jsonb),"
                    " error = :e, error_details = CAST(:d AS jsonb), finished_at = now()"
                    " WHERE id = :id"
                ),
                {
                    "st": result.status,
                    "t": json.dumps(result.totals),
                    "e": result.error,
                    "d": json.dumps(details),
                    "id": result.run_id,
                },
            )
        log.info(
            "examiner %s %s..%s: %s %s",
            self.examiner.usuario_id,
            self.days[0],
            self.days[-1],
            result.status,
            result.totals,
        )

    # ---- the portal session ---------------------------------------------------------

    def _open_session(self) -> None:
        usuario_id = self.examiner.usuario_id
        cached = self.sessions.load(usuario_id) if self.sessions else None
        if cached is not None:
            self.portal.restore(cached.cookies, cached.context)
            try:
                alive = self.portal.session_alive()
            except HttpError:
                alive = False
            if alive:
                self.result.session_reused = True
                return
            self.sessions.drop(usuario_id)
        self._login()

    def _login(self) -> None:
        self.portal.login()
        if self.sessions is not None and self.portal.context is not None:
            self.sessions.save(
                self.examiner.usuario_id, self.portal.cookies(), self.portal.context, fresh=True
            )

    def _close_session(self) -> None:
        if self.portal is None:
            return
        if self.portal.context is None:
            self.portal.close()
            return
        try:
            if self.options.logout_after_run:
                if self.sessions is not None:
                    self.sessions.drop(self.examiner.usuario_id)
                self.portal.logout()
            elif self.sessions is not None:
                self.sessions.save(
                    self.examiner.usuario_id, self.portal.cookies(), self.portal.context
                )
        except (PortalError, HttpError) as exc:
            log.warning("examiner %s: closing the session: %s", self.examiner.usuario_id, exc)
        finally:
            self.portal.close()

    # ---- one day --------------------------------------------------------------------

    def _fetch(self, day: dt.date) -> DayAgenda:
        try:
            return self.portal.fetch_day(day)
        except SessionExpired:
            if self.relogged:
                raise
            # Once per run: a session that keeps expiring points at something else.
            self.relogged = True
            log.info("examiner %s: session expired, logging in again", self.examiner.usuario_id)
            if self.sessions is not None:
                self.sessions.drop(self.examiner.usuario_id)
            self._login()
            return self.portal.fetch_day(day)

    def _sync_day(self, day: dt.date) -> DayOutcome:
        try:
            agenda = self._fetch(day)
        except UnrecognisedPage as exc:
            return DayOutcome(
                day,
                False,
                error=redact(exc),
                error_kind="UnrecognisedPage",
                saved_page=str(exc.saved_to) if exc.saved_to else None,
            )
        except (PortalError, HttpError) as exc:
            return DayOutcome(day, False, error=redact(exc), error_kind=type(exc).__name__)
        if agenda.unknown_columns:
            log.warning(
                "examiner %s %s: columns not mapped (kept in payload.extras): %s",
                self.examiner.usuario_id,
                day,
                ", ".join(agenda.unknown_columns),
            )
        return self._write_day(agenda)

    def _write_day(self, agenda: DayAgenda) -> DayOutcome:
        AdvisoryLock.ensure_held_by(self.db, lock_name(self.examiner.usuario_id))
        now = dt.datetime.now(dt.UTC)
        usuario_id = self.examiner.usuario_id
        context = self.portal.context
        same_unit = context is not None and context.unit_code == agenda.unit_code
        built = slot_rows(
            agenda,
            usuario_id=usuario_id,
            profession=self.examiner.profession,
            now=now,
            unit_label=context.unit_label if same_unit else "",
        )
        self.result.row_problems.extend(built.problems)
        uids = [r["external_uid"] for r in built.rows]
        key = {"s": SOURCE, "u": usuario_id, "d": agenda.date}
        with self.db.begin() as conn:
            # Counted before the upsert, for the removal guard (guards.py): the share of the
            # day's current bookings this read makes vanish.
            current_before = conn.execute(
                sa.text(
                    "SELECT count(*) FROM agenda_slots"
                    " WHERE source = :s AND usuario_id = :u AND data = :d AND is_current"
                ),
                key,
            ).scalar_one()
            upserted = bulk_upsert(
                conn,
                f"{self.db.schema}.agenda_slots" if self.db.schema else "agenda_slots",
                built.rows,
                ["source", "external_uid"],
                columns=SLOT_COLUMNS,
                update_columns=UPDATE_COLUMNS,
            )
            previous_read = conn.execute(
                sa.text(
                    "SELECT last_read_at FROM agenda_day_reads WHERE usuario_id = :u AND data = :d"
                    " FOR UPDATE"
                ),
                key,
            ).scalar()
            # The page was read: what it no longer shows was cancelled or moved. It was last
            # seen at the previous successful read of this day.
            removed = conn.execute(
                sa.text(
                    "UPDATE agenda_slots SET status = 'removed', is_current = FALSE,"
                    " last_seen_at = GREATEST(COALESCE(last_seen_at, first_seen_at),"
                    " COALESCE(CAST(:prev AS timestamptz), last_seen_at))"
                    " WHERE source = :s AND usuario_id = :u AND data = :d AND is_current"
                    " AND NOT (external_uid = ANY(CAST(:uids AS text[])))"
                ),
                {**key, "prev": previous_read, "uids": uids},
            ).rowcount
            touched = conn.execute(
                sa.text(
                    "UPDATE agenda_slots SET last_seen_at = :now"
                    " WHERE source = :s AND usuario_id = :u AND data = :d AND is_current"
                    " AND external_uid = ANY(CAST(:uids AS text[]))"
                    " AND (last_seen_at IS NULL OR last_seen_at <= :stale)"
                ),
                {**key, "uids": uids, "now": now, "stale": now - self.options.touch_interval},
            ).rowcount
            conn.execute(
                sa.text(
                    "INSERT INTO agenda_day_reads (usuario_id, data, last_read_at, bookings)"
                    " VALUES (:u, :d, :now, :n) ON CONFLICT (usuario_id, data) DO UPDATE"
                    " SET last_read_at = EXCLUDED.last_read_at, bookings = EXCLUDED.bookings"
                ),
                {**key, "now": now, "n": len(agenda.bookings)},
            )
        if removed:
            log.info(
                "examiner %s %s: %d booking(s) no longer on the portal, marked removed",
                usuario_id,
                agenda.date,
                removed,
            )
        return DayOutcome(
            agenda.date,
            True,
            bookings=len(agenda.bookings),
            inserted=upserted.inserted,
            updated=upserted.updated,
            unchanged=upserted.unchanged,
            removed=removed,
            touched=touched,
            current_before=current_before,
        )


def describe_examiner(examiner: Examiner) -> str:
    """How an examiner appears in logs and metadata: id and masked CPF, never the CPF."""
    return f"examiner {examiner.usuario_id} ({mask_cpf(examiner.cpf)}, {examiner.profession})"
