"""DETRAN's own resource: the e-CNHsp portal and how a run uses it."""

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from ...lib.db import Database
from ...resources import env_or
from ..client import DEFAULT_PORTAL_URL, PortalSettings
from ..examiners import KEY_VAR
from ..sessions import SessionCache
from ..sync import SyncOptions

DEFAULT_DIAGNOSTICS_DIR = ".diagnostics/detran"


class DetranPortalResource(ConfigurableResource):
    """The e-CNHsp portal. Set in ``Definitions`` from DETRAN_PORTAL_URL,
    DETRAN_CREDENTIALS_KEY (secret: decrypts the examiners' stored passwords),
    DETRAN_DIAGNOSTICS_DIR and DETRAN_LOGOUT_AFTER_RUN with ``EnvVar``; never from run config."""

    portal_url: str = Field(default=DEFAULT_PORTAL_URL, description="DETRAN_PORTAL_URL.")
    credentials_key: str | None = Field(
        default=None,
        description=f"{KEY_VAR} (secret); unset: a sync fails saying how to make one.",
    )
    diagnostics_dir: str = Field(
        default=DEFAULT_DIAGNOSTICS_DIR,
        description="DETRAN_DIAGNOSTICS_DIR: folder for unrecognised pages (PII-masked).",
    )
    session_ttl_minutes: int = Field(default=45, description="How long a cached session is reused.")
    touch_interval_minutes: int = Field(
        default=60, description="How stale last_seen_at of an unchanged slot may get."
    )
    removal_alert_share: str = Field(
        default="",
        description="DETRAN_REMOVAL_ALERT_SHARE: alert when one read removes more of an "
        "examiner's day (0.30 or 30%; empty: 0.30).",
    )
    failure_rate_alert: str = Field(
        default="",
        description="DETRAN_FAILURE_RATE_ALERT: the check fails above this share of failed runs "
        "in 24 h (empty: 0.50).",
    )
    logout_after_run: str = Field(
        default="false",
        description="DETRAN_LOGOUT_AFTER_RUN: log out at the end of each run (no session reuse).",
    )

    @classmethod
    def from_env_vars(cls, env: Mapping[str, str] | None = None) -> "DetranPortalResource":
        return cls(
            portal_url=env_or("DETRAN_PORTAL_URL", DEFAULT_PORTAL_URL, env),
            credentials_key=env_or(KEY_VAR, None, env),
            diagnostics_dir=env_or("DETRAN_DIAGNOSTICS_DIR", DEFAULT_DIAGNOSTICS_DIR, env),
            logout_after_run=env_or("DETRAN_LOGOUT_AFTER_RUN", "false", env),
            removal_alert_share=env_or("DETRAN_REMOVAL_ALERT_SHARE", "", env),
            failure_rate_alert=env_or("DETRAN_FAILURE_RATE_ALERT", "", env),
        )

    def settings(self) -> PortalSettings:
        return PortalSettings(
            base_url=self.portal_url.strip() or DEFAULT_PORTAL_URL,
            diagnostics_dir=Path(self.diagnostics_dir.strip() or DEFAULT_DIAGNOSTICS_DIR),
        )

    def key_env(self) -> dict[str, str] | None:
        """The key as examiners.py's encrypt/decrypt take it."""
        return {KEY_VAR: self.credentials_key} if self.credentials_key else None

    def session_cache(self, db: Database) -> SessionCache:
        """The examiners' cached portal sessions, cookies encrypted under the key."""
        return SessionCache(
            db,
            self.settings().base_url,
            ttl=dt.timedelta(minutes=self.session_ttl_minutes),
            env=self.key_env(),
        )

    def run_options(self, run_id: str) -> SyncOptions:
        """How the Dagster run ``run_id`` syncs: its id names the lock holder and stamps the
        rows it writes."""
        return SyncOptions(
            run_id=run_id,
            touch_interval=dt.timedelta(minutes=self.touch_interval_minutes),
            logout_after_run=self.logout_after_run.strip().lower() in ("1", "true", "yes"),
            holder_hint=f"(this is Dagster run {run_id})",
            credentials_key=self.credentials_key,
        )
