"""Dagster resources that wrap lib/: one database resource per target role, and Telegram.

Connection settings come from the environment of the code location (never from run config,
so no URL or password is shown in the UI or stored with a run): ``<ROLE>_DATABASE_URL`` or,
for every role at once, ``SYNC_DATABASE_URL`` with one schema per role (lib/db.py).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from .lib.db import Database, database_for_role, tenant_database
from .lib.telegram import SendResult, TelegramClient, parse_admin_ids


class DatabaseResource(ConfigurableResource):
    """One target database role (``tiny``, ``detran``, ``hubsoft``, ``tabuladormax``,
    ``whatsapp``, ``control``). The engine is created once per run process and disposed after."""

    role: str = Field(
        description="Database role; its URL comes from <ROLE>_DATABASE_URL or SYNC_DATABASE_URL."
    )
    _db: Database | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._db = None

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._db is not None:
            self._db.dispose()
            self._db = None

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = database_for_role(self.role)
        return self._db


class TenantDatabasesResource(ConfigurableResource):
    """Each tenant instance's own database, from ``LOCAL_SYNC_TENANT_URL_TEMPLATE``.

    ``database(instance)`` opens an engine for one tenant; callers dispose it when done so a
    run over many tenants never holds a pool per tenant at once.
    """

    def database(self, instance: str) -> Database:
        return tenant_database(instance)


@dataclass(frozen=True)
class NotificationOutcome:
    """What one admin notification did: per-chat results, or why nothing was sent."""

    results: list[SendResult] = field(default_factory=list)
    skipped_reason: str = ""

    @property
    def sent(self) -> int:
        return sum(1 for r in self.results if r.ok)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if not r.ok)


class TelegramResource(ConfigurableResource):
    """Admin notifications through a Telegram bot, configured from the environment:
    ``TELEGRAM_BOT_TOKEN`` (secret), ``ADMIN_USER_IDS`` (comma-separated chat ids) and
    ``TELEGRAM_API_BASE_URL`` (default ``https://api.telegram.org``; the sandbox points it
    at its simulator). The token is read at run time, never stored in config or metadata.

    Notifications are best effort: with no token or no admins they are skipped with a logged
    reason, and a Telegram error is logged, never raised, so a run never fails on them.
    """

    def client(self) -> TelegramClient | None:
        """A client, or None when notifications are not configured (see ``skip_reason``)."""
        if self.skip_reason():
            return None
        return TelegramClient(
            os.environ["TELEGRAM_BOT_TOKEN"].strip(),
            parse_admin_ids(os.environ.get("ADMIN_USER_IDS", "")),
            base_url=os.environ.get("TELEGRAM_API_BASE_URL", "").strip()
            or "https://api.telegram.org",
        )

    def skip_reason(self) -> str:
        if not os.environ.get("TELEGRAM_BOT_TOKEN", "").strip():
            return "TELEGRAM_BOT_TOKEN is not set: admin notifications are off"
        if not parse_admin_ids(os.environ.get("ADMIN_USER_IDS", "")):
            return "ADMIN_USER_IDS is empty: no admin to notify"
        return ""

    def notify_admins(
        self, text: str, log: logging.Logger | None = None, *, parse_mode: str | None = None
    ) -> NotificationOutcome:
        """Send ``text`` to every admin; never raises. ``log`` gets one line per outcome."""
        log = log or logging.getLogger("sync_pipelines.telegram")
        reason = self.skip_reason()
        if reason:
            log.info(f"admin notification skipped: {reason}")
            return NotificationOutcome(skipped_reason=reason)
        try:
            with self.client() as client:  # type: ignore[union-attr]
                results = client.send_admins(text, parse_mode=parse_mode)
        except Exception as exc:  # noqa: BLE001 - a notification must never fail the run
            log.warning(f"admin notification failed: {type(exc).__name__}: {exc}")
            return NotificationOutcome(skipped_reason=f"{type(exc).__name__}")
        outcome = NotificationOutcome(results=results)
        failures = [f"{r.chat_id}: {r.error}" for r in results if not r.ok]
        if failures:
            log.warning(
                f"admin notification sent to {outcome.sent} chat(s), failed for "
                f"{outcome.failed}: {'; '.join(failures)}"
            )
        else:
            log.info(f"admin notification sent to {outcome.sent} chat(s)")
        return outcome


def database_resources() -> dict[str, ConfigurableResource]:
    """The resource keys every source uses: ``<role>_db``."""
    roles = ("control", "tiny", "detran", "hubsoft", "tabuladormax", "whatsapp")
    resources: dict[str, ConfigurableResource] = {
        f"{role}_db": DatabaseResource(role=role) for role in roles
    }
    resources["tenant_dbs"] = TenantDatabasesResource()
    resources["telegram"] = TelegramResource()
    return resources
