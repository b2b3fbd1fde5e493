"""Database roles: URL/schema resolution from the environment, tenant URLs, search_path."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from sync_pipelines.lib.db import (
    DatabaseConfigError,
    create_database,
    role_settings,
    safe_url,
    tenant_database,
    tenant_url,
)


def test_role_url_wins_over_shared_url():
    env = {
        "SYNC_DATABASE_URL": "postgresql://a@h/shared",
        "TINY_DATABASE_URL": "postgresql://b@h/tiny",
    }
    assert role_settings("tiny", env) == ("postgresql://b@h/tiny", None)
    assert role_settings("detran", env) == ("postgresql://a@h/shared", "detran")


def test_schema_override_and_missing_configuration_message():
    env = {"SYNC_DATABASE_URL": "postgresql://a@h/db", "HUBSOFT_DATABASE_SCHEMA": "bot"}
    assert role_settings("hubsoft", env) == ("postgresql://a@h/db", "bot")
    with pytest.raises(DatabaseConfigError, match="set TINY_DATABASE_URL .* or SYNC_DATABASE_URL"):
        role_settings("tiny", {})


def test_password_never_shown():
    assert "s3cret" not in safe_url("postgresql://user:s3cret@db:5432/x")


def test_bare_postgres_url_uses_psycopg2():
    assert tenant_url("postgresql://u@h/{instance}", "acme").drivername == "postgresql+psycopg2"
    assert tenant_url("mysql://u@h/{instance}", "acme").drivername == "mysql+pymysql"


def test_tenant_names_that_could_alter_the_url_are_refused():
    for bad in ("acme/other", "a@b", "", "x" * 65, "../etc", "a?b=c"):
        with pytest.raises(DatabaseConfigError):
            tenant_url("mysql+pymysql://u@h/{instance}", bad)


def test_role_schema_is_the_search_path(pg_db, pg_url):
    with pg_db.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE marker (id int)")
    other = create_database("other", pg_url)
    try:
        with other.connect() as conn:
            tables = sa.inspect(conn).get_table_names(schema=pg_db.schema)
        assert "marker" in tables
    finally:
        other.dispose()


def test_sessions_have_room_for_a_staged_batch_in_temp_buffers(pg_db):
    """bulk_upsert's temporary tables: the server default (8MB) would spill a 100k-row batch."""
    with pg_db.connect() as conn:
        assert conn.exec_driver_sql("SHOW temp_buffers").scalar() == "32MB"


def test_tenant_database_connects_to_its_own_database(mysql_db):
    url = mysql_db.engine.url
    rendered = url.render_as_string(hide_password=False)
    template = rendered.replace(f"/{url.database}", "/{instance}")
    tenant = tenant_database(url.database, template)
    try:
        with tenant.connect() as conn:
            assert conn.execute(sa.text("SELECT DATABASE()")).scalar() == url.database
    finally:
        tenant.dispose()
