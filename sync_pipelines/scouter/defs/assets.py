"""The two export assets (schema validation with its blocking check; the day's export), the
``no_stuck_export_jobs`` check on the export, and the ``gestao_scouter_export`` job."""

import datetime as dt

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetMaterialization,
    AssetSelection,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
    define_asset_job,
)
from pydantic import Field

from ...catalog import NO_EXPORT_ERRORS_LAST_24H, SCOUTER_LEADS
from ...lib.alerts import AlertRecord, AlertState, announce
from ...lib.db import Database
from ...provenance import run_rows_metadata
from ...resources import DatabaseResource, TelegramResource
from .. import jobs as export_jobs
from ..client import HttpError, PostgrestError
from ..export import ExportAborted, export_day
from ..schema import check_connection, compare_schemas
from ..source import source_columns
from ..stuck import fail_stuck_job, job_statuses, stuck_jobs
from .partitions import EXPORT_KEY, GROUP, SCHEMA_KEY, daily
from .resources import GestaoScouterResource, mapping_for


class ExportRunConfig(Config):
    job_id: int | None = Field(
        default=None,
        description="Export job this run belongs to (set by the driver sensor). Empty: the "
        "run gets a one-day job of its own, resumed if an earlier run of that day stopped.",
    )


@asset(
    key=SCHEMA_KEY,
    group_name=GROUP,
    pool="gestao_scouter_api",
    kinds={"postgres", "api"},
    owners=["team:data-platform"],
    description=(
        "Connection check (key, reachability, write permission on leads) and the field mapping "
        "compared with both real schemas. Its blocking check stops the export until every "
        "mapped column exists, and shows the SQL to run in Gestão Scouter."
    ),
    check_specs=[
        AssetCheckSpec(
            "mapped_columns_exist",
            asset=SCHEMA_KEY,
            blocking=True,
            description="Every mapped column exists in TabuladorMax and in Gestão Scouter; "
            "blocks the export until it does (the result shows the SQL to add them).",
        )
    ],
)
def schema_validation(
    context: AssetExecutionContext,
    config: ExportRunConfig,
    gestao_scouter: GestaoScouterResource,
    tabuladormax_db: DatabaseResource,
) -> MaterializeResult:
    db = tabuladormax_db.db
    _, mapping = mapping_for(db, config.job_id, gestao_scouter.field_mappings)
    with gestao_scouter.client() as client:
        connection = check_connection(client)
        for step, passed, message in connection.steps:
            context.log.info(f"connection {step}: {'ok' if passed else 'FAILED'}: {message}")
        if not connection.ok:
            raise Failure(
                "Gestão Scouter connection check failed: " + " | ".join(connection.problems)
            )
        destination = client.columns()
    report = compare_schemas(mapping, source_columns(db), destination)
    context.log.info(f"schema: {report.summary()}")
    numbers = {
        "mapped_columns": len(mapping.columns),
        "missing_at_destination": len(report.missing_at_destination),
        "missing_at_source": len(report.missing_at_source),
        "type_warnings": len(report.type_warnings),
        "only_at_source": len(report.only_at_source),
        "only_at_destination": len(report.only_at_destination),
    }
    # The same counts and report on the materialization and on its check.
    metadata = {
        **{k: MetadataValue.int(v) for k, v in numbers.items()},
        "report": MetadataValue.md(report.markdown()),
    }
    check = AssetCheckResult(
        check_name="mapped_columns_exist",
        passed=report.ok,
        severity=AssetCheckSeverity.ERROR,
        description=report.summary(),
        metadata=metadata,
    )
    return MaterializeResult(
        metadata={
            **metadata,
            "suggested_sql": MetadataValue.text(report.suggested_sql or "-"),
        },
        check_results=[check],
    )


def _report_leads_count(context: AssetExecutionContext, client) -> None:
    """The leads table's row count after the export, on its catalog asset (not partitioned)."""
    try:
        count = client.row_count()
    except (PostgrestError, HttpError) as exc:
        context.log.warning(
            f"Gestão Scouter leads: row count unavailable ({exc.__class__.__name__})"
        )
        return
    if count is None:
        context.log.info("Gestão Scouter leads: the reply carried no count (Content-Range)")
        return
    context.log_event(
        AssetMaterialization(
            SCOUTER_LEADS, metadata={"dagster/row_count": MetadataValue.int(count)}
        )
    )


