"""What runs by itself: the export driver sensor, the error purge schedule, the stuck-jobs
sensor (and the job of its check), and the optional reverse sync (job + sensor)."""

from dagster import (
    AssetSelection,
    Config,
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    OpExecutionContext,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    job,
    op,
    sensor,
)
from pydantic import Field

from ...lib.alerts import AlertState
from ...provenance import RUN_ID_COLUMN, run_rows_metadata
from ...resources import DatabaseResource
from .. import jobs as export_jobs
from ..reverse import reverse_sync
from ..source import LEADS_TABLE, now_sao_paulo, source_columns
from ..stuck import stuck_job_marks
from .assets import flagged_jobs, gestao_scouter_export, no_stuck_export_jobs
from .partitions import EXPORT_KEY, TZ
from .resources import GestaoScouterResource, mapping_for

JOB_TAG = "gestao_scouter/export_job"
GENERATION_TAG = "gestao_scouter/generation"


_UNFINISHED = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


def _run_in_progress(instance: DagsterInstance, **filters) -> bool:
    """Whether a run matching ``filters`` (RunsFilter fields) has not finished yet."""
    return bool(instance.get_runs(RunsFilter(statuses=_UNFINISHED, **filters), limit=1))


def _day_run_in_progress(instance: DagsterInstance, day: str) -> bool:
    """Whether an export run of ``day`` is unfinished, however it was launched (this sensor,
    a UI materialization, a backfill): a partition run's own job row has no job tag."""
    runs = instance.get_runs(
        RunsFilter(statuses=_UNFINISHED, tags={"dagster/partition": day}), limit=50
    )
    return any(
        run.job_name == gestao_scouter_export.name
        or (run.asset_selection and EXPORT_KEY in run.asset_selection)
        for run in runs
    )


