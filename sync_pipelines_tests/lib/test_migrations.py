"""The migrations runner: ordered, idempotent, checksum-guarded, per role and dialect."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from sync_pipelines.lib.migrations import MigrationError, discover, migrate


@pytest.fixture
def sql_root(tmp_path):
    role = tmp_path / "shop"
    role.mkdir()
    (role / "0001_create_orders.sql").write_text(
        "-- orders; with a ; in a comment\nCREATE TABLE orders (id int PRIMARY KEY, note text DEFAULT 'a;b');\n"
    )
    (role / "0002_add_status.sql").write_text("ALTER TABLE orders ADD COLUMN status text;\n")
    return tmp_path


def _tables(db) -> set[str]:
    with db.connect() as conn:
        return set(sa.inspect(conn).get_table_names(schema=db.schema))


def test_applies_in_order_and_records_each_file(pg_db, sql_root):
    report = migrate(pg_db, "shop", sql_root)
    assert report.applied == ["0001_create_orders.sql", "0002_add_status.sql"]
    assert {"orders", "schema_migrations"} <= _tables(pg_db)
    with pg_db.connect() as conn:
        versions = (
            conn.execute(sa.text("SELECT version FROM schema_migrations ORDER BY 1"))
            .scalars()
            .all()
        )
        cols = {c["name"] for c in sa.inspect(conn).get_columns("orders", schema=pg_db.schema)}
    assert versions == ["0001", "0002"]
    assert cols == {"id", "note", "status"}


def test_second_run_applies_nothing(pg_db, sql_root):
    migrate(pg_db, "shop", sql_root)
    report = migrate(pg_db, "shop", sql_root)
    assert report.applied == []
    assert len(report.already_applied) == 2


def test_new_file_is_applied_on_next_run(pg_db, sql_root):
    migrate(pg_db, "shop", sql_root)
    (sql_root / "shop" / "0003_index.sql").write_text(
        "CREATE INDEX orders_status ON orders (status);"
    )
    assert migrate(pg_db, "shop", sql_root).applied == ["0003_index.sql"]


def test_changed_applied_file_is_refused(pg_db, sql_root):
    migrate(pg_db, "shop", sql_root)
    (sql_root / "shop" / "0001_create_orders.sql").write_text("CREATE TABLE orders (id bigint);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(pg_db, "shop", sql_root)


def test_failing_file_leaves_nothing_half_applied(pg_db, sql_root):
    (sql_root / "shop" / "0003_broken.sql").write_text(
        "CREATE TABLE audit (id int);\nCREATE TABLE broken (id nosuchtype);"
    )
    with pytest.raises(MigrationError, match="0003_broken.sql failed"):
        migrate(pg_db, "shop", sql_root)
    # The whole run is one transaction: nothing of it stays, a fixed file applies cleanly.
    assert "audit" not in _tables(pg_db)
    (sql_root / "shop" / "0003_broken.sql").write_text("CREATE TABLE audit (id int);")
    assert len(migrate(pg_db, "shop", sql_root).applied) == 3


def test_dialect_variant_wins_over_plain_file(tmp_path):
    role = tmp_path / "tenant"
    role.mkdir()
    for name in ("0001_base.sql", "0002_t.postgresql.sql", "0002_t.mysql.sql"):
        (role / name).write_text("SELECT 1;")
    assert [m.path.name for m in discover("tenant", "mysql", tmp_path)] == [
        "0001_base.sql",
        "0002_t.mysql.sql",
    ]
    assert [m.path.name for m in discover("tenant", "postgresql", tmp_path)][
        1
    ] == "0002_t.postgresql.sql"


def test_project_migrations_apply_on_mysql(mysql_db, tmp_path):
    role = tmp_path / "tenant"
    role.mkdir()
    (role / "0001_contacts.mysql.sql").write_text(
        "CREATE TABLE IF NOT EXISTS c (id INT PRIMARY KEY);\nCREATE TABLE IF NOT EXISTS d (id INT);"
    )
    assert migrate(mysql_db, "tenant", tmp_path).applied == ["0001_contacts.mysql.sql"]
    assert migrate(mysql_db, "tenant", tmp_path).applied == []


def test_every_role_in_sql_folder_applies_cleanly_twice(pg_url):
    import uuid

    from sync_pipelines.lib.db import create_database
    from sync_pipelines.lib.migrations import migration_roles

    for role in migration_roles():
        schema = f"m_{role}_{uuid.uuid4().hex[:6]}"
        db = create_database(role, pg_url, schema)
        try:
            migrate(db)
            assert migrate(db).applied == []
        finally:
            with db.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            db.dispose()


def test_two_roles_can_share_one_schema(pg_db, sql_root):
    other = sql_root / "other"
    other.mkdir()
    (other / "0001_create_things.sql").write_text("CREATE TABLE things (id int);")
    assert migrate(pg_db, "shop", sql_root).applied[0] == "0001_create_orders.sql"
    assert migrate(pg_db, "other", sql_root).applied == ["0001_create_things.sql"]
    assert migrate(pg_db, "shop", sql_root).applied == []
