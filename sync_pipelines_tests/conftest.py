"""Test databases: the machine's services when configured, an embedded PostgreSQL otherwise.

``SYNC_TEST_DATABASE_URL`` / ``SYNC_TEST_MYSQL_URL`` point at real servers (CI sets both).
Without the first, an embedded PostgreSQL starts in a temporary folder; without the second,
MySQL/MariaDB tests are skipped and say why. Every test gets its own schema (PostgreSQL) or
database (MySQL), dropped afterwards, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from sync_pipelines.lib.db import (
    SHARED_URL_VAR,
    Database,
    create_database,
    normalize_url,
    quote_ident,
)


def _load_project_definitions() -> None:
    """Import the project's definitions once, before test modules do.

    Loading them needs a database variable (they fail naming it otherwise). Test modules
    import ``defs`` for its structure; a test that runs through them calls
    ``build_defs()`` after its fixtures set the variables. The stand-in URL is never
    connected to: every EnvVar is resolved when a run starts, from the test's own variables.
    """
    if os.environ.get(SHARED_URL_VAR):
        import sync_pipelines.definitions  # noqa: F401

        return
    os.environ[SHARED_URL_VAR] = "postgresql+psycopg2://tests@127.0.0.1:9/set_by_each_test"
    try:
        import sync_pipelines.definitions  # noqa: F401
    finally:
        del os.environ[SHARED_URL_VAR]


_load_project_definitions()

MYSQL_SKIP = (
    "MySQL/MariaDB tests need a server: set SYNC_TEST_MYSQL_URL "
    "(e.g. mysql+pymysql://root@127.0.0.1:3306/test)"
)


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory) -> Iterator[str]:
    url = os.environ.get("SYNC_TEST_DATABASE_URL", "").strip()
    if url:
        yield normalize_url(url).render_as_string(hide_password=False)
        return
    from sync_pipelines.sandbox.embedded_pg import EmbeddedPostgres

    server = EmbeddedPostgres(tmp_path_factory.mktemp("embedded-pg") / "data")
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def pg_admin(pg_url) -> Iterator[sa.Engine]:
    engine = sa.create_engine(normalize_url(pg_url))
    yield engine
    engine.dispose()


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def pg_schema(pg_admin) -> Iterator[str]:
    """A fresh, empty schema for one test."""
    schema = _unique("t")
    with pg_admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {quote_ident(schema)}"))
    yield schema
    with pg_admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE"))


@pytest.fixture
def pg_db(pg_url, pg_schema) -> Iterator[Database]:
    db = create_database("test", pg_url, pg_schema)
    yield db
    db.dispose()


@pytest.fixture(scope="session")
def mysql_url() -> str:
    url = os.environ.get("SYNC_TEST_MYSQL_URL", "").strip()
    if not url:
        pytest.skip(MYSQL_SKIP)
    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        pytest.skip(
            f"MySQL/MariaDB at SYNC_TEST_MYSQL_URL is not reachable ({exc.orig}); {MYSQL_SKIP}"
        )
    finally:
        engine.dispose()
    return url


@pytest.fixture
def mysql_db(mysql_url) -> Iterator[Database]:
    """A fresh, empty MySQL database for one test."""
    name = _unique("t")
    admin = sa.create_engine(normalize_url(mysql_url))
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    db = create_database("test", normalize_url(mysql_url).set(database=name))
    yield db
    db.dispose()
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


@pytest.fixture
def telegram():
    """The Telegram simulator (records every message it accepts), for tests of admin alerts."""
    from sync_pipelines.sandbox.telegram_sim import TelegramSimulator

    simulator = TelegramSimulator(seed=1)
    simulator.start()
    yield simulator
    simulator.stop()
