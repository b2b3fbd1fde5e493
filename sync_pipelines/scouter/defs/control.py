"""``gestao_scouter_export_control``: start (a period), pause, resume or reset an export job
(Launchpad in the UI, or ``dagster job execute`` on the CLI); the driver sensor runs its days."""

import datetime as dt
import json

from dagster import Config, Failure, OpExecutionContext, job, op
from pydantic import Field

from ...resources import DatabaseResource
from .. import jobs as export_jobs
from ..mapping import MappingError, resolve_mapping
from ..source import source_columns, today_sao_paulo
from .resources import GestaoScouterResource, default_field_mappings


class ExportControlConfig(Config):
    """What to do with an export job. ``start`` creates one for a period."""

    action: str = Field(description="start | pause | resume | reset")
    job_id: int | None = Field(default=None, description="The job (pause/resume/reset).")
    start_date: str | None = Field(default=None, description="start: first day, YYYY-MM-DD")
    end_date: str | None = Field(
        default=None,
        description="start: last day (empty: today, São Paulo); the job completes once its "
        "last day has ended in São Paulo plus a margin (README, Gestão Scouter)",
    )
    field_mappings: str = Field(
        default="",
        description='start: JSON {"destination": "source"} merged over the default mapping '
        "(empty: GESTAO_SCOUTER_FIELD_MAPPINGS or the default)",
    )
    reason: str = Field(default="", description="pause: why (shown on the job)")


@op(description="Start, pause, resume or reset a Gestão Scouter export job.")
def export_job_control(
    context: OpExecutionContext,
    config: ExportControlConfig,
    tabuladormax_db: DatabaseResource,
    gestao_scouter: GestaoScouterResource,
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
                else default_field_mappings(gestao_scouter.field_mappings)
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
                today=today_sao_paulo(),
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
        f"{job_row.last_completed_date or '-'}); the driver sensor "
        f"(gestao_scouter_export_driver) runs its days"
    )


@job(
    name="gestao_scouter_export_control",
    description="Start (a period), pause, resume or reset a Gestão Scouter export job.",
)
def export_control_job() -> None:
    export_job_control()
