"""The Gestão Scouter resource and the field mapping every run resolves (the job's own
overrides, or GESTAO_SCOUTER_FIELD_MAPPINGS over the default)."""

import json
import os
from typing import Any

from dagster import ConfigurableResource, Failure
from pydantic import Field

from .. import jobs as export_jobs
from ..client import GestaoScouterClient, settings_from_env
from ..mapping import FieldMapping, MappingError, resolve_mapping


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


def mapping_for(db, job_id: int | None) -> tuple[dict[str, Any], FieldMapping]:
    """The overrides and resolved mapping of an export job (None: the environment's)."""
    overrides = (
        export_jobs.get_job(db, job_id).field_mappings
        if job_id is not None
        else default_field_mappings()
    )
    try:
        return overrides, resolve_mapping(overrides)
    except MappingError as exc:
        raise Failure(f"invalid field mapping: {exc}") from None
