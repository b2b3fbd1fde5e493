"""One examiner's agenda for some days: portal → ``agenda_slots``, with a row in the run log.

``sync_examiner`` is plain Python (no Dagster): it takes the database, the examiner, a
portal client and the session cache, and returns a ``SyncResult``. Its rules:

- one sync per examiner at a time: a PostgreSQL advisory lock on a dedicated connection
  (``LockNotAvailable`` at once for the second caller, before it touches the portal);
- a cached session is reused when the portal confirms it; an expired session during the
  run logs in again once;
- an examiner who works at several traffic units may work at a different one each day,
  so every unit the portal offers is read (the session logs in at each in turn) and a day
  is written only once all its units were read;
- each day read successfully is written in one transaction: upsert of its bookings
  (unchanged ones are not rewritten), then the examiner's current slots of that date that
  no unit's page shows any more become ``removed`` (history kept). A day whose page failed,
  expired or was not recognised writes nothing and removes nothing; a day with a row that
  could not be read stores the rows it could read and removes nothing (it cannot prove
  what is gone), and the run names that row;
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

from ..lib.crypto import CredentialsKeyError
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
from .examiners import KEY_VAR, Examiner
from .parse import UnreadableRow
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


# Refusals of the login itself: nothing more can be read in this run, and the admins are told.
LOGIN_REFUSALS = ("WrongCredentials", "UnitNotAvailable")


def lock_name(usuario_id: int) -> str:
    return f"detran:examiner:{usuario_id}"


@dataclass
class SyncOptions:
    # How stale last_seen_at of an unchanged, still-present slot may get before it is
    # refreshed: 0 refreshes it on every read (a write per slot per run).
    touch_interval: dt.timedelta = dt.timedelta(hours=1)
    logout_after_run: bool = False
    holder_hint: str = ""  # e.g. the Dagster run id, shown to the run that cannot lock
    # The key that decrypts stored passwords (DETRAN_CREDENTIALS_KEY), handed over by the
    # caller; None: examiners.py reads it from the process environment (the CLI's case).
    credentials_key: str | None = None
    # The Dagster run, written on every slot it changes and on its run-log row (sync_run_id);
    # None outside Dagster (the CLI).
    run_id: str | None = None


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
    units: list[str] = field(default_factory=list)  # the units read for this day
    unreadable_rows: int = 0  # rows not stored: the day removed nothing
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

    def _key_env(self) -> dict[str, str] | None:
        key = self.options.credentials_key
        return {KEY_VAR: key} if key else None

    def execute(self) -> SyncResult:
        started = time.monotonic()
        self.result.run_id = self._start_run()
        fatal: str | None = None
        details: dict = {}
        try:
            self.portal = self.portal_factory(self.examiner.credentials(self._key_env()))
            self._open_session()
            self._read_and_write()
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
                    " status, totals, started_at, sync_run_id) VALUES (:s, :u, :ws, :we,"
                    " 'running', CAST(:t AS jsonb), now(), :run) RETURNING id"
                ),
                {
                    "run": self.options.run_id,
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
            errors.append(describe_row_problems(result.row_problems))
        result.error = fatal or ("; ".join(errors) if errors else None)
        refused = {result.fatal_kind, *(d.error_kind for d in result.days)} & set(LOGIN_REFUSALS)
        if refused:
            # What the login alert and the failure-rate check read, kept with the run.
            details["login_failure"] = sorted(refused)[0]
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
        if cached is not None and not cached.context.units:
            # Cached before the units were recorded: a login learns which units to read.
            self.sessions.drop(usuario_id)
            cached = None
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

    def _login(self, unit: str | None = None) -> None:
        self.portal.login(unit)
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

    def _read_and_write(self) -> None:
        """Read every day at every unit of the examiner, then write each day.

        Unit by unit (one login each), since a session belongs to the unit chosen at its
        login; days are written after their last unit's read, so a one-unit examiner's days
        are written as they are read."""
        context = self.portal.context
        units = [context.unit_code, *(u for u in context.units if u != context.unit_code)]
        reads: dict[dt.date, list[DayAgenda]] = {day: [] for day in self.days}
        failed: dict[dt.date, DayOutcome] = {}
        for position, unit in enumerate(units):
            last_unit = position == len(units) - 1
            if unit != self.portal.context.unit_code:
                self._switch_unit(unit)
            for day in self.days:
                outcome = None if day in failed else self._read_day(day, reads[day])
                if outcome is not None:
                    failed[day] = outcome
                    if outcome.error_kind in LOGIN_REFUSALS:
                        # Nothing more can be read: the failed days not recorded yet are.
                        recorded = {d.date for d in self.result.days}
                        self.result.days += [
                            failed[d] for d in self.days if d in failed and d not in recorded
                        ]
                        return
                if last_unit:
                    self.result.days.append(failed.get(day) or self._write_day(day, reads[day]))

    def _switch_unit(self, unit: str) -> None:
        log.info("examiner %s: reading unit %s", self.examiner.usuario_id, unit)
        # Logging out first: a second login over a live session would have to force it out.
        try:
            self.portal.logout()
        except (PortalError, HttpError) as exc:
            log.warning(
                "examiner %s: logout before switching unit: %s", self.examiner.usuario_id, exc
            )
        self._login(unit)
        if self.portal.context.unit_code != unit:
            raise UnrecognisedPage(
                f"asked to log in at unit {unit}, the portal logged in at "
                f"{self.portal.context.unit_code}"
            )

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
            self._login(self.portal.context.unit_code if self.portal.context else None)
            return self.portal.fetch_day(day)

    def _read_day(self, day: dt.date, into: list[DayAgenda]) -> DayOutcome | None:
        """Read one day at the current unit into ``into``; a failed read's outcome, or None."""
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
        into.append(agenda)
        return None

    def _write_day(self, day: dt.date, agendas: list[DayAgenda]) -> DayOutcome:
        AdvisoryLock.ensure_held_by(self.db, lock_name(self.examiner.usuario_id))
        now = dt.datetime.now(dt.UTC)
        usuario_id = self.examiner.usuario_id
        rows: list[dict] = []
        problems: list[dict] = []
        for agenda in agendas:
            built = slot_rows(
                agenda,
                usuario_id=usuario_id,
                profession=self.examiner.profession,
                now=now,
                unit_label=agenda.unit_label,
            )
            rows += built.rows
            problems += built.problems
        self.result.row_problems.extend(problems)
        # Every row of every unit read: what none of them shows is gone. Otherwise a slot
        # missing from the rows may be the row that could not be read: nothing is removed.
        complete = not problems
        uids = [r["external_uid"] for r in rows]
        key = {"s": SOURCE, "u": usuario_id, "d": day}
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
                rows,
                ["source", "external_uid"],
                columns=SLOT_COLUMNS,
                update_columns=UPDATE_COLUMNS,
                stamp={"sync_run_id": self.options.run_id},
            )
            previous_read = conn.execute(
                sa.text(
                    "SELECT last_read_at FROM agenda_day_reads WHERE usuario_id = :u AND data = :d"
                    " FOR UPDATE"
                ),
                key,
            ).scalar()
            # The pages were read: what they no longer show was cancelled or moved. It was
            # last seen at the previous complete read of this day.
            removed = (
                0
                if not complete
                else conn.execute(
                    sa.text(
                        "UPDATE agenda_slots SET status = 'removed', is_current = FALSE,"
                        " sync_run_id = :run, last_seen_at = GREATEST(COALESCE(last_seen_at, first_seen_at),"
                        " COALESCE(CAST(:prev AS timestamptz), last_seen_at))"
                        " WHERE source = :s AND usuario_id = :u AND data = :d AND is_current"
                        " AND NOT (external_uid = ANY(CAST(:uids AS text[])))"
                    ),
                    {**key, "prev": previous_read, "uids": uids, "run": self.options.run_id},
                ).rowcount
            )
            touched = conn.execute(
                sa.text(
                    "UPDATE agenda_slots SET last_seen_at = :now"
                    " WHERE source = :s AND usuario_id = :u AND data = :d AND is_current"
                    " AND external_uid = ANY(CAST(:uids AS text[]))"
                    " AND (last_seen_at IS NULL OR last_seen_at <= :stale)"
                ),
                {**key, "uids": uids, "now": now, "stale": now - self.options.touch_interval},
            ).rowcount
            if complete:
                # Only a complete read says when every current slot was last seen.
                conn.execute(
                    sa.text(
                        "INSERT INTO agenda_day_reads (usuario_id, data, last_read_at, bookings)"
                        " VALUES (:u, :d, :now, :n) ON CONFLICT (usuario_id, data) DO UPDATE"
                        " SET last_read_at = EXCLUDED.last_read_at, bookings = EXCLUDED.bookings"
                    ),
                    {**key, "now": now, "n": len(rows)},
                )
        if removed:
            log.info(
                "examiner %s %s: %d booking(s) no longer on the portal, marked removed",
                usuario_id,
                day,
                removed,
            )
        if not complete:
            log.warning(
                "examiner %s %s: %s; nothing marked removed for this day",
                usuario_id,
                day,
                describe_row_problems(problems),
            )
        return DayOutcome(
            day,
            True,
            bookings=len(rows) + len(problems),
            inserted=upserted.inserted,
            updated=upserted.updated,
            unchanged=upserted.unchanged,
            removed=removed,
            touched=touched,
            current_before=current_before,
            units=[a.unit_code for a in agendas],
            unreadable_rows=len(problems),
        )


def describe_row_problems(problems: list[dict], limit: int = 5) -> str:
    """Which rows could not be stored, by day, unit and table row; no personal data."""
    parts = []
    for p in problems[:limit]:
        where = UnreadableRow(p["row"], p["reason"], p.get("after")).describe()
        parts.append(f"{p['date']} unit {p['unit']} {where}")
    more = f" and {len(problems) - limit} more" if len(problems) > limit else ""
    return (
        f"{len(problems)} booking row(s) could not be read, so nothing was marked removed on "
        f"their day(s): {'; '.join(parts)}{more}"
    )


def describe_examiner(examiner: Examiner) -> str:
    """How an examiner appears in logs and metadata: id and masked CPF, never the CPF."""
    return f"examiner {examiner.usuario_id} ({mask_cpf(examiner.cpf)}, {examiner.profession})"