@asset(
    key=EXPORT_KEY,
    group_name=GROUP,
    partitions_def=daily,
    deps=[SCHEMA_KEY],
    pool="gestao_scouter_api",
    kinds={"postgres", "api"},
    owners=["team:data-platform"],
    description=(
        "TabuladorMax leads whose updated_at falls in the partition's day (America/Sao_Paulo), "
        "upserted into Gestão Scouter in batches; a day is final once it ended plus a margin "
        "(until then the driver sensor re-reads it); failed leads in gestao_scouter_export_errors, "
        "progress in gestao_scouter_export_jobs (pause/resume/reset: gestao_scouter_export_control)."
    ),
)
def leads_export(
    context: AssetExecutionContext,
    config: ExportRunConfig,
    gestao_scouter: GestaoScouterResource,
    tabuladormax_db: DatabaseResource,
) -> MaterializeResult:
    db = tabuladormax_db.db
    day = dt.date.fromisoformat(context.partition_key)
    overrides, mapping = mapping_for(db, config.job_id, gestao_scouter.field_mappings)
    job_row = (
        export_jobs.get_job(db, config.job_id)
        if config.job_id is not None
        else export_jobs.day_job(db, day, overrides)
    )
    with gestao_scouter.client() as client:
        destination = client.columns()
        source = source_columns(db)
        # Also checked here: a run of this asset alone (without the blocking check) must not
        # send a payload PostgREST would refuse for every lead.
        report = compare_schemas(mapping, source, destination)
        if not report.ok:
            export_jobs.fail_job(db, job_row.id, report.summary())
            raise Failure(
                report.summary(), metadata={"report": MetadataValue.md(report.markdown())}
            )

        def progress(result) -> None:
            if result.batches % 10 == 0:
                context.log.info(
                    f"{day}: {result.read} read, {result.exported} exported, "
                    f"{result.errors} errors after {result.batches} batches"
                )

        try:
            result = export_day(
                db, client, job_row.id, day, mapping, source, destination,
                batch_size=gestao_scouter.effective_batch_size(),
                run_id=context.run.run_id, progress=progress,
            )  # fmt: skip
        except ExportAborted as exc:
            raise Failure(f"export job {job_row.id}, {day}: {exc}") from None
        _report_leads_count(context, client)
        stats = client.stats
    after = export_jobs.get_job(db, job_row.id)
    if result.paused:
        # Not a materialization: the day is not exported. Failing the run (rather than a
        # SUCCESS without materialization) keeps the partition visibly unfinished in the UI
        # and in the run list; run retries skip op failures (dagster.yaml), and the driver
        # does not relaunch a paused job, so nothing repeats until someone resumes it.
        why = after.pause_reason or after.last_error or "no reason given"
        raise Failure(
            f"export job {job_row.id} is {after.status} ({why}): {day} stopped after "
            f"{result.exported} leads of this run and is NOT finished; resume the job "
            f"(gestao_scouter_export_control, action resume, job_id {job_row.id}) to go on",
            metadata={
                "export_job_id": MetadataValue.int(job_row.id),
                "job_status": MetadataValue.text(after.status),
                "leads_exported": MetadataValue.int(result.exported),
                "leads_failed": MetadataValue.int(result.errors),
            },
        )
    context.log.info(
        f"{day}: job {job_row.id} {after.status}; {result.exported} exported, "
        f"{result.errors} errors, {result.skipped} skipped; "
        + (
            "day final"
            if result.final
            else "day not final yet (it ends in São Paulo plus a margin): the driver sensor "
            f"re-reads it from {result.next_pass_at:%Y-%m-%d %H:%M} on"
        )
    )
    return MaterializeResult(
        metadata={
            "export_job_id": MetadataValue.int(job_row.id),
            "job_status": MetadataValue.text(after.status),
            "leads_read": MetadataValue.int(result.read),
            "leads_exported": MetadataValue.int(result.exported),
            "leads_failed": MetadataValue.int(result.errors),
            "leads_skipped_reverse_synced": MetadataValue.int(result.skipped),
            "batches": MetadataValue.int(result.batches),
            "upsert_requests": MetadataValue.int(result.requests),
            "http_retries": MetadataValue.int(stats.get("retries", 0)),
            "day_final": MetadataValue.bool(result.final),
            "next_pass_at": MetadataValue.text(
                result.next_pass_at.isoformat() if result.next_pass_at else "-"
            ),
            "duration_s": MetadataValue.float(round(result.seconds, 3)),
        }
        # What this run wrote locally: its refused leads (the exported ones live in Gestão
        # Scouter, whose schema is not ours: sync_source = 'tabuladormax' marks them there).
        | run_rows_metadata(db, context.run.run_id, [export_jobs.ERRORS])
    )


