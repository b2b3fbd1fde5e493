"""DETRAN's own resource: the e-CNHsp portal and how a run uses it."""

import datetime as dt
import os
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from ..client import PortalSettings
from ..sync import SyncOptions


class DetranPortalResource(ConfigurableResource):
    """The e-CNHsp portal. Its URL and the credentials key come from the environment
    (``DETRAN_PORTAL_URL``, ``DETRAN_CREDENTIALS_KEY``), never from run config."""

    diagnostics_dir: str | None = Field(
        default=None,
        description="Folder for unrecognised pages (PII-masked); default DETRAN_DIAGNOSTICS_DIR.",
    )
    session_ttl_minutes: int = Field(default=45, description="How long a cached session is reused.")
    touch_interval_minutes: int = Field(
        default=60, description="How stale last_seen_at of an unchanged slot may get."
    )
    logout_after_run: bool | None = Field(
        default=None,
        description="Log out at the end of each run (no session reuse); default "
        "DETRAN_LOGOUT_AFTER_RUN, false.",
    )

    def settings(self) -> PortalSettings:
        settings = PortalSettings.from_env()
        if self.diagnostics_dir:
            settings = PortalSettings(
                settings.base_url, Path(self.diagnostics_dir), settings.timeout, settings.retry
            )
        return settings

    def options(self, holder_hint: str) -> SyncOptions:
        logout = self.logout_after_run
        if logout is None:
            logout = os.environ.get("DETRAN_LOGOUT_AFTER_RUN", "").strip().lower() in (
                "1",
                "true",
                "yes",
            )
        return SyncOptions(
            touch_interval=dt.timedelta(minutes=self.touch_interval_minutes),
            logout_after_run=logout,
            holder_hint=holder_hint,
        )
