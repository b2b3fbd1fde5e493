"""Export jobs: one row of ``gestao_scouter_export_jobs`` per export of a period.

A job walks its period day by day (each day is one partition run of the export asset):
``processing_date`` + ``cursor_*`` say how far the current day got, ``last_completed_date``
which days are done. The actions users take on a job:

- **pause**: status ``paused``; the running export sees it before its next batch and stops
  there (the batch in flight finishes and is recorded);
- **resume**: back to ``running`` from where it stopped (the day and keyset position);
- **reset**: progress, counts and the job's error rows cleared, back to ``pending``.

Resume and reset bump ``generation`` so the driver sensor's run keys are new again.
A job started without ``end_date`` covers up to the day it was started (São Paulo), stored
as its ``end_date``; like every day, that one is done only once it is final (source.py), so
the job completes a little after that day has ended.

A day stays ``processing_date`` across passes until it is final: ``pass_started_at`` is the
start of the pass under way, ``next_pass_at`` when the next pass of a day not final yet is
due, and the cursor of a day between passes is ``(instant, None)``: re-read from there.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..lib.db import Database
from .source import Keyset, today_sao_paulo

JOBS = "gestao_scouter_export_jobs"
ERRORS = "gestao_scouter_export_errors"
ACTIVE = ("pending", "running")


class JobStateError(RuntimeError):
    """An action that does not apply to the job in its current status (or no such job)."""


@dataclass(frozen=True)
class ExportJob:
    id: int
    status: str
    start_date: dt.date
    end_date: dt.date | None
    processing_date: dt.date | None
    last_completed_date: dt.date | None
    total_leads: int
    exported_leads: int
    error_leads: int
    skipped_leads: int
    pause_reason: str | None
    field_mappings: dict[str, Any]
    cursor: Keyset | None
    generation: int
    origin: str
    last_error: str | None
    started_at: dt.datetime | None
    pass_started_at: dt.datetime | None = None
    next_pass_at: dt.datetime | None = None

    def last_day(self, today: dt.date) -> dt.date:
        return min(self.end_date, today) if self.end_date else today

    def next_day(self, today: dt.date) -> dt.date | None:
        """The day to export next, or None when every day of the period is done."""
        if self.processing_date is not None:
            return self.processing_date
        day = (
            self.last_completed_date + dt.timedelta(days=1)
            if self.last_completed_date
            else self.start_date
        )
        return day if day <= self.last_day(today) else None


def _job(row: sa.Row) -> ExportJob:
    m = row._mapping
    cursor = (
        Keyset(m["cursor_updated_at"], m["cursor_id"])
        if m["cursor_updated_at"] is not None
        else None
    )  # cursor_id None: a re-read from cursor_updated_at on
    return ExportJob(
        id=m["id"],
        status=m["status"],
        start_date=m["start_date"],
        end_date=m["end_date"],
        processing_date=m["processing_date"],
        last_completed_date=m["last_completed_date"],
        total_leads=m["total_leads"],
        exported_leads=m["exported_leads"],
        error_leads=m["error_leads"],
        skipped_leads=m["skipped_leads"],
        pause_reason=m["pause_reason"],
        field_mappings=dict(m["field_mappings"] or {}),
        cursor=cursor,
        generation=m["generation"],
        origin=m["origin"],
        last_error=m["last_error"],
        started_at=m["started_at"],
        pass_started_at=m["pass_started_at"],
        next_pass_at=m["next_pass_at"],
    )


def get_job(db: Database, job_id: int, conn: sa.Connection | None = None) -> ExportJob:
    sql = sa.text(f"SELECT * FROM {db.table(JOBS)} WHERE id = :id")
    if conn is not None:
        row = conn.execute(sa.text(f"{sql.text} FOR UPDATE"), {"id": job_id}).first()
    else:
        with db.connect() as c:
            row = c.execute(sql, {"id": job_id}).first()
    if row is None:
        raise JobStateError(f"export job {job_id} does not exist")
    return _job(row)


def job_status(db: Database, job_id: int) -> str:
    with db.connect() as conn:
        return conn.execute(
            sa.text(f"SELECT status FROM {db.table(JOBS)} WHERE id = :id"), {"id": job_id}
        ).scalar_one()


def list_jobs(db: Database, statuses: tuple[str, ...] | None = None) -> list[ExportJob]:
    sql = f"SELECT * FROM {db.table(JOBS)}"
    params: dict = {}
    if statuses:
        sql += " WHERE status = ANY(:s)"
        params["s"] = list(statuses)
    with db.connect() as conn:
        return [_job(r) for r in conn.execute(sa.text(sql + " ORDER BY id"), params)]


def create_job(
    db: Database,
    start_date: dt.date,
    end_date: dt.date | None,
    field_mappings: Mapping[str, Any],
    *,
    origin: str = "control",
    today: dt.date | None = None,
) -> ExportJob:
    """A job for [start_date, end_date]; no end_date: up to ``today`` (São Paulo)."""
    if end_date is None:
        end_date = today or today_sao_paulo()
    if end_date < start_date:
        raise JobStateError(f"end_date {end_date} is before start_date {start_date}")
    with db.begin() as conn:
        row = conn.execute(
            sa.text(
                f"INSERT INTO {db.table(JOBS)} (start_date, end_date, field_mappings, origin) "
                "VALUES (:s, :e, CAST(:m AS jsonb), :o) RETURNING *"
            ),
            {"s": start_date, "e": end_date, "m": json.dumps(dict(field_mappings)), "o": origin},
        ).one()
    return _job(row)


def day_job(db: Database, day: dt.date, field_mappings: Mapping[str, Any]) -> ExportJob:
    """The job of a partition run launched without one (UI, CLI backfill, demo): the last
    unfinished one-day job of that day, so a rerun resumes it, or a new one."""
    with db.connect() as conn:
        row = conn.execute(
            sa.text(
                f"SELECT * FROM {db.table(JOBS)} WHERE origin = 'partition_run' "
                "AND start_date = :d AND end_date = :d AND status <> 'completed' "
                "ORDER BY id DESC LIMIT 1"
            ),
            {"d": day},
        ).first()
    if row is not None:
        job = _job(row)
        if job.field_mappings == dict(field_mappings):
            return job
    return create_job(db, day, day, field_mappings, origin="partition_run")


def _transition(
    db: Database, job_id: int, allowed: tuple[str, ...], action: str, sets: str, **params
) -> ExportJob:
    with db.begin() as conn:
        job = get_job(db, job_id, conn)
        if job.status not in allowed:
            raise JobStateError(
                f"cannot {action} export job {job_id}: it is {job.status} "
                f"({action} applies to {', '.join(allowed)} jobs)"
            )
        row = conn.execute(
            sa.text(
                f"UPDATE {db.table(JOBS)} SET {sets}, updated_at = now() WHERE id = :id RETURNING *"
            ),
            {"id": job_id, **params},
        ).one()
    return _job(row)


def pause_job(db: Database, job_id: int, reason: str = "paused by a user") -> ExportJob:
    return _transition(
        db, job_id, ("pending", "running"), "pause",
        "status = 'paused', pause_reason = :r, paused_at = now()", r=reason or "paused by a user",
    )  # fmt: skip


def resume_job(db: Database, job_id: int) -> ExportJob:
    """Continue from the last completed day (and the keyset position inside the next one)."""
    return _transition(
        db, job_id, ("paused", "failed"), "resume",
        "status = 'running', pause_reason = NULL, paused_at = NULL, last_error = NULL, "
        "next_pass_at = NULL, generation = generation + 1",
    )  # fmt: skip


def reset_job(db: Database, job_id: int) -> ExportJob:
    """Clear progress, counts and error rows: the next run starts the period over."""
    with db.begin() as conn:
        job = get_job(db, job_id, conn)
        if job.status == "running":
            raise JobStateError(f"export job {job_id} is running: pause it before a reset")
        conn.execute(sa.text(f"DELETE FROM {db.table(ERRORS)} WHERE job_id = :id"), {"id": job_id})
        row = conn.execute(
            sa.text(
                f"UPDATE {db.table(JOBS)} SET status = 'pending', processing_date = NULL, "
                "last_completed_date = NULL, total_leads = 0, exported_leads = 0, error_leads = 0, "
                "skipped_leads = 0, cursor_updated_at = NULL, cursor_id = NULL, pause_reason = NULL, "
                "last_error = NULL, started_at = NULL, paused_at = NULL, completed_at = NULL, "
                "pass_started_at = NULL, next_pass_at = NULL, generation = generation + 1, updated_at = now() WHERE id = :id RETURNING *"
            ),
            {"id": job_id},
        ).one()
    return _job(row)


def fail_job(db: Database, job_id: int, message: str) -> None:
    with db.begin() as conn:
        conn.execute(
            sa.text(
                f"UPDATE {db.table(JOBS)} SET status = 'failed', last_error = :m, updated_at = now() "
                "WHERE id = :id AND status <> 'paused'"
            ),
            {"id": job_id, "m": message[:2000]},
        )


def complete_job(db: Database, job_id: int) -> None:
    with db.begin() as conn:
        conn.execute(
            sa.text(
                f"UPDATE {db.table(JOBS)} SET status = 'completed', completed_at = now(), "
                "processing_date = NULL, updated_at = now() WHERE id = :id AND status IN ('pending', 'running')"
            ),
            {"id": job_id},
        )


def purge_errors(db: Database, older_than_days: int = 90) -> int:
    """Delete error rows older than the retention; returns how many went."""
    with db.begin() as conn:
        result = conn.execute(
            sa.text(
                f"DELETE FROM {db.table(ERRORS)} WHERE created_at < now() - make_interval(days => :d)"
            ),
            {"d": int(older_than_days)},
        )
    return result.rowcount or 0
