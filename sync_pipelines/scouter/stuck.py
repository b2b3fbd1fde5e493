"""Stuck export jobs: ``running`` with no progress for longer than a limit.

The users' health query (seed 003, "Monitoramento de saúde") flags jobs ``running`` whose
``started_at`` is more than an hour old. ``started_at`` is set once per job, so a healthy
job exporting a long period would be flagged too; progress is what matters, and every batch
bumps ``updated_at``, so the test here is ``updated_at`` (last progress) older than
``GESTAO_SCOUTER_STUCK_AFTER_MINUTES`` (60).

A stuck job is moved to ``failed`` with a ``pause_reason`` saying why, atomically and only
if it still has made no progress (a job that moved meanwhile is left alone). Its progress
(``last_completed_date``, ``processing_date`` and the keyset cursor) is kept, so the
operator's *resume* continues from the last completed day and the last batch, sending no
completed day again. A run of that job still alive somewhere stops at its next batch (it
checks the status before each one, see export.py).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from ..lib.db import Database
from .jobs import JOBS, ExportJob, _job

STUCK_AFTER_VAR = "GESTAO_SCOUTER_STUCK_AFTER_MINUTES"
DEFAULT_STUCK_AFTER_MINUTES = 60
STUCK_REASON_PREFIX = "stuck:"


def stuck_after(minutes: int) -> dt.timedelta:
    """How long a running job may go without progress (``STUCK_AFTER_VAR``, checked)."""
    if minutes < 1:
        raise ValueError(f"{STUCK_AFTER_VAR} must be a positive number of minutes, got {minutes}")
    return dt.timedelta(minutes=minutes)


def stuck_jobs(db: Database, after: dt.timedelta) -> list[ExportJob]:
    """Jobs ``running`` whose last progress is older than ``after``."""
    with db.connect() as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT * FROM {db.table(JOBS)} WHERE status = 'running'"
                " AND COALESCE(updated_at, started_at) < now() - make_interval(secs => :s)"
                " ORDER BY id"
            ),
            {"s": after.total_seconds()},
        ).all()
    return [_job(r) for r in rows]


def fail_stuck_job(db: Database, job: ExportJob, after: dt.timedelta) -> ExportJob | None:
    """Move a stuck job to ``failed`` with the reason; None if it progressed meanwhile."""
    minutes = int(after.total_seconds() // 60)
    resume_from = job.processing_date or (
        job.last_completed_date + dt.timedelta(days=1)
        if job.last_completed_date
        else job.start_date
    )
    reason = (
        f"{STUCK_REASON_PREFIX} no progress for more than {minutes} min while running; "
        f"days up to {job.last_completed_date or '-'} are done. Resume it "
        f"(gestao_scouter_export_control, action resume, job_id {job.id}) to continue from "
        f"{resume_from} without sending the completed days again."
    )
    with db.begin() as conn:
        row = conn.execute(
            sa.text(
                f"UPDATE {db.table(JOBS)} SET status = 'failed', pause_reason = :r,"
                " last_error = :r, updated_at = now() WHERE id = :id AND status = 'running'"
                " AND COALESCE(updated_at, started_at) < now() - make_interval(secs => :s)"
                " RETURNING *"
            ),
            {"r": reason, "id": job.id, "s": after.total_seconds()},
        ).first()
    return None if row is None else _job(row)


def job_statuses(db: Database, job_ids: list[int]) -> dict[int, str]:
    with db.connect() as conn:
        return dict(
            conn.execute(
                sa.text(f"SELECT id, status FROM {db.table(JOBS)} WHERE id = ANY(:ids)"),
                {"ids": job_ids},
            ).all()
        )


def stuck_job_marks(db: Database, after: dt.timedelta) -> list[tuple[int, dt.datetime]]:
    """(id, last progress) of the stuck jobs: what tells one stuck episode from the next."""
    with db.connect() as conn:
        return [
            (r.id, r.updated_at)
            for r in conn.execute(
                sa.text(
                    f"SELECT id, updated_at FROM {db.table(JOBS)} WHERE status = 'running'"
                    " AND COALESCE(updated_at, started_at) < now() - make_interval(secs => :s)"
                    " ORDER BY id"
                ),
                {"s": after.total_seconds()},
            )
        ]
