"""Fixtures of the local sync tests: a main database, a control database and tenant homes.

The main and control databases are one fresh PostgreSQL schema (source tables created the
way the sandbox does). Tenants run on PostgreSQL (a schema each) and on MariaDB (a database
each): ``tenants`` is parametrized over both, and the MySQL half is skipped with the
conftest's reason when no server is configured.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from sync_pipelines.lib.db import Database, normalize_url
from sync_pipelines.lib.migrations import migrate
from sync_pipelines.local_sync.tenants import TenantDirectory
from sync_pipelines.sandbox.local_sync_data import create_source_tables


@pytest.fixture
def main_db(pg_db: Database) -> Database:
    """The main WhatsApp database with its three tables, and the control tables beside it."""
    create_source_tables(pg_db)
    migrate(pg_db, role="control")
    return pg_db


class TenantSpace:
    """Where a test's tenant databases live; everything made here is dropped afterwards."""

    def __init__(self, kind: str, server_url: str) -> None:
        self.kind = kind
        self.prefix = f"lt{uuid.uuid4().hex[:8]}"
        url = normalize_url(server_url)
        if kind == "postgresql":
            base = url.render_as_string(hide_password=False)
            self.template = (
                base + ("&" if "?" in base else "?") + f"schema={self.prefix}_{{instance}}"
            )
        else:
            rendered = url.set(database="DBNAME").render_as_string(hide_password=False)
            self.template = rendered.replace("DBNAME", f"{self.prefix}_{{instance}}")
        self.admin = sa.create_engine(url._replace(database=None) if kind == "mysql" else url)
        self.opened: list[Database] = []
        self.created: list[str] = []

    @property
    def directory(self) -> TenantDirectory:
        return TenantDirectory(template=self.template)

    def home(self, instance: str, charset: str = "utf8mb4") -> Database:
        """The tenant's (empty) database or schema, and an engine on it."""
        name = f"{self.prefix}_{instance}"
        with self.admin.begin() as conn:
            if self.kind == "mysql":
                conn.exec_driver_sql(
                    f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET {charset}"
                )
            else:
                conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{name}"')
        self.created.append(name)
        db = self.directory.target(instance).open()
        self.opened.append(db)
        return db

    def close(self) -> None:
        for db in self.opened:
            db.dispose()
        with self.admin.begin() as conn:
            for name in set(self.created):
                if self.kind == "mysql":
                    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
                else:
                    conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        self.admin.dispose()


@pytest.fixture(params=["postgresql", "mysql"])
def tenants(request, pg_url) -> Iterator[TenantSpace]:
    server = request.getfixturevalue("mysql_url") if request.param == "mysql" else pg_url
    space = TenantSpace(request.param, server)
    yield space
    space.close()


@pytest.fixture
def mysql_tenants(mysql_url) -> Iterator[TenantSpace]:
    space = TenantSpace("mysql", mysql_url)
    yield space
    space.close()


@pytest.fixture
def pg_tenants(pg_url) -> Iterator[TenantSpace]:
    space = TenantSpace("postgresql", pg_url)
    yield space
    space.close()
