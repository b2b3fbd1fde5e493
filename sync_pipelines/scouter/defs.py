"""TabuladorMax → Gestão Scouter lead export in Dagster (group ``gestao_scouter``).

- ``gestao_scouter/schema_validation``: connection check (key, reachability, write permission)
  then the field mapping against both real schemas; its **blocking** check
  ``mapped_columns_exist`` stops the export in the same run and shows the SQL to run.
- ``gestao_scouter/leads_export``: one partition per São Paulo day (leads whose updated_at
  falls in it), batches of ``GESTAO_SCOUTER_BATCH_SIZE`` (50), bad leads isolated into
  ``gestao_scouter_export_errors``, progress in ``gestao_scouter_export_jobs``.
- ``gestao_scouter_export``: the job both assets form (what the driver sensor launches, and
  what ``dagster job backfill`` runs over a range of days).
- ``gestao_scouter_export_control``: start / pause / resume / reset an export job of a period
  (Launchpad in the UI, or ``dagster job execute`` on the CLI).
- ``gestao_scouter_export_driver`` sensor: walks each active job's days, one run at a time.
- ``gestao_scouter_error_purge`` schedule: deletes error rows older than the retention.
- ``gestao_scouter_reverse_sync`` job + sensor: optional, off unless
  ``GESTAO_SCOUTER_REVERSE_SYNC=true``.
- ``no_stuck_export_jobs`` check on ``leads_export`` (job ``gestao_scouter_stuck_jobs``,
  launched by the ``gestao_scouter_stuck_jobs_sensor`` only when there is something to do):
  a job ``running`` without progress for ``GESTAO_SCOUTER_STUCK_AFTER_MINUTES`` (60) is
  moved to ``failed`` with the reason in ``pause_reason``, the admins get one message, and
  the check stays failed until the job is resumed (then one "resolved" message).
"""

import datetime as dt
import json
import os
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    Config,
    ConfigurableResource,
    DagsterRunStatus,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    Failure,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    asset_check,
    define_asset_job,
    job,
    op,
    sensor,
)
from pydantic import Field

from ..lib.alerts import AlertRecord, AlertState, announce
from ..resources import DatabaseResource, TelegramResource
from . import jobs as export_jobs
from .client import GestaoScouterClient, settings_from_env
from .export import ExportAborted, export_day
from .mapping import FieldMapping, MappingError, resolve_mapping
from .reverse import reverse_sync
from .schema import check_connection, compare_schemas
from .source import source_columns, today_sao_paulo
from .stuck import (
    fail_stuck_job,
    job_statuses,
    stuck_after_from_env,
    stuck_job_marks,
    stuck_jobs,
)

TZ = "America/Sao_Paulo"
GROUP = "gestao_scouter"
JOB_TAG = "gestao_scouter/export_job"
GENERATION_TAG = "gestao_scouter/generation"
SCHEMA_KEY = AssetKey(["gestao_scouter", "schema_validation"])
EXPORT_KEY = AssetKey(["gestao_scouter", "leads_export"])

daily = DailyPartitionsDefinition(
    start_date=os.environ.get("GESTAO_SCOUTER_START_DATE", "2024-01-01"),
    timezone=TZ,
    end_offset=1,  # today is exportable: a job with no end date runs up to today
)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class GestaoScouterResource(ConfigurableResource):
    """Gestão Scouter's PostgREST. URL and key come from GESTAO_SCOUTER_URL and
    GESTAO_SCOUTER_SERVICE_KEY at run time (never config); the rest may be tuned per run."""

    batch_size: int = Field(
        default=0, description="Leads per request; 0 = GESTAO_SCOUTER_BATCH_SIZE (default 50)."
    )

    def client(self) -> GestaoScouterClient:
        return GestaoScouterClient.from_settings(settings_from_env())

    def effective_batch_size(self) -> int:
        return self.batch_size or int(os.environ.get("GESTAO_SCOUTER_BATCH_SIZE", "50"))


