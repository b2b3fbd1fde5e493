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

Modules: ``partitions`` (group, asset keys, daily partitions), ``resources`` (the Gestão
Scouter resource, field mappings), ``assets`` (the two assets, their checks, the export job),
``control`` (the control job), ``automation`` (sensors, schedule, purge and reverse-sync jobs).
"""

from dagster import Definitions

from .assets import (
    STUCK_ALERT,
    ExportRunConfig,
    flagged_jobs,
    gestao_scouter_export,
    leads_export,
    no_stuck_export_jobs,
    schema_validation,
)
from .automation import (
    GENERATION_TAG,
    JOB_TAG,
    PurgeConfig,
    error_purge_job,
    error_purge_schedule,
    gestao_scouter_export_driver,
    gestao_scouter_reverse_sync_sensor,
    gestao_scouter_stuck_jobs_sensor,
    purge_export_errors,
    reverse_sync_job,
    reverse_sync_leads,
    stuck_jobs_job,
)
from .control import ExportControlConfig, export_control_job, export_job_control
from .partitions import EXPORT_KEY, GROUP, SCHEMA_KEY, TZ, daily
from .resources import GestaoScouterResource, default_field_mappings, mapping_for

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
)

__all__ = [
    "EXPORT_KEY",
    "GENERATION_TAG",
    "GROUP",
    "JOB_TAG",
    "SCHEMA_KEY",
    "STUCK_ALERT",
    "TZ",
    "ExportControlConfig",
    "ExportRunConfig",
    "GestaoScouterResource",
    "PurgeConfig",
    "daily",
    "default_field_mappings",
    "defs",
    "error_purge_job",
    "error_purge_schedule",
    "export_control_job",
    "export_job_control",
    "flagged_jobs",
    "gestao_scouter_export",
    "gestao_scouter_export_driver",
    "gestao_scouter_reverse_sync_sensor",
    "gestao_scouter_stuck_jobs_sensor",
    "leads_export",
    "mapping_for",
    "no_stuck_export_jobs",
    "purge_export_errors",
    "reverse_sync_job",
    "reverse_sync_leads",
    "schema_validation",
    "stuck_jobs_job",
]
