"""Dagster resources that wrap lib/: one database resource per target role, and Telegram.

Every field that comes from the environment is set in ``Definitions`` with ``EnvVar("NAME")``
(see ``database_resources``), so the UI's Resources page names the variable and never shows its
value, and no URL or password is stored with a run. Dagster resolves an ``EnvVar`` only when a
run starts; ``require_env`` makes the variables a code location cannot work without fail at
load instead, naming them. Optional variables are wired only when set (``env_or``): unset,
the field keeps its documented default.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dagster import ConfigurableResource, DagsterInvalidDefinitionError, EnvVar
from pydantic import Field, PrivateAttr

from .lib.db import ROLES, SHARED_URL_VAR, TENANT_TEMPLATE_VAR, Database, create_database
from .lib.db import tenant_database as _tenant_database
from .lib.telegram import SendResult, TelegramClient, parse_admin_ids


class MissingEnvironmentError(DagsterInvalidDefinitionError):
    """A variable the code location needs is not set; the message names it."""


def env_is_set(name: str, env: Mapping[str, str] | None = None) -> bool:
    return bool((os.environ if env is None else env).get(name, "").strip())


def env_or(name: str, default: Any, env: Mapping[str, str] | None = None) -> Any:
    """``EnvVar(name)`` when the variable is set, else ``default`` (an optional setting).

    An integer default asks for ``EnvVar.int`` so the field keeps its type.
    """
    if not env_is_set(name, env):
        return default
    return EnvVar.int(name) if isinstance(default, int) else EnvVar(name)


def require_env(*names: str, why: str, env: Mapping[str, str] | None = None) -> None:
    """Fail the code location's load, naming every variable of ``names`` that is unset."""
    missing = [n for n in names if not env_is_set(n, env)]
    if missing:
        raise MissingEnvironmentError(
            f"{why}: set {', '.join(missing)} in the code location's environment "
            "(.env.example lists every variable; `sync-pipelines sandbox` writes a working set "
            "into .sandbox/env)."
        )


class DatabaseResource(ConfigurableResource):
    """One target database role (``tiny``, ``detran``, ``hubsoft``, ``tabuladormax``,
    ``whatsapp``, ``control``). The engine is created once per run process and disposed after."""

    role: str = Field(description="Database role (lib/db.py ROLES).")
    url: str = Field(
        description="SQLAlchemy URL: <ROLE>_DATABASE_URL, or SYNC_DATABASE_URL shared by every "
        "role with one schema each."
    )
    schema_name: str | None = Field(
        default=None,
        description="PostgreSQL schema (search_path) of the role: <ROLE>_DATABASE_SCHEMA, or the "
        "role's own name when the URL is the shared SYNC_DATABASE_URL.",
    )
    _db: Database | None = PrivateAttr(default=None)

    @classmethod
    def for_role(cls, role: str, env: Mapping[str, str] | None = None) -> DatabaseResource:
        """The role's resource wired to its variables: its own URL wins over the shared one.

        Raises ``MissingEnvironmentError`` naming both variables when neither is set.
        """
        url_var, default_schema = ROLES[role]
        schema_var = url_var.replace("_URL", "_SCHEMA")
        if env_is_set(url_var, env):
            return cls(role=role, url=EnvVar(url_var), schema_name=env_or(schema_var, None, env))
        require_env(
            SHARED_URL_VAR,
            why=f"no database for role {role!r} (set {url_var} for its own database, or "
            f"{SHARED_URL_VAR} for one database shared by every role)",
            env=env,
        )
        return cls(
            role=role,
            url=EnvVar(SHARED_URL_VAR),
            schema_name=env_or(schema_var, default_schema, env),
        )

    def setup_for_execution(self, context) -> None:
        self._db = None

    def teardown_after_execution(self, context) -> None:
        if self._db is not None:
            self._db.dispose()
            self._db = None

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = create_database(self.role, self.url.strip(), self.schema_name or None)
        return self._db


