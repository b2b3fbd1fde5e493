"""Where each tenant's database is: a URL template, or the main database's clients_servers table.

Two ways, as the contract allows:
- ``LOCAL_SYNC_TENANT_URL_TEMPLATE`` (e.g. ``mysql+pymysql://user:pw@host:3306/{instance}``):
  one database per instance. On PostgreSQL (sandbox, tests) a ``?schema=...{instance}`` query
  parameter puts each tenant in a schema of one database instead.
- otherwise a ``clients_servers`` table in the main database (``instance_name``, ``host``,
  ``port``, ``username``, ``password``, ``database``), the way the service works today.

Instance names come from data, so they are checked before they become part of a URL, and a
password read from ``clients_servers`` is registered with the log redaction and never put in
a message (a tenant's address is shown as server and database only, never the URL's user or
password). An unreachable tenant is reported by name, with where its address comes from.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import URL

from ..lib.db import (
    TENANT_TEMPLATE_VAR,
    Database,
    DatabaseConfigError,
    create_database,
    normalize_url,
    tenant_url,
)
from ..lib.redact import register_secret

CLIENTS_SERVERS_TABLE_VAR = "LOCAL_SYNC_CLIENTS_SERVERS_TABLE"
DEFAULT_CLIENTS_SERVERS_TABLE = "clients_servers"
PROBE_TIMEOUT_S = 5


class TenantNotConfigured(DatabaseConfigError):
    """No usable database configuration for an instance (no row, bad name, bad template)."""


class TenantUnreachable(TenantNotConfigured):
    """The instance's tenant database is configured but a connection to it cannot be opened."""


@dataclass(frozen=True)
class TenantTarget:
    """A tenant's database address: the URL (with its password) plus a PostgreSQL schema."""

    instance: str
    url: URL
    schema: str | None
    origin: str  # "template" | "clients_servers"

    def where(self) -> str:
        """Server and database, without the URL's user and password."""
        port = f":{self.url.port}" if self.url.port else ""
        kind = "PostgreSQL" if self.url.drivername.startswith("postgresql") else "MySQL"
        schema = f" schema {self.schema}" if self.schema else ""
        return f"{kind} {self.url.host or 'localhost'}{port}/{self.url.database or ''}{schema}"

    def settings_hint(self) -> str:
        """Where an operator fixes this tenant's address."""
        if self.origin == "template":
            return TENANT_TEMPLATE_VAR
        return f"the {self.origin} row of instance_name {self.instance!r} in the main database"

    def describe(self) -> str:
        return f"tenant {self.instance}: {self.where()} from {self.origin}"

    def open(self, *, pool_size: int = 2) -> Database:
        """An engine for this tenant; the caller disposes it when the tenant is done."""
        return create_database(
            f"tenant:{self.instance}", self.url, self.schema, pool_size=pool_size
        )


def _split_schema(url: URL, instance: str) -> tuple[URL, str | None]:
    """Take our own ``schema`` query parameter off the URL (drivers would reject it)."""
    schema = url.query.get("schema")
    if schema is None:
        return url, None
    if not url.drivername.startswith("postgresql"):
        raise TenantNotConfigured(
            f"tenant {instance}: ?schema= only applies to PostgreSQL tenant URLs; on MySQL the "
            "tenant is the database of the URL"
        )
    return url.difference_update_query(["schema"]), str(schema)


class TenantDirectory:
    """Resolves instance names to tenant databases, from the template or clients_servers."""

    def __init__(
        self,
        main_db: Database | None = None,
        *,
        template: str | None = None,
        clients_servers_table: str = DEFAULT_CLIENTS_SERVERS_TABLE,
    ) -> None:
        self.main_db = main_db
        self.template = (template or "").strip() or None
        self.clients_servers_table = clients_servers_table

    @property
    def mode(self) -> str:
        return "template" if self.template else "clients_servers"

    def target(self, instance: str) -> TenantTarget:
        """The tenant's address, or TenantNotConfigured saying why there is none."""
        if self.template:
            try:
                url = tenant_url(self.template, instance)
            except DatabaseConfigError as exc:
                raise TenantNotConfigured(str(exc)) from None
            url, schema = _split_schema(url, instance)
            return TenantTarget(instance, url, schema, "template")
        return self._from_clients_servers(instance)

    def _from_clients_servers(self, instance: str) -> TenantTarget:
        if self.main_db is None:
            raise TenantNotConfigured(
                f"tenant {instance}: set {TENANT_TEMPLATE_VAR} or give the main database "
                f"holding {self.clients_servers_table}"
            )
        table = sa.table(
            self.clients_servers_table,
            *(
                sa.column(c)
                for c in ("instance_name", "host", "port", "username", "password", "database")
            ),
        )
        query = sa.select(table).where(table.c.instance_name == instance)
        try:
            with self.main_db.connect() as conn:
                row = conn.execute(query).mappings().first()
        except sa.exc.ProgrammingError as exc:
            raise TenantNotConfigured(
                f"neither {TENANT_TEMPLATE_VAR} is set nor can {self.clients_servers_table} be "
                f"read in the main database ({type(exc.orig).__name__})"
            ) from None
        if row is None:
            raise TenantNotConfigured(
                f"tenant {instance}: no row in {self.clients_servers_table} and no {TENANT_TEMPLATE_VAR}"
            )
        if not row["host"] or not row["database"]:
            raise TenantNotConfigured(
                f"tenant {instance}: {self.clients_servers_table} row has no host or database"
            )
        register_secret(row["password"])
        url = URL.create(
            "mysql+pymysql",
            username=row["username"] or None,
            password=row["password"] or None,
            host=row["host"],
            port=int(row["port"]) if row["port"] else None,
            database=row["database"],
        )
        return TenantTarget(instance, normalize_url(url), None, "clients_servers")

    def probe(self, instance: str) -> TenantTarget:
        """The target, after checking a connection opens: ``TenantUnreachable`` (naming the
        tenant, where its database is and what to check) or ``TenantNotConfigured``."""
        target = self.target(instance)
        url = target.url.update_query_dict({"connect_timeout": str(PROBE_TIMEOUT_S)})
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.DBAPIError as exc:
            # ``from None``: the driver's own traceback and message can quote the URL. Only
            # its first line goes out, with the URL's user and password masked.
            reason = str(exc.orig).strip().splitlines()[0][:200] if exc.orig else type(exc).__name__
            for credential in (target.url.password, target.url.username):
                if credential:
                    reason = reason.replace(str(credential), "***")
            raise TenantUnreachable(
                f"tenant {instance}: its database ({target.where()}, from {target.origin}) is "
                f"not reachable: {reason}. Check that the server is up and reachable from here, "
                f"and the host, port, database, user and password in {target.settings_hint()}."
            ) from None
        finally:
            engine.dispose()
        return target


@dataclass
class TenantScan:
    """Instances of the main database split into those with a usable tenant database and not."""

    ready: list[str]
    unavailable: dict[str, str]  # instance -> why


def scan_tenants(directory: TenantDirectory, instances: Iterable[str]) -> TenantScan:
    """Probe each instance's tenant database; unconfigured or unreachable ones are reported."""
    scan = TenantScan(ready=[], unavailable={})
    for instance in instances:
        try:
            directory.probe(instance)
        except TenantNotConfigured as exc:
            scan.unavailable[instance] = str(exc)
        else:
            scan.ready.append(instance)
    return scan
