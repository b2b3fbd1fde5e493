"""How long a run of each job may take before the daemon fails it: ``dagster/max_runtime``.

The second bound on a stuck run (the first is the run worker health check of
``operations/run_launcher.py`` locally, the K8sRunLauncher's pod check on Kubernetes): a worker
that hangs without dying, or that runs where its process cannot be checked, is failed once its
job's bound is over, and ``run_retries`` launches it again. Each bound is a few times what the
job normally takes and shorter than the gap that would let its schedule pile runs up behind it
(the per-examiner tag limit queues a DETRAN examiner's runs behind a stuck one). A run of no
listed job (an asset launched from the UI, a backfill of the historical load) keeps
``run_monitoring.max_runtime_seconds`` of dagster.yaml.

The bounds live here, in one place, and are applied to the merged Definitions in
``definitions.py``: ``defs = with_max_runtime(...)``.
"""

from __future__ import annotations

from dagster import Definitions, JobDefinition
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.storage.tags import MAX_RUNTIME_SECONDS_TAG
from dagster._record import replace

MINUTE = 60
HOUR = 60 * MINUTE

MAX_RUNTIME_SECONDS: dict[str, int] = {
    # Tiny: incremental every 15 min, failed-import retries every 5 min, integrity nightly.
    "tiny_incremental_sync": 1 * HOUR,
    "tiny_import_failure_retries": 20 * MINUTE,
    "tiny_integrity_check": 2 * HOUR,
    # DETRAN: one examiner's day (a few portal pages), every 15 min for the next days.
    "detran_agenda_sync": 15 * MINUTE,
    # HubSoft: recovery every 30 min, status every 15 min; the health report is one call.
    "sync_tickets": 30 * MINUTE,
    "hubsoft_health_report": 10 * MINUTE,
    # Gestão Scouter: a day's export in batches; control, purge and stuck-job sweeps are small.
    "gestao_scouter_export": 2 * HOUR,
    "gestao_scouter_export_control": 10 * MINUTE,
    "gestao_scouter_error_purge": 30 * MINUTE,
    "gestao_scouter_reverse_sync": 1 * HOUR,
    "gestao_scouter_stuck_jobs": 10 * MINUTE,
    # Local tenant sync: one tenant's contacts and chats, every 6 hours.
    "local_sync_job": 3 * HOUR,
}


def _with_tag(job, seconds: int):
    # Both the job's tags (what the UI shows and a launch from the UI or GraphQL copies into
    # the run) and its run tags (what schedules, sensors and backfills put on their runs).
    tag = {MAX_RUNTIME_SECONDS_TAG: str(seconds)}
    if isinstance(job, UnresolvedAssetJobDefinition):
        # run_tags falls back to tags when unset, so both stay what the source declared.
        run_tags = dict(job.run_tags or job.tags or {})
        return replace(job, tags={**(job.tags or {}), **tag}, run_tags={**run_tags, **tag})
    if isinstance(job, JobDefinition):
        return job._copy(  # noqa: SLF001 - Dagster's own copy, as its with_* methods use
            tags={**job.tags, **tag}, run_tags={**job.run_tags, **tag}
        )
    raise TypeError(f"job {job.name!r}: cannot tag a {type(job).__name__}")


def with_max_runtime(
    defs: Definitions, bounds: dict[str, int] = MAX_RUNTIME_SECONDS
) -> Definitions:
    """``defs`` with each listed job's runs tagged ``dagster/max_runtime``; schedules and
    sensors that target a job are pointed at its tagged copy (one object per job name)."""
    tagged = {
        job.name: _with_tag(job, bounds[job.name]) for job in defs.jobs or [] if job.name in bounds
    }
    jobs = [tagged.get(job.name, job) for job in defs.jobs or []]
    schedules = [
        schedule.with_updated_job(tagged[schedule.job_name])
        if getattr(schedule, "has_job", False) and schedule.job_name in tagged
        else schedule
        for schedule in defs.schedules or []
    ]
    sensors = []
    for sensor in defs.sensors or []:
        targets = [t.job_def for t in getattr(sensor, "targets", []) if t.has_job_def]
        if targets and any(job.name in tagged for job in targets):
            sensor = sensor.with_updated_jobs([tagged.get(job.name, job) for job in targets])
        sensors.append(sensor)
    return replace(defs, jobs=jobs, schedules=schedules, sensors=sensors)
