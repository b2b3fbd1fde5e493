"""What a run of each job may take: how long (``dagster/max_runtime``, after which the daemon
fails it) and, on Kubernetes, the CPU and memory of its pod (``dagster-k8s/config``).

The second bound on a stuck run (the first is the run worker health check of
``operations/run_launcher.py`` locally, the K8sRunLauncher's pod check on Kubernetes): a worker
that hangs without dying, or that runs where its process cannot be checked, is failed once its
job's bound is over, and ``run_retries`` launches it again. Each bound is a few times what the
job normally takes and shorter than the gap that would let its schedule pile runs up behind it
(the per-examiner tag limit queues a DETRAN examiner's runs behind a stuck one). A run of no
listed job (an asset launched from the UI, a backfill of the historical load) keeps
``run_monitoring.max_runtime_seconds`` of dagster.yaml.

Pod sizes follow the job's kind (``POD_SIZES``): the K8sRunLauncher reads the tag, other
launchers ignore it, and a run of no listed job gets the chart's default run pod
(``deploy/values.yaml``). The bounds live here, in one place, and are applied to the merged
Definitions in ``definitions.py``: ``defs = with_run_limits(...)``.
"""

from __future__ import annotations

import json

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
    # Tiny reparse: one month of stored orders, database only (seconds for thousands).
    "tiny_reparse": 30 * MINUTE,
    # DETRAN: one examiner's day (a few portal pages), every 15 min for the next days.
    "detran_agenda_sync": 15 * MINUTE,
    # DETRAN's schedules: every examiner's window in one run, examiner after examiner. Sized
    # for 20 examiners × 11 days (the 2-hourly window) on a slow portal, about 5 s a page:
    # ~20 min; a stuck run frees the examiners' locks after 30 min (the 15-minute window's
    # ticks are skipped while its run is unfinished, so they do not pile up meanwhile).
    "detran_all_examiners_sync": 30 * MINUTE,
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


# Requests are what the job needs on a quiet day; memory limits leave room for its largest
# batch. An API sync holds a page or a batch at a time; a tenant sync holds a table's rows.
POD_SIZES: dict[str, dict[str, dict[str, str]]] = {
    "api": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
    "batch": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
    "bulk": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "3Gi"}},
}
JOB_KINDS: dict[str, str] = {
    "tiny_incremental_sync": "api",
    "tiny_import_failure_retries": "api",
    "tiny_integrity_check": "batch",
    "tiny_reparse": "batch",
    "detran_agenda_sync": "api",
    "detran_all_examiners_sync": "api",
    "sync_tickets": "api",
    "hubsoft_health_report": "api",
    "gestao_scouter_export": "batch",
    "gestao_scouter_export_control": "api",
    "gestao_scouter_error_purge": "api",
    "gestao_scouter_reverse_sync": "batch",
    "gestao_scouter_stuck_jobs": "api",
    "local_sync_job": "bulk",
}
K8S_CONFIG_TAG = "dagster-k8s/config"


def run_tags_for(job_name: str) -> dict[str, str]:
    """The limit tags a run of ``job_name`` carries."""
    resources = POD_SIZES[JOB_KINDS[job_name]]
    return {
        MAX_RUNTIME_SECONDS_TAG: str(MAX_RUNTIME_SECONDS[job_name]),
        K8S_CONFIG_TAG: json.dumps({"container_config": {"resources": resources}}),
    }


def _with_tags(job, tag: dict[str, str]):
    # Both the job's tags (what the UI shows and a launch from the UI or GraphQL copies into
    # the run) and its run tags (what schedules, sensors and backfills put on their runs).
    if isinstance(job, UnresolvedAssetJobDefinition):
        # run_tags falls back to tags when unset, so both stay what the source declared.
        run_tags = dict(job.run_tags or job.tags or {})
        return replace(job, tags={**(job.tags or {}), **tag}, run_tags={**run_tags, **tag})
    if isinstance(job, JobDefinition):
        return job._copy(  # noqa: SLF001 - Dagster's own copy, as its with_* methods use
            tags={**job.tags, **tag}, run_tags={**job.run_tags, **tag}
        )
    raise TypeError(f"job {job.name!r}: cannot tag a {type(job).__name__}")


def with_run_limits(defs: Definitions) -> Definitions:
    """``defs`` with each listed job's runs tagged with its limits (``run_tags_for``);
    schedules and sensors that target a job are pointed at its tagged copy."""
    tagged = {
        job.name: _with_tags(job, run_tags_for(job.name))
        for job in defs.jobs or []
        if job.name in MAX_RUNTIME_SECONDS
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
