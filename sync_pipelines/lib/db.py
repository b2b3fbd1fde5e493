"""Database roles: one SQLAlchemy engine per target database, from a URL plus an optional schema.

Each sync writes where its application lives, so every role has its own URL variable
(``TINY_DATABASE_URL``...). When a role has no URL of its own it falls back to
``SYNC_DATABASE_URL`` and gets a schema named after the role, so one PostgreSQL database
can hold every role side by side (the sandbox and the tests do exactly that).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

# role -> (URL variable, schema used when the role falls back to SYNC_DATABASE_URL)
ROLES: dict[str, tuple[str, str]] = {
    "control": ("SYNC_CONTROL_DATABASE_URL", "sync_control"),
    "tiny": ("TINY_DATABASE_URL", "tiny"),
    "detran": ("DETRAN_DATABASE_URL", "detran"),
    "hubsoft": ("HUBSOFT_DATABASE_URL", "hubsoft"),
    "tabuladormax": ("TABULADORMAX_DATABASE_URL", "tabuladormax"),
    "whatsapp": ("WHATSAPP_DATABASE_URL", "whatsapp"),
}
SHARED_URL_VAR = "SYNC_DATABASE_URL"


class DatabaseConfigError(RuntimeError):
    """A role's database is not configured, or configured in a way we cannot use."""


def normalize_url(url: str | URL) -> URL:
    """Pin the driver so a bare ``postgresql://`` never resolves to psycopg 3 (not installed)
    and a bare ``mysql://`` uses PyMySQL."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    elif parsed.drivername in ("mysql", "mariadb"):
        parsed = parsed.set(drivername="mysql+pymysql")
    if parsed.drivername.startswith("mysql") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def safe_url(url: str | URL) -> str:
    """The URL as it may appear in logs and errors: the password never does."""
    return normalize_url(url).render_as_string(hide_password=True)


def quote_ident(name: str) -> str:
    """Quote an identifier for PostgreSQL (and ANSI SQL); refuses what cannot be a name."""
    if not name or "\x00" in name:
        raise ValueError(f"invalid SQL identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Database:
    """One target database: an engine plus the schema the role's tables live in.

    On PostgreSQL every pooled connection gets ``search_path = <schema>, public`` so sync
    code writes plain table names. On MySQL/MariaDB the schema is the database in the URL.
    """

    role: str
    engine: Engine
    schema: str | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name  # "postgresql" | "mysql" | ...

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    def table(self, name: str) -> str:
        """A quoted, schema-qualified table name (for SQL built outside search_path)."""
        if self.is_postgres:
            return (
                f"{quote_ident(self.schema)}.{quote_ident(name)}"
                if self.schema
                else quote_ident(name)
            )
        return f"`{name.replace('`', '``')}`"

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection inside one transaction: committed on success, rolled back on error."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def describe(self) -> str:
        where = safe_url(self.engine.url)
        return f"{self.role} database {where}" + (f" (schema {self.schema})" if self.schema else "")

    def dispose(self) -> None:
        self.engine.dispose()


def create_database(
    role: str,
    url: str | URL,
    schema: str | None = None,
    *,
    pool_size: int = 5,
    echo: bool = False,
) -> Database:
    """Build the engine of one role. ``schema`` only applies to PostgreSQL."""
    parsed = normalize_url(url)
    kwargs: dict = {"pool_pre_ping": True, "pool_size": pool_size, "max_overflow": 5, "echo": echo}
    if parsed.drivername.startswith("postgresql"):
        # Application name shows who holds a lock in pg_stat_activity; search_path puts the
        # role's tables first without qualifying every statement. temp_buffers: bulk_upsert
        # stages batches in temporary tables; 100k rows fit in 32 MB of session memory (taken
        # only as used) instead of going through the kernel in 8 MB. It can only be set
        # before a session's first temporary table, hence here.
        options = f"-c application_name=sync_pipelines_{role} -c temp_buffers=32MB"
        if schema:
            options += f" -c search_path={schema},public"
        kwargs["connect_args"] = {"options": options}
    elif parsed.drivername.startswith("mysql"):
        if schema and schema != parsed.database:
            raise DatabaseConfigError(
                f"{role}: on MySQL/MariaDB the schema is the database of the URL; "
                f"got schema {schema!r} for database {parsed.database!r}. Drop the schema setting."
            )
        schema = None
        kwargs["pool_recycle"] = 3600
    engine = sa.create_engine(parsed, **kwargs)
    return Database(role=role, engine=engine, schema=schema)


def role_settings(role: str, env: Mapping[str, str]) -> tuple[str, str | None]:
    """(url, schema) for a role from a mapping of variables, with the shared-database fallback.

    ``<ROLE>_DATABASE_URL`` wins; ``<ROLE>_DATABASE_SCHEMA`` sets its schema. Otherwise the
    role lives in ``SYNC_DATABASE_URL`` under a schema of its own name. The caller passes the
    variables (the CLI and the sandbox pass ``os.environ``; the Dagster code location wires the
    same rule through ``resources.DatabaseResource.for_role``).
    """
    if role not in ROLES:
        raise DatabaseConfigError(f"unknown database role {role!r}; known: {', '.join(ROLES)}")
    url_var, default_schema = ROLES[role]
    schema_var = url_var.replace("_URL", "_SCHEMA")
    own = env.get(url_var, "").strip()
    if own:
        return own, (env.get(schema_var, "").strip() or None)
    shared = env.get(SHARED_URL_VAR, "").strip()
    if shared:
        return shared, (env.get(schema_var, "").strip() or default_schema)
    raise DatabaseConfigError(
        f"no database for role {role!r}: set {url_var} (its own database) or {SHARED_URL_VAR} "
        f"(one database for every role, one schema each). `sync-pipelines sandbox` writes both "
        f"into .sandbox/env for a local setup."
    )


def database_for_role(role: str, env: Mapping[str, str], **kwargs) -> Database:
    url, schema = role_settings(role, env)
    return create_database(role, url, schema, **kwargs)


TENANT_TEMPLATE_VAR = "LOCAL_SYNC_TENANT_URL_TEMPLATE"
_TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def tenant_url(template: str, instance: str) -> URL:
    """A tenant's database URL from a template such as ``mysql+pymysql://u:p@host/{instance}``.

    The instance name comes from data (the main database), so it is checked before it
    becomes part of a URL: letters, digits, ``_`` and ``-`` only.
    """
    if not _TENANT_NAME.match(instance or ""):
        raise DatabaseConfigError(
            f"tenant instance name {instance!r} is not usable in a database URL "
            "(letters, digits, '_' and '-' only, at most 64)"
        )
    if "{instance}" not in template:
        raise DatabaseConfigError(f"{TENANT_TEMPLATE_VAR} must contain '{{instance}}'")
    return normalize_url(template.replace("{instance}", instance))


def tenant_database(instance: str, template: str, **kwargs) -> Database:
    """The database of one tenant instance (role ``tenant:<instance>``), from the template."""
    template = (template or "").strip()
    if not template:
        raise DatabaseConfigError(
            f"no tenant databases configured: set {TENANT_TEMPLATE_VAR} "
            "(e.g. mysql+pymysql://user:pw@host:3306/{instance})"
        )
    kwargs.setdefault("pool_size", 2)
    return create_database(f"tenant:{instance}", tenant_url(template, instance), **kwargs)