def default_field_mappings() -> dict[str, Any]:
    """GESTAO_SCOUTER_FIELD_MAPPINGS (JSON ``{"destination": "source"}``) over the default."""
    raw = os.environ.get("GESTAO_SCOUTER_FIELD_MAPPINGS", "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise Failure(f"GESTAO_SCOUTER_FIELD_MAPPINGS is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise Failure('GESTAO_SCOUTER_FIELD_MAPPINGS must be a JSON object {"dest": "source"}')
    return value


class ExportRunConfig(Config):
    job_id: int | None = Field(
        default=None,
        description="Export job this run belongs to (set by the driver sensor). Empty: the "
        "run gets a one-day job of its own, resumed if an earlier run of that day stopped.",
    )


def _mapping_for(db, job_id: int | None) -> tuple[dict[str, Any], FieldMapping]:
    overrides = (
        export_jobs.get_job(db, job_id).field_mappings
        if job_id is not None
        else default_field_mappings()
    )
    try:
        return overrides, resolve_mapping(overrides)
    except MappingError as exc:
        raise Failure(f"invalid field mapping: {exc}") from None


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
    check_specs=[AssetCheckSpec("mapped_columns_exist", asset=SCHEMA_KEY, blocking=True)],
)
def schema_validation(
    context: AssetExecutionContext,
    config: ExportRunConfig,
    gestao_scouter: GestaoScouterResource,
    tabuladormax_db: DatabaseResource,
) -> MaterializeResult:
    db = tabuladormax_db.db
    _, mapping = _mapping_for(db, config.job_id)
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
    check = AssetCheckResult(
        check_name="mapped_columns_exist",
        passed=report.ok,
        severity=AssetCheckSeverity.ERROR,
        description=report.summary(),
        metadata={
            **{k: MetadataValue.int(v) for k, v in numbers.items()},
            "report": MetadataValue.md(report.markdown()),
        },
    )
    return MaterializeResult(
        metadata={
            **{k: MetadataValue.int(v) for k, v in numbers.items()},
            "report": MetadataValue.md(report.markdown()),
            "suggested_sql": MetadataValue.text(report.suggested_sql or "-"),
        },
        check_results=[check],
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
        "upserted into Gestão Scouter in batches; failed leads in gestao_scouter_export_errors, "
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
    overrides, mapping = _mapping_for(db, config.job_id)
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
        stats = client.stats
    after = export_jobs.get_job(db, job_row.id)
    context.log.info(
        f"{day}: job {job_row.id} {after.status}; {result.exported} exported, "
        f"{result.errors} errors, {result.skipped} skipped"
        + (" (paused: resume the job to continue this day)" if result.paused else "")
    )
    preview = (
        "| job | day | status | read | exported | errors | skipped | requests |\n"
        "|---|---|---|---:|---:|---:|---:|---:|\n"
        f"| {job_row.id} | {day} | {after.status} | {result.read} | {result.exported} | "
        f"{result.errors} | {result.skipped} | {result.requests} |"
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
            "paused": MetadataValue.bool(result.paused),
            "duration_s": MetadataValue.float(round(result.seconds, 3)),
            "summary": MetadataValue.md(preview),
        }
    )


STUCK_ALERT = "scouter:stuck_export_job:"


def _flagged_jobs(alerts: AlertState) -> dict[int, AlertRecord]:
    """Export jobs whose stuck alert is active: job id -> the alert."""
    return {int(a.condition_key.removeprefix(STUCK_ALERT)): a for a in alerts.active(STUCK_ALERT)}


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
) -> AssetCheckResult:
    db = tabuladormax_db.db
    after = stuck_after_from_env()
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
    flagged = _flagged_jobs(alerts)
    statuses = job_statuses(db, list(flagged))
    waiting = []
    for job_id, alert in flagged.items():
        status = statuses.get(job_id, "deleted")
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


stuck_jobs_job = define_asset_job(
    "gestao_scouter_stuck_jobs",
    selection=AssetSelection.checks(no_stuck_export_jobs),
    description="Flags export jobs stuck in 'running' (check no_stuck_export_jobs).",
)


gestao_scouter_export = define_asset_job(
    "gestao_scouter_export",
    # The stuck-jobs check runs on its own (sensor below), not in every day's export run.
    selection=AssetSelection.assets(SCHEMA_KEY, EXPORT_KEY)
    - AssetSelection.checks(no_stuck_export_jobs),
    description="Schema validation (blocking), then the day's export. One run per day.",
)


class ExportControlConfig(Config):
    """What to do with an export job. ``start`` creates one for a period."""

    action: str = Field(description="start | pause | resume | reset")
    job_id: int | None = Field(default=None, description="The job (pause/resume/reset).")
    start_date: str | None = Field(default=None, description="start: first day, YYYY-MM-DD")
    end_date: str | None = Field(
        default=None, description="start: last day (empty: up to today, then completed)"
    )
    field_mappings: str = Field(
        default="",
        description='start: JSON {"destination": "source"} merged over the default mapping '
        "(empty: GESTAO_SCOUTER_FIELD_MAPPINGS or the default)",
    )
    reason: str = Field(default="", description="pause: why (shown on the job)")