@sensor(
    job=gestao_scouter_export,
    minimum_interval_seconds=30,
    # Users start exports from the control job and expect them to run: a stopped driver
    # would leave every job pending. With no active job a tick is one small SELECT.
    default_status=DefaultSensorStatus.RUNNING,
    description="Runs each active export job's next day (or the next pass of a day not final "
    "yet), one run per job at a time, in order; one-day jobs of partition runs too.",
)
def gestao_scouter_export_driver(
    context: SensorEvaluationContext, tabuladormax_db: DatabaseResource
) -> SensorResult | SkipReason:
    db = tabuladormax_db.db
    now = now_sao_paulo()
    today = now.date()
    requests = []
    # Both kinds: the control job's periods and the one-day jobs of partition runs (a reset
    # or resumed one is run here like any other; an open day of one is re-read here).
    for job_row in export_jobs.list_jobs(db, export_jobs.ACTIVE):
        tags = {JOB_TAG: str(job_row.id), GENERATION_TAG: str(job_row.generation)}
        if _run_in_progress(context.instance, tags={JOB_TAG: str(job_row.id)}):
            continue  # its current day is still running
        day = job_row.next_day(today)
        if day is None:
            export_jobs.complete_job(db, job_row.id)
            context.log.info(f"export job {job_row.id} completed")
            continue
        if job_row.next_pass_at is not None and job_row.next_pass_at > now:
            continue  # a day not final yet, re-read later
        if _day_run_in_progress(context.instance, day.isoformat()):
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
        # A pass of a day not final yet gets a key of its own (its due time), so the next
        # pass of the same day is a new run.
        pass_key = f"-{job_row.next_pass_at:%Y%m%dT%H%M%S}" if job_row.next_pass_at else ""
        config = {"config": {"job_id": job_row.id}}
        requests.append(
            RunRequest(
                run_key=f"gs-export-{job_row.id}-g{job_row.generation}-{day.isoformat()}{pass_key}",
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
        return SkipReason("no export job has a day (or a pass of an open day) due")
    return SensorResult(run_requests=requests)


class PurgeConfig(Config):
    retention_days: int = Field(
        default=0,
        description="Keep this many days; 0 = GESTAO_SCOUTER_ERROR_RETENTION_DAYS (90).",
    )


@op(description="Delete gestao_scouter_export_errors rows older than the retention.")
def purge_export_errors(
    context: OpExecutionContext,
    config: PurgeConfig,
    tabuladormax_db: DatabaseResource,
    gestao_scouter: GestaoScouterResource,
) -> None:
    days = config.retention_days or gestao_scouter.error_retention_days
    deleted = export_jobs.purge_errors(tabuladormax_db.db, days)
    context.log.info(f"purged {deleted} export error rows older than {days} days")


@job(name="gestao_scouter_error_purge", description="Purge old Gestão Scouter export errors.")
def error_purge_job() -> None:
    purge_export_errors()


error_purge_schedule = ScheduleDefinition(
    name="gestao_scouter_error_purge_daily",
    description="Daily at 03:30 (São Paulo): delete export error rows older than "
    "GESTAO_SCOUTER_ERROR_RETENTION_DAYS (90).",
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
    if not gestao_scouter.reverse_sync_on:
        context.log.info("GESTAO_SCOUTER_REVERSE_SYNC is off: nothing done")
        return
    _, mapping = mapping_for(tabuladormax_db.db, None, gestao_scouter.field_mappings)
    with gestao_scouter.client() as client:
        result = reverse_sync(tabuladormax_db.db, client, mapping, run_id=context.run.run_id)
    context.log.info(
        f"reverse sync: {result.seen} changed rows seen, {result.written} written to "
        f"TabuladorMax, {result.skipped_own} were the export's own, {result.skipped_older} older"
    )
    if RUN_ID_COLUMN in source_columns(tabuladormax_db.db):
        context.add_output_metadata(
            run_rows_metadata(tabuladormax_db.db, context.run.run_id, [LEADS_TABLE])
        )
    else:
        context.log.info(
            f"TabuladorMax's {LEADS_TABLE} has no {RUN_ID_COLUMN} column: the leads written "
            "carry sync_source='gestao_scouter' and last_sync_at, not this run's id"
        )


@job(name="gestao_scouter_reverse_sync", description="Gestão Scouter → TabuladorMax (optional).")
def reverse_sync_job() -> None:
    reverse_sync_leads()


@sensor(
    job=reverse_sync_job,
    minimum_interval_seconds=60,
    # Bidirectional sync is optional (the users' document): the sensor runs, and each tick
    # skips saying so unless GESTAO_SCOUTER_REVERSE_SYNC=true. Its status is fixed here
    # rather than read from the environment when the module is imported.
    default_status=DefaultSensorStatus.RUNNING,
    description="Polls Gestão Scouter for leads changed since the reverse sync's cursor.",
)
def gestao_scouter_reverse_sync_sensor(
    context: SensorEvaluationContext,
    tabuladormax_db: DatabaseResource,
    gestao_scouter: GestaoScouterResource,
) -> RunRequest | SkipReason:
    if not gestao_scouter.reverse_sync_on:
        return SkipReason("GESTAO_SCOUTER_REVERSE_SYNC is not true")
    if _run_in_progress(context.instance, job_name="gestao_scouter_reverse_sync"):
        return SkipReason("a reverse sync run is in progress")
    from ..reverse import peek_changes

    with gestao_scouter.client() as client:
        change = peek_changes(tabuladormax_db.db, client)
    if change is None:
        return SkipReason("no lead changed in Gestão Scouter since the cursor")
    return RunRequest(run_key=f"gs-reverse-{change}")


stuck_jobs_job = define_asset_job(
    "gestao_scouter_stuck_jobs",
    selection=AssetSelection.checks(no_stuck_export_jobs),
    description="Flags export jobs stuck in 'running' (check no_stuck_export_jobs).",
)


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
    gestao_scouter: GestaoScouterResource,
):
    db = tabuladormax_db.db
    stuck = stuck_job_marks(db, gestao_scouter.stuck_after())
    flagged = flagged_jobs(db, AlertState(control_db.db))
    moved_on = {j: a for j, (a, status) in flagged.items() if status != "failed"}
    if not stuck and not moved_on:
        return SkipReason(f"no stuck export job; {len(flagged)} flagged, awaiting resume")
    # The run key names the episode (last progress; time of the flag), so one state is
    # checked once and a later episode of the same job again.
    key = ";".join(
        [f"stuck-{job_id}@{progress.isoformat()}" for job_id, progress in stuck]
        + [f"moved-{j}@{a.since.isoformat()}" for j, a in sorted(moved_on.items())]
    )
    return RunRequest(run_key=key)
