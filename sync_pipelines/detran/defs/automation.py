"""What runs the DETRAN assets: the sync job, the examiner sensor and the two schedules.

- ``detran_examiners_sensor`` adds every active examiner of ``detran_examiners`` as a
  partition (running by default: without it a new examiner is never synced).
- ``detran_next_3_days`` (every 15 min) and ``detran_days_4_to_14`` (every 2 h): one run per
  examiner with auto-sync × work day, tagged ``examiner=<id>`` so dagster.yaml's tag limit
  queues runs of one examiner one at a time. Running by default: the users rely on them,
  and each examiner's ``auto_sync`` flag is the switch that says who is synced.
"""

import datetime as dt
from zoneinfo import ZoneInfo

from dagster import (
    DefaultScheduleStatus,
    DefaultSensorStatus,
    PartitionedConfig,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    schedule,
    sensor,
)

from ...resources import DatabaseResource
from ..examiners import list_examiners
from .assets import agenda_slots, agendamentos
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
    context: ScheduleEvaluationContext, db, first_offset: int, last_offset: int
) -> list[RunRequest] | SkipReason:
    """One run per auto-sync examiner × work day in [today+first, today+last]."""
    when = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    today = when.astimezone(ZoneInfo(TZ)).date()
    registered = set(context.instance.get_dynamic_partitions(EXAMINERS_PARTITIONS))
    requests = []
    for examiner in list_examiners(db):
        if not examiner.auto_sync or examiner.partition_key not in registered:
            continue
        for offset in range(first_offset, last_offset + 1):
            day = today + dt.timedelta(days=offset)
            if not examiner.works_on(day):
                continue
            key = partition_key(day, examiner.usuario_id)
            requests.append(
                RunRequest(
                    run_key=f"{key}@{when.isoformat()}",
                    partition_key=key,
                    tags={"examiner": examiner.partition_key},
                )
            )
    if not requests:
        return SkipReason("no examiner with auto-sync works on these days (or none registered)")
    return requests


@schedule(
    name="detran_next_3_days",
    cron_schedule="*/15 * * * *",
    execution_timezone=TZ,
    job=detran_agenda_job,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Today and the next 2 days of every examiner with auto-sync, every 15 minutes.",
)
def detran_next_3_days(context: ScheduleEvaluationContext, detran_db: DatabaseResource):
    return window_run_requests(context, detran_db.db, 0, 2)


@schedule(
    name="detran_days_4_to_14",
    cron_schedule="0 */2 * * *",
    execution_timezone=TZ,
    job=detran_agenda_job,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Days 4 to 14 of every examiner with auto-sync, every 2 hours.",
)
def detran_days_4_to_14(context: ScheduleEvaluationContext, detran_db: DatabaseResource):
    return window_run_requests(context, detran_db.db, 3, DAYS_AHEAD - 1)