@op(description="Start, pause, resume or reset a Gestão Scouter export job.")
def export_job_control(
    context: OpExecutionContext, config: ExportControlConfig, tabuladormax_db: DatabaseResource
) -> None:
    db = tabuladormax_db.db
    action = config.action.strip().lower()
    try:
        if action == "start":
            if not config.start_date:
                raise Failure("start needs start_date (YYYY-MM-DD)")
            overrides = (
                json.loads(config.field_mappings)
                if config.field_mappings.strip()
                else default_field_mappings()
            )
            mapping = resolve_mapping(overrides)
            missing = [s for s in mapping.source_columns if s not in source_columns(db)]
            if missing:
                raise Failure(f"field mapping names unknown TabuladorMax columns: {missing}")
            job_row = export_jobs.create_job(
                db,
                dt.date.fromisoformat(config.start_date),
                dt.date.fromisoformat(config.end_date) if config.end_date else None,
                overrides,
            )
        elif action in ("pause", "resume", "reset"):
            if config.job_id is None:
                raise Failure(f"{action} needs job_id")
            if action == "pause":
                job_row = export_jobs.pause_job(db, config.job_id, config.reason)
            elif action == "resume":
                job_row = export_jobs.resume_job(db, config.job_id)
            else:
                job_row = export_jobs.reset_job(db, config.job_id)
        else:
            raise Failure(f"unknown action {config.action!r}: start, pause, resume or reset")
    except (export_jobs.JobStateError, MappingError, ValueError) as exc:
        raise Failure(str(exc)) from None
    context.log.info(
        f"export job {job_row.id}: {action} -> {job_row.status} "
        f"({job_row.start_date} .. {job_row.end_date or 'today'}; last completed day "
        f"{job_row.last_completed_date or '-'}); the driver sensor runs its days"
    )


@job(
    name="gestao_scouter_export_control",
    description="Start (a period), pause, resume or reset a Gestão Scouter export job.",
)
def export_control_job() -> None:
    export_job_control()


_UNFINISHED = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


@sensor(
    job=gestao_scouter_export,
    minimum_interval_seconds=30,
    # Users start exports from the control job and expect them to run: a stopped driver
    # would leave every job pending. With no active job a tick is one small SELECT.
    default_status=DefaultSensorStatus.RUNNING,
    description="Runs each active export job's next day, one run per job at a time, in order.",
)
def gestao_scouter_export_driver(
    context: SensorEvaluationContext, tabuladormax_db: DatabaseResource
) -> SensorResult | SkipReason:
    db = tabuladormax_db.db
    today = today_sao_paulo()
    requests = []
    for job_row in export_jobs.list_jobs(db, export_jobs.ACTIVE):
        if job_row.origin != "control":
            continue
        tags = {JOB_TAG: str(job_row.id), GENERATION_TAG: str(job_row.generation)}
        if context.instance.get_runs(
            RunsFilter(tags={JOB_TAG: str(job_row.id)}, statuses=_UNFINISHED), limit=1
        ):
            continue  # its current day is still running
        day = job_row.next_day(today)
        if day is None:
            export_jobs.complete_job(db, job_row.id)
            context.log.info(f"export job {job_row.id} completed")
            continue
        latest = context.instance.get_runs(RunsFilter(tags=tags), limit=1)
        if (
            latest
            and latest[0].tags.get("dagster/partition") == day.isoformat()
            and latest[0].status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
        ):
            # Failed before the export could record it (blocking schema check, connection):
            # stop here instead of re-requesting the same run key forever.
            export_jobs.fail_job(
                db, job_row.id, f"run {latest[0].run_id} for {day} failed: see its log, fix, resume"
            )
            continue
        config = {"config": {"job_id": job_row.id}}
        requests.append(
            RunRequest(
                run_key=f"gs-export-{job_row.id}-g{job_row.generation}-{day.isoformat()}",
                partition_key=day.isoformat(),
                run_config={
                    "ops": {
                        "gestao_scouter__schema_validation": config,
                        "gestao_scouter__leads_export": config,
                    }
                },
                tags=tags,
            )
        )
    if not requests:
        return SkipReason("no export job has a day to run")
    return SensorResult(run_requests=requests)


class PurgeConfig(Config):
    retention_days: int = Field(
        default=0, description="Keep this many days; 0 = GESTAO_SCOUTER_ERROR_RETENTION_DAYS (90)."
    )


@op(description="Delete gestao_scouter_export_errors rows older than the retention.")
def purge_export_errors(
    context: OpExecutionContext, config: PurgeConfig, tabuladormax_db: DatabaseResource
) -> None:
    days = config.retention_days or int(os.environ.get("GESTAO_SCOUTER_ERROR_RETENTION_DAYS", "90"))
    deleted = export_jobs.purge_errors(tabuladormax_db.db, days)
    context.log.info(f"purged {deleted} export error rows older than {days} days")


@job(name="gestao_scouter_error_purge", description="Purge old Gestão Scouter export errors.")
def error_purge_job() -> None:
    purge_export_errors()


