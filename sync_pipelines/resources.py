"""Dagster resources that wrap lib/: one database resource per target role.

Connection settings come from the environment of the code location (never from run config,
so no URL or password is shown in the UI or stored with a run): ``<ROLE>_DATABASE_URL`` or,
for every role at once, ``SYNC_DATABASE_URL`` with one schema per role (lib/db.py).
"""

from __future__ import annotations

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from .lib.db import Database, database_for_role, tenant_database


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


def database_resources() -> dict[str, ConfigurableResource]:
    """The resource keys every source uses: ``<role>_db``."""
    roles = ("control", "tiny", "detran", "hubsoft", "tabuladormax", "whatsapp")
    resources: dict[str, ConfigurableResource] = {
        f"{role}_db": DatabaseResource(role=role) for role in roles
    }
    resources["tenant_dbs"] = TenantDatabasesResource()
    return resources
