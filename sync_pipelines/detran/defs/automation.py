"""What runs the DETRAN assets: the sync job, the examiner sensor and the two schedules.

- ``detran_examiners_sensor`` adds every active examiner of ``detran_examiners`` as a
  partition (running by default: without it a new examiner is never synced).
- ``detran_next_3_days`` (every 15 min) and ``detran_days_4_to_14`` (every 2 h): ONE run per
  tick of ``detran_all_examiners_sync`` over the partition range "window days × registered
  examiners", which syncs every examiner with auto-sync on their work days, one after the
  other (``partition_ranges.py``): 96 + 12 = 108 runs a day whatever the number of examiners
  (one run per examiner × day made 420 runs per examiner a day). A tick is skipped while the
  previous run of the same window is still queued or running. Running by default: the users
  rely on them, and each examiner's ``auto_sync`` flag is the switch that says who is synced.
- ``detran_agenda_sync``: one examiner's day, as launched from the UI or the CLI; its runs
  carry ``examiner=<id>`` so dagster.yaml's tag limit queues them one at a time per examiner.
  The all-examiner run cannot carry one examiner's tag: the examiner's advisory lock keeps
  the two apart (the all-examiner run skips an examiner locked by a UI re-sync; the UI
  re-sync of an examiner the all-examiner run is reading stops at once and says so).
"""

import datetime as dt
from zoneinfo import ZoneInfo

from dagster import (
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    PartitionedConfig,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    schedule,
    sensor,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from ...resources import DatabaseResource
from ..examiners import list_examiners
from .assets import agenda_slots, agendamentos
from .partition_ranges import AUTO_SYNC_SCOPE, SCOPE_TAG
from .partitions import (
    DAYS_AHEAD,
    EXAMINERS_PARTITIONS,
    TZ,
    agenda_partitions,
    examiner_partitions,
    partition_key,
    split_partition,
)


def _examiner_tag(key: str) -> dict[str, str]:
    return {"examiner": str(split_partition(key)[1])}


detran_agenda_job = define_asset_job(
    "detran_agenda_sync",
    selection=[agenda_slots, agendamentos],
    description="One examiner's day: portal → agenda_slots → agendamentos.",
    # Every run of this job (schedules, UI launches, backfills) carries examiner=<id>, which
    # dagster.yaml limits to one run at a time per examiner.
    config=PartitionedConfig(
        partitions_def=agenda_partitions,
        run_config_for_partition_key_fn=lambda key: {},
        tags_for_partition_key_fn=_examiner_tag,
    ),
)

detran_all_examiners_job = define_asset_job(
    "detran_all_examiners_sync",
    # agenda_slots alone: over a range it makes each synced day's appointments itself and
    # reports detran/agendamentos for that day (a separate step would be skipped, as the
    # range step reports its partitions one by one instead of yielding one output).
    selection=[agenda_slots],
    description="The schedules' run: many examiners' days (a partition range) in one run, "
    "examiner after examiner, each under their own lock and portal session.",
)

WINDOW_TAG = "detran/window"
# Runs that still hold (or are about to take) the examiners a new tick would sync.
_UNFINISHED = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


@sensor(
    name="detran_examiners_sensor",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Adds every active examiner of detran_examiners as a partition.",
)
def detran_examiners_sensor(context: SensorEvaluationContext, detran_db: DatabaseResource):
    wanted = [e.partition_key for e in list_examiners(detran_db.db)]
    existing = set(context.instance.get_dynamic_partitions(EXAMINERS_PARTITIONS))
    new = [k for k in wanted if k not in existing]
    if not new:
        return SkipReason(f"{len(wanted)} active examiner(s), all already partitions")
    context.log.info(f"adding examiner partition(s): {', '.join(new)}")
    return SensorResult(dynamic_partitions_requests=[examiner_partitions.build_add_request(new)])


def window_run_requests(
    context: ScheduleEvaluationContext, db, first_offset: int, last_offset: int, window: str
) -> list[RunRequest] | SkipReason:
    """One run over the partition range [today+first .. days with work] × [first .. last
    registered examiner with auto-sync and work in the window]; the run narrows the box to
    each examiner's work days (tag ``detran/scope=auto_sync``)."""
    when = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    today = when.astimezone(ZoneInfo(TZ)).date()
    registered = list(context.instance.get_dynamic_partitions(EXAMINERS_PARTITIONS))
    window_days = [today + dt.timedelta(days=o) for o in range(first_offset, last_offset + 1)]
    work: dict[str, list[dt.date]] = {}
    for examiner in list_examiners(db):
        if not examiner.auto_sync or examiner.partition_key not in registered:
            continue
        days = [d for d in window_days if examiner.works_on(d)]
        if days:
            work[examiner.partition_key] = days
    if not work:
        return SkipReason("no examiner with auto-sync works on these days (or none registered)")
    unfinished = context.instance.get_run_ids(
        RunsFilter(
            job_name=detran_all_examiners_job.name,
            statuses=_UNFINISHED,
            tags={WINDOW_TAG: window},
        ),
        limit=1,
    )
    if unfinished:
        # The examiners are still being synced for this window: a second run would only
        # find their locks taken. This tick's reads happen in that run or the next tick.
        return SkipReason(f"run {unfinished[0]} of this window has not finished yet")
    # The examiners dimension is ordered as the partitions were added: the range from the
    # first to the last examiner with work covers all of them (and those between, whom the
    # run leaves out unless they have auto-sync and work that day).
    examiners = sorted(work, key=registered.index)
    first_day = min(min(days) for days in work.values())
    last_day = max(max(days) for days in work.values())
    start = str(partition_key(first_day, examiners[0]))
    end = str(partition_key(last_day, examiners[-1]))
    return [
        RunRequest(
            run_key=f"{window}@{when.isoformat()}",
            tags={
                ASSET_PARTITION_RANGE_START_TAG: start,
                ASSET_PARTITION_RANGE_END_TAG: end,
                SCOPE_TAG: AUTO_SYNC_SCOPE,
                WINDOW_TAG: window,
                "detran/examiners": str(len(examiners)),
            },
        )
    ]


@schedule(
    name="detran_next_3_days",
    cron_schedule="*/15 * * * *",
    execution_timezone=TZ,
    job=detran_all_examiners_job,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Today and the next 2 days of every examiner with auto-sync, every 15 minutes, "
    "in one run.",
)
def detran_next_3_days(context: ScheduleEvaluationContext, detran_db: DatabaseResource):
    return window_run_requests(context, detran_db.db, 0, 2, "days_1_to_3")


@schedule(
    name="detran_days_4_to_14",
    cron_schedule="0 */2 * * *",
    execution_timezone=TZ,
    job=detran_all_examiners_job,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Days 4 to 14 of every examiner with auto-sync, every 2 hours, in one run.",
)
def detran_days_4_to_14(context: ScheduleEvaluationContext, detran_db: DatabaseResource):
    return window_run_requests(context, detran_db.db, 3, DAYS_AHEAD - 1, "days_4_to_14")