error_purge_schedule = ScheduleDefinition(
    name="gestao_scouter_error_purge_daily",
    job=error_purge_job,
    cron_schedule="30 3 * * *",
    execution_timezone=TZ,
    # Housekeeping the users asked for (90-day log): it runs unless someone stops it.
    default_status=DefaultScheduleStatus.RUNNING,
)


@op(description="Write leads changed in Gestão Scouter back to TabuladorMax (loop-safe).")
def reverse_sync_leads(
    context: OpExecutionContext,
    gestao_scouter: GestaoScouterResource,
    tabuladormax_db: DatabaseResource,
) -> None:
    if not _env_flag("GESTAO_SCOUTER_REVERSE_SYNC"):
        context.log.info("GESTAO_SCOUTER_REVERSE_SYNC is off: nothing done")
        return
    _, mapping = _mapping_for(tabuladormax_db.db, None)
    with gestao_scouter.client() as client:
        result = reverse_sync(tabuladormax_db.db, client, mapping)
    context.log.info(
        f"reverse sync: {result.seen} changed rows seen, {result.written} written to "
        f"TabuladorMax, {result.skipped_own} were the export's own, {result.skipped_older} older"
    )


@job(name="gestao_scouter_reverse_sync", description="Gestão Scouter → TabuladorMax (optional).")
def reverse_sync_job() -> None:
    reverse_sync_leads()


@sensor(
    job=reverse_sync_job,
    minimum_interval_seconds=60,
    # Off by default (the users' document: bidirectional sync is optional); it starts
    # running by itself only where GESTAO_SCOUTER_REVERSE_SYNC=true.
    default_status=(
        DefaultSensorStatus.RUNNING
        if _env_flag("GESTAO_SCOUTER_REVERSE_SYNC")
        else DefaultSensorStatus.STOPPED
    ),
    description="Polls Gestão Scouter for leads changed since the reverse sync's cursor.",
)
def gestao_scouter_reverse_sync_sensor(
    context: SensorEvaluationContext, tabuladormax_db: DatabaseResource
) -> RunRequest | SkipReason:
    if not _env_flag("GESTAO_SCOUTER_REVERSE_SYNC"):
        return SkipReason("GESTAO_SCOUTER_REVERSE_SYNC is not true")
    if context.instance.get_runs(
        RunsFilter(job_name="gestao_scouter_reverse_sync", statuses=_UNFINISHED), limit=1
    ):
        return SkipReason("a reverse sync run is in progress")
    from .reverse import peek_changes

    with GestaoScouterClient.from_settings(settings_from_env()) as client:
        change = peek_changes(tabuladormax_db.db, client)
    if change is None:
        return SkipReason("no lead changed in Gestão Scouter since the cursor")
    return RunRequest(run_key=f"gs-reverse-{change}")


@sensor(
    job=stuck_jobs_job,
    minimum_interval_seconds=300,
    # Running by default: the point is to be told. A tick is two small SELECTs, and a run
    # (of the check) is launched only when a job looks stuck or a flagged one was resumed,
    # so the Runs page is not filled with a run every few minutes.
    default_status=DefaultSensorStatus.RUNNING,
    description="Launches the no_stuck_export_jobs check when an export job looks stuck or a "
    "flagged one was resumed.",
)
def gestao_scouter_stuck_jobs_sensor(
    context: SensorEvaluationContext,
    tabuladormax_db: DatabaseResource,
    control_db: DatabaseResource,
):
    db = tabuladormax_db.db
    stuck = stuck_job_marks(db, stuck_after_from_env())
    flagged = _flagged_jobs(AlertState(control_db.db))
    statuses = job_statuses(db, list(flagged))
    moved_on = {j: a for j, a in flagged.items() if statuses.get(j) != "failed"}
    if not stuck and not moved_on:
        return SkipReason(f"no stuck export job; {len(flagged)} flagged, awaiting resume")
    # The run key names the episode (last progress; time of the flag), so one state is
    # checked once and a later episode of the same job again.
    key = ";".join(
        [f"stuck-{job_id}@{progress.isoformat()}" for job_id, progress in stuck]
        + [f"moved-{j}@{a.since.isoformat()}" for j, a in sorted(moved_on.items())]
    )
    return RunRequest(run_key=key)


defs = Definitions(
    assets=[schema_validation, leads_export],
    asset_checks=[no_stuck_export_jobs],
    jobs=[
        gestao_scouter_export,
        export_control_job,
        error_purge_job,
        reverse_sync_job,
        stuck_jobs_job,
    ],
    sensors=[
        gestao_scouter_export_driver,
        gestao_scouter_reverse_sync_sensor,
        gestao_scouter_stuck_jobs_sensor,
    ],
    schedules=[error_purge_schedule],
    resources={"gestao_scouter": GestaoScouterResource()},
)