STUCK_ALERT = "scouter:stuck_export_job:"


def flagged_jobs(db: Database, alerts: AlertState) -> dict[int, tuple[AlertRecord, str]]:
    """Export jobs whose stuck alert is active: job id -> (the alert, the job's status now,
    ``"deleted"`` if the job is gone). Shared by the check and the sensor that launches it."""
    flagged = {
        int(a.condition_key.removeprefix(STUCK_ALERT)): a for a in alerts.active(STUCK_ALERT)
    }
    statuses = job_statuses(db, list(flagged))
    return {job_id: (a, statuses.get(job_id, "deleted")) for job_id, a in flagged.items()}


@asset_check(
    asset=EXPORT_KEY,
    name="no_stuck_export_jobs",
    description="Fails while an export job stopped making progress: a job 'running' with no "
    "progress for GESTAO_SCOUTER_STUCK_AFTER_MINUTES (60) is moved to 'failed' (reason in "
    "pause_reason) and stays flagged until it is resumed or reset.",
)
def no_stuck_export_jobs(
    context: AssetCheckExecutionContext,
    tabuladormax_db: DatabaseResource,
    control_db: DatabaseResource,
    telegram: TelegramResource,
    gestao_scouter: GestaoScouterResource,
) -> AssetCheckResult:
    db = tabuladormax_db.db
    after = gestao_scouter.stuck_after()
    alerts = AlertState(control_db.db)

    def send(text: str) -> None:
        telegram.notify_admins(text, context.log)

    moved = []
    for job_row in stuck_jobs(db, after):
        failed = fail_stuck_job(db, job_row, after)
        if failed is None:
            continue  # it made progress meanwhile
        moved.append(failed.id)
        context.log.warning(f"export job {failed.id}: {failed.pause_reason}")
        announce(
            alerts,
            f"{STUCK_ALERT}{failed.id}",
            True,
            raised=f"⚠️ Gestão Scouter: export job {failed.id} was stuck (no progress for more "
            f"than {int(after.total_seconds() // 60)} min) and is now failed. {failed.pause_reason}",
            resolved="",
            send=send,
            details={"job_id": failed.id, "last_completed_date": failed.last_completed_date},
        )
    waiting = []
    for job_id, (alert, status) in flagged_jobs(db, alerts).items():
        if status == "failed":
            waiting.append(job_id)
            continue
        announce(
            alerts,
            alert.condition_key,
            False,
            raised="",
            resolved=f"✅ Gestão Scouter: export job {job_id} is {status} again.",
            send=send,
        )
    return AssetCheckResult(
        passed=not waiting,
        metadata={
            "moved_to_failed_now": len(moved),
            "stuck_jobs_awaiting_resume": len(waiting),
            "job_ids": MetadataValue.text(", ".join(map(str, sorted(waiting))) or "-"),
            "stuck_after_minutes": int(after.total_seconds() // 60),
            "how_to_fix": MetadataValue.text(
                "Look at the job's last run, then resume it: gestao_scouter_export_control "
                "with action=resume and its job_id (completed days are not sent again)."
            ),
        },
    )


gestao_scouter_export = define_asset_job(
    "gestao_scouter_export",
    # The stuck-jobs check runs on its own (its sensor in automation.py), not in every day's
    # export run.
    selection=(
        AssetSelection.assets(SCHEMA_KEY, EXPORT_KEY) - AssetSelection.checks(no_stuck_export_jobs)
    )
    | AssetSelection.checks(NO_EXPORT_ERRORS_LAST_24H),
    description="Schema validation (blocking), then the day's export. One run per day.",
)