class TenantDatabasesResource(ConfigurableResource):
    """Where each tenant instance's own database is, for the local sync.

    With ``url_template`` (``{instance}`` in it) every tenant's URL follows the template;
    without it, tenants are read from the main database's ``clients_servers`` table.
    ``database(instance)`` opens an engine for one tenant; callers dispose it when done so a
    run over many tenants never holds a pool per tenant at once.
    """

    url_template: str | None = Field(
        default=None,
        description=f"{TENANT_TEMPLATE_VAR}, e.g. mysql+pymysql://user:pw@host:3306/{{instance}}; "
        "unset: tenants come from the main database's clients_servers table.",
    )
    clients_servers_table: str = Field(
        default="clients_servers", description="LOCAL_SYNC_CLIENTS_SERVERS_TABLE."
    )
    timezone: str = Field(default="America/Sao_Paulo", description="LOCAL_SYNC_TIMEZONE.")
    overlap_minutes: int = Field(
        default=10, description="LOCAL_SYNC_OVERLAP_MINUTES: incremental reads start this early."
    )

    @classmethod
    def from_env_vars(cls, env: Mapping[str, str] | None = None) -> TenantDatabasesResource:
        """Wired to the LOCAL_SYNC_* variables; every one is optional."""
        return cls(
            url_template=env_or(TENANT_TEMPLATE_VAR, None, env),
            clients_servers_table=env_or(
                "LOCAL_SYNC_CLIENTS_SERVERS_TABLE", "clients_servers", env
            ),
            timezone=env_or("LOCAL_SYNC_TIMEZONE", "America/Sao_Paulo", env),
            overlap_minutes=env_or("LOCAL_SYNC_OVERLAP_MINUTES", 10, env),
        )

    def database(self, instance: str) -> Database:
        return _tenant_database(instance, self.url_template or "")


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


DEFAULT_WEBSERVER_URL = "http://127.0.0.1:3000"


class TelegramResource(ConfigurableResource):
    """Admin notifications through a Telegram bot: ``TELEGRAM_BOT_TOKEN`` (secret),
    ``ADMIN_USER_IDS`` (comma-separated chat ids) and ``TELEGRAM_API_BASE_URL`` (the sandbox
    points it at its simulator).

    Notifications are best effort: with no token or no admins they are skipped with a logged
    reason, and a Telegram error is logged, never raised, so a run never fails on them.
    """

    bot_token: str | None = Field(
        default=None, description="TELEGRAM_BOT_TOKEN (secret); unset: notifications are off."
    )
    admin_user_ids: str = Field(default="", description="ADMIN_USER_IDS: comma-separated chat ids.")
    api_base_url: str = Field(
        default="https://api.telegram.org", description="TELEGRAM_API_BASE_URL."
    )
    webserver_url: str = Field(
        default=DEFAULT_WEBSERVER_URL,
        description="DAGSTER_WEBSERVER_URL: the Dagster UI's address, for links to runs in "
        "messages.",
    )

    @classmethod
    def from_env_vars(cls, env: Mapping[str, str] | None = None) -> TelegramResource:
        """Wired to the TELEGRAM_* / ADMIN_USER_IDS variables; every one is optional."""
        return cls(
            bot_token=env_or("TELEGRAM_BOT_TOKEN", None, env),
            admin_user_ids=env_or("ADMIN_USER_IDS", "", env),
            api_base_url=env_or("TELEGRAM_API_BASE_URL", "https://api.telegram.org", env),
            webserver_url=env_or("DAGSTER_WEBSERVER_URL", DEFAULT_WEBSERVER_URL, env),
        )

    def client(self) -> TelegramClient | None:
        """A client, or None when notifications are not configured (see ``skip_reason``)."""
        if self.skip_reason():
            return None
        return TelegramClient(
            (self.bot_token or "").strip(),
            parse_admin_ids(self.admin_user_ids),
            base_url=self.api_base_url.strip() or "https://api.telegram.org",
        )

    def skip_reason(self) -> str:
        if not (self.bot_token or "").strip():
            return "TELEGRAM_BOT_TOKEN is not set: admin notifications are off"
        if not parse_admin_ids(self.admin_user_ids):
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


def database_resources(env: Mapping[str, str] | None = None) -> dict[str, ConfigurableResource]:
    """The shared resources every source uses, wired to their variables: ``<role>_db`` for
    each database role, ``tenant_dbs`` and ``telegram``. Fails naming the variable when a
    role has no database."""
    resources: dict[str, ConfigurableResource] = {
        f"{role}_db": DatabaseResource.for_role(role, env) for role in ROLES
    }
    resources["tenant_dbs"] = TenantDatabasesResource.from_env_vars(env)
    resources["telegram"] = TelegramResource.from_env_vars(env)
    return resources
