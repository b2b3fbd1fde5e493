"""Exporting one day of TabuladorMax leads to Gestão Scouter for one export job.

Leads updated on the day are read page by page (keyset) and sent in batches of 50
(configurable) as one bulk upsert each. When PostgREST refuses a batch because of a value
(the whole array fails), the batch is split in halves until the bad lead is alone: the good
ones are written, the bad one becomes a row of ``gestao_scouter_export_errors`` with the
reason, the response, the fields sent and a masked snapshot. A problem no split can fix
(unknown column, bad key, no permission, service down after retries) stops the day and marks
the job failed with a message saying what to fix.

A day is done only when it is final (source.py): a pass that started before the day ended
in São Paulo plus ``FINAL_MARGIN`` leaves it open, with a cursor at the pass's start minus
the margin, and the next pass (not before ``REREAD_EVERY``) re-reads it from there; leads
changed later that day, or committed late with an earlier ``updated_at``, are sent then.

After every batch the job row records the counts and the keyset position, in one
transaction with the batch's error rows: a pause (checked before each batch), a crash or a
failure resumes right after the last recorded batch, so no lead is skipped and none is sent
again (except the one batch in flight during a crash, which an idempotent upsert absorbs).

Rows last written by the reverse sync (``sync_source = 'gestao_scouter'`` and not changed
since, ``updated_at <= last_sync_at``) are skipped: they came from Gestão Scouter.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..lib.db import Database
from ..lib.redact import redact
from .client import GestaoScouterClient, PostgrestError
from .jobs import ERRORS, JOBS, ExportJob, complete_job, fail_job, get_job, job_status
from .mapping import FieldMapping, mask_personal_values, masked_snapshot, to_destination
from .source import (
    FINAL_MARGIN,
    REREAD_EVERY,
    Keyset,
    count_between,
    day_bounds,
    is_day_final,
    iter_day_pages,
    now_sao_paulo,
    today_sao_paulo,
)

REVERSE_MARKER = "gestao_scouter"


class ExportAborted(RuntimeError):
    """The day cannot go on (configuration, permission, outage); the job is marked failed."""


@dataclass
class LeadFailure:
    row: dict[str, Any]
    payload: dict[str, Any]
    error: PostgrestError


@dataclass
class DayResult:
    day: dt.date
    job_id: int
    read: int = 0
    exported: int = 0
    errors: int = 0
    skipped: int = 0
    batches: int = 0
    requests: int = 0
    paused: bool = False
    final: bool = False  # the day is done; False: another pass re-reads it at next_pass_at
    next_pass_at: dt.datetime | None = None
    seconds: float = 0.0
    failures: list[LeadFailure] = field(default_factory=list)


def written_by_reverse_sync(row: Mapping[str, Any]) -> bool:
    """True for a row the reverse sync wrote and nobody changed since (the loop guard)."""
    last_sync = row.get("last_sync_at")
    return (
        row.get("sync_source") == REVERSE_MARKER
        and last_sync is not None
        and row["updated_at"] <= last_sync
    )


def send_isolating(
    client: GestaoScouterClient,
    rows: Sequence[dict[str, Any]],
    payloads: Sequence[dict[str, Any]],
    counter: list[int],
) -> tuple[int, list[LeadFailure]]:
    """Upsert ``payloads``; on a value error split until each bad lead is alone.

    Returns (leads written, failures). Errors no split can fix are raised.
    """
    if not payloads:
        return 0, []
    counter[0] += 1
    try:
        client.upsert_leads(payloads)
        return len(payloads), []
    except PostgrestError as exc:
        if not exc.row_specific:
            raise
        if len(payloads) == 1:
            return 0, [LeadFailure(dict(rows[0]), dict(payloads[0]), exc)]
    middle = len(payloads) // 2
    ok_left, bad_left = send_isolating(client, rows[:middle], payloads[:middle], counter)
    ok_right, bad_right = send_isolating(client, rows[middle:], payloads[middle:], counter)
    return ok_left + ok_right, bad_left + bad_right


def _error_row(job: ExportJob, day: dt.date, failure: LeadFailure) -> dict[str, Any]:
    """What is stored of a refused lead. PostgREST's message, details and body echo the
    refused values: each personal one is masked there exactly as in the snapshot."""

    def masked(text: str | None) -> str | None:
        return None if text is None else mask_personal_values(text, failure.row, failure.payload)

    details = {
        key: masked(v) if isinstance(v, str) else v for key, v in failure.error.as_details().items()
    }
    return {
        "job": job.id,
        "lead": failure.row.get("id"),
        "msg": masked(str(failure.error)),
        "details": json.dumps(details),
        "status": failure.error.status,
        "body": masked(failure.error.body),
        "snapshot": json.dumps(masked_snapshot(failure.row), default=str),
        "fields": json.dumps(list(failure.payload)),
        "day": day,
    }


def _record_batch(
    db: Database,
    job: ExportJob,
    day: dt.date,
    last: Keyset,
    exported: int,
    skipped: int,
    failures: list[LeadFailure],
    run_id: str | None,
) -> None:
    with db.begin() as conn:
        replaced = 0
        if failures:
            # A re-read of a day not final yet meets the same refused lead again: its latest
            # refusal replaces the earlier one, so a lead is one error row (and one count).
            replaced = len(
                conn.execute(
                    sa.text(
                        f"DELETE FROM {db.table(ERRORS)} WHERE job_id = :job AND export_date = :day "
                        "AND lead_id = ANY(:ids) RETURNING lead_id"
                    ),
                    {"job": job.id, "day": day, "ids": [f.row.get("id") for f in failures]},
                ).all()
            )
            conn.execute(
                sa.text(
                    f"INSERT INTO {db.table(ERRORS)} (job_id, lead_id, error_message, error_details, "
                    "response_status, response_body, lead_snapshot, fields_sent, export_date, "
                    "sync_run_id) VALUES (:job, :lead, :msg, CAST(:details AS jsonb), :status, "
                    ":body, CAST(:snapshot AS jsonb), CAST(:fields AS jsonb), :day, :run)"
                ),
                [{**_error_row(job, day, f), "run": run_id} for f in failures],
            )
        conn.execute(
            sa.text(
                f"UPDATE {db.table(JOBS)} SET exported_leads = exported_leads + :ok, "
                "error_leads = error_leads + :bad, skipped_leads = skipped_leads + :skip, "
                "processing_date = :day, cursor_updated_at = :cu, cursor_id = :ci, "
                "updated_at = now() WHERE id = :id"
            ),
            {
                "ok": exported,
                "bad": len(failures) - replaced,
                "skip": skipped,
                "day": day,
                "cu": last.updated_at,
                "ci": last.id,
                "id": job.id,
            },
        )


def _start_day(
    db: Database, job: ExportJob, day: dt.date, now: dt.datetime, run_id: str | None
) -> ExportJob:
    """Mark the job running on ``day``. A pass already under way on that day (stopped by a
    pause, a crash or a failure) goes on from its exact cursor with its own start time; else
    a new pass starts now, from the overlap cursor a previous pass left (or the day start)."""
    today = today_sao_paulo(now)
    total = count_between(db, job.start_date, job.last_day(today))
    with db.begin() as conn:
        current = get_job(db, job.id, conn)
        same_day = current.processing_date == day
        conn.execute(
            sa.text(
                f"UPDATE {db.table(JOBS)} SET status = 'running', total_leads = :total, "
                "started_at = coalesce(started_at, now()), processing_date = :day, "
                "cursor_updated_at = CASE WHEN :same THEN cursor_updated_at END, "
                "cursor_id = CASE WHEN :same THEN cursor_id END, "
                "pass_started_at = CASE WHEN :same THEN coalesce(pass_started_at, :now) "
                "ELSE :now END, next_pass_at = NULL, last_run_id = :run, "
                "updated_at = now() WHERE id = :id"
            ),
            {"total": total, "day": day, "same": same_day, "now": now, "run": run_id, "id": job.id},
        )
    return get_job(db, job.id)


def _finish_day(
    db: Database,
    job: ExportJob,
    day: dt.date,
    now: dt.datetime,
    margin: dt.timedelta,
    reread_every: dt.timedelta,
    result: DayResult,
) -> None:
    """End of a pass: the day is done if it is final, else it is left open for a re-read."""
    assert job.pass_started_at is not None
    today = today_sao_paulo(now)
    result.final = is_day_final(day, job.pass_started_at, margin)
    with db.begin() as conn:
        if result.final:
            done = day >= job.last_day(today)
            conn.execute(
                sa.text(
                    f"UPDATE {db.table(JOBS)} SET "
                    "last_completed_date = greatest(coalesce(last_completed_date, :day), :day), "
                    "processing_date = NULL, cursor_updated_at = NULL, cursor_id = NULL, "
                    "pass_started_at = NULL, next_pass_at = NULL, "
                    "status = CASE WHEN :done THEN 'completed' ELSE status END, "
                    "completed_at = CASE WHEN :done THEN now() ELSE completed_at END, "
                    "updated_at = now() WHERE id = :id AND status = 'running'"
                ),
                {"day": day, "done": done, "id": job.id},
            )
            return
        # Everything updated before (pass start - margin) was committed before the pass
        # began, so this pass read it; the next one starts there, overlapping this one.
        reread_from = max(job.pass_started_at - margin, day_bounds(day)[0])
        result.next_pass_at = now + reread_every
        conn.execute(
            sa.text(
                f"UPDATE {db.table(JOBS)} SET cursor_updated_at = :since, cursor_id = NULL, "
                "pass_started_at = NULL, next_pass_at = :next, updated_at = now() "
                "WHERE id = :id AND status = 'running'"
            ),
            {"since": reread_from, "next": result.next_pass_at, "id": job.id},
        )


def export_day(
    db: Database,
    client: GestaoScouterClient,
    job_id: int,
    day: dt.date,
    mapping: FieldMapping,
    source_columns: Mapping[str, str],
    destination_columns: Mapping[str, str],
    *,
    batch_size: int = 50,
    page_size: int = 500,
    now: dt.datetime | None = None,
    margin: dt.timedelta = FINAL_MARGIN,
    reread_every: dt.timedelta = REREAD_EVERY,
    run_id: str | None = None,
    progress: Callable[[DayResult], None] | None = None,
) -> DayResult:
    """One pass over the leads of ``day`` for job ``job_id``, resuming from its recorded
    position; ``now`` (default: the clock) is when the pass starts.

    ``mapping`` must already be validated against both column lists (the schema check).
    Returns when the pass is done (``result.final``: the day too) or the job was paused;
    raises ``ExportAborted`` (job marked failed) when it cannot go on.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    started = time.monotonic()
    now = now or now_sao_paulo()
    result = DayResult(day=day, job_id=job_id)
    job = get_job(db, job_id)
    if job.status == "paused":
        result.paused = True
        return result
    job = _start_day(db, job, day, now, run_id)
    after = job.cursor if job.processing_date == day else None
    counter = [0]
    try:
        for page in iter_day_pages(
            db, day, mapping.source_columns, source_columns, after=after, page_size=page_size
        ):
            for start in range(0, len(page), batch_size):
                # Paused by a user, or failed by the stuck-job guard while this run was
                # alive somewhere: stop before the next batch either way.
                if job_status(db, job_id) in ("paused", "failed"):
                    result.paused = True
                    return result
                batch = page[start : start + batch_size]
                to_send = [r for r in batch if not written_by_reverse_sync(r)]
                exported_at = dt.datetime.now(dt.UTC)
                payloads = [
                    to_destination(r, mapping, destination_columns, exported_at) for r in to_send
                ]
                ok, failures = send_isolating(client, to_send, payloads, counter)
                last = Keyset(batch[-1]["updated_at"], batch[-1]["id"])
                skipped = len(batch) - len(to_send)
                _record_batch(db, job, day, last, ok, skipped, failures, run_id)
                result.read += len(batch)
                result.exported += ok
                result.errors += len(failures)
                result.skipped += skipped
                result.batches += 1
                result.requests = counter[0]
                result.failures.extend(failures)
                if progress is not None:
                    progress(result)
    except PostgrestError as exc:
        fail_job(db, job_id, str(exc))
        raise ExportAborted(str(exc)) from None
    except Exception as exc:  # outage after retries, database trouble: resume later
        message = redact(f"{type(exc).__name__}: {exc}")
        fail_job(db, job_id, message)
        raise ExportAborted(
            f"export of {day} stopped ({message}); the job resumes from its last batch"
        ) from None
    finally:
        result.seconds = time.monotonic() - started
    _finish_day(db, job, day, now, margin, reread_every, result)
    return result


def export_job(
    db: Database,
    client: GestaoScouterClient,
    job_id: int,
    mapping: FieldMapping,
    source_columns: Mapping[str, str],
    destination_columns: Mapping[str, str],
    *,
    now: dt.datetime | None = None,
    **kwargs: Any,
) -> list[DayResult]:
    """Every remaining day of a job in one process, in order, until done, paused, or at a
    day that is not final yet (its next pass is due later: call again then).

    The Dagster layer runs the same days as one partition run each (driven by a sensor);
    this loop is for the benchmark and for tests of a whole period.
    """
    now = now or now_sao_paulo()
    today = today_sao_paulo(now)
    results: list[DayResult] = []
    while True:
        job = get_job(db, job_id)
        if job.status not in ("pending", "running"):
            return results
        day = job.next_day(today)
        if day is None:
            complete_job(db, job_id)
            return results
        if job.next_pass_at is not None and job.next_pass_at > now:
            return results
        result = export_day(
            db, client, job_id, day, mapping, source_columns, destination_columns,
            now=now, **kwargs,
        )  # fmt: skip
        results.append(result)
        if result.paused or not result.final:
            return results
