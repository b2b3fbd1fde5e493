"""The Gestão Scouter resource and the field mapping every run resolves (the job's own
overrides, or GESTAO_SCOUTER_FIELD_MAPPINGS over the default)."""

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from dagster import ConfigurableResource, Failure
from pydantic import Field

from ...resources import env_or
from .. import jobs as export_jobs
from ..client import KEY_VAR, URL_VAR, GestaoScouterClient, settings_from_variables
from ..mapping import FieldMapping, MappingError, resolve_mapping
from ..stuck import DEFAULT_STUCK_AFTER_MINUTES, STUCK_AFTER_VAR, stuck_after


class GestaoScouterResource(ConfigurableResource):
    """Gestão Scouter's PostgREST, set in ``Definitions`` from GESTAO_SCOUTER_URL,
    GESTAO_SCOUTER_SERVICE_KEY (secret) and GESTAO_SCOUTER_BATCH_SIZE with ``EnvVar``: the UI
    shows the names, never the key. Unset, the first run that calls Gestão Scouter fails
    naming the variable (a deployment that does not export leads needs neither)."""

    url: str | None = Field(default=None, description=f"{URL_VAR}: https://<project>.supabase.co")
    service_key: str | None = Field(default=None, description=f"{KEY_VAR} (secret).")
    batch_size: int = Field(default=50, description="GESTAO_SCOUTER_BATCH_SIZE: leads per request.")
    field_mappings: str = Field(
        default="",
        description='GESTAO_SCOUTER_FIELD_MAPPINGS: JSON {"destination": "source"} overrides.',
    )
    error_retention_days: int = Field(
        default=90, description="GESTAO_SCOUTER_ERROR_RETENTION_DAYS: error rows kept."
    )
    stuck_after_minutes: int = Field(
        default=DEFAULT_STUCK_AFTER_MINUTES,
        description=f"{STUCK_AFTER_VAR}: a running job without progress this long is stuck.",
    )
    reverse_sync: str = Field(
        default="false",
        description="GESTAO_SCOUTER_REVERSE_SYNC: true writes Gestão Scouter's changes back.",
    )

    @classmethod
    def from_env_vars(cls, env: Mapping[str, str] | None = None) -> "GestaoScouterResource":
        return cls(
            url=env_or(URL_VAR, None, env),
            service_key=env_or(KEY_VAR, None, env),
            batch_size=env_or("GESTAO_SCOUTER_BATCH_SIZE", 50, env),
            reverse_sync=env_or("GESTAO_SCOUTER_REVERSE_SYNC", "false", env),
            field_mappings=env_or("GESTAO_SCOUTER_FIELD_MAPPINGS", "", env),
            error_retention_days=env_or("GESTAO_SCOUTER_ERROR_RETENTION_DAYS", 90, env),
            stuck_after_minutes=env_or(STUCK_AFTER_VAR, DEFAULT_STUCK_AFTER_MINUTES, env),
        )

    def stuck_after(self) -> dt.timedelta:
        return stuck_after(self.stuck_after_minutes)

    @property
    def reverse_sync_on(self) -> bool:
        return self.reverse_sync.strip().lower() in ("1", "true", "yes", "on")

    def client(self) -> GestaoScouterClient:
        return GestaoScouterClient.from_settings(
            settings_from_variables({URL_VAR: self.url or "", KEY_VAR: self.service_key or ""})
        )

    def effective_batch_size(self) -> int:
        return self.batch_size


def default_field_mappings(raw: str) -> dict[str, Any]:
    """GESTAO_SCOUTER_FIELD_MAPPINGS (JSON ``{"destination": "source"}``) over the default."""
    raw = (raw or "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise Failure(f"GESTAO_SCOUTER_FIELD_MAPPINGS is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise Failure('GESTAO_SCOUTER_FIELD_MAPPINGS must be a JSON object {"dest": "source"}')
    return value


def mapping_for(db, job_id: int | None, default_raw: str) -> tuple[dict[str, Any], FieldMapping]:
    """The overrides and resolved mapping of an export job (None: ``default_raw``, the
    resource's GESTAO_SCOUTER_FIELD_MAPPINGS)."""
    overrides = (
        export_jobs.get_job(db, job_id).field_mappings
        if job_id is not None
        else default_field_mappings(default_raw)
    )
    try:
        return overrides, resolve_mapping(overrides)
    except MappingError as exc:
        raise Failure(f"invalid field mapping: {exc}") from None
