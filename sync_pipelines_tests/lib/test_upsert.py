"""bulk_upsert on real PostgreSQL and MariaDB: the counts are right and a rerun writes nothing."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from sync_pipelines.lib.upsert import UpsertError, bulk_upsert

PG_DDL = """CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(12,2),
    seen_at timestamptz, tags jsonb, active boolean)"""
MY_DDL = """CREATE TABLE items (id BIGINT PRIMARY KEY, name VARCHAR(255), price DECIMAL(12,2),
    seen_at DATETIME, tags JSON, active TINYINT(1))"""


def _rows(n: int, *, name_suffix: str = "") -> list[dict]:
    base = dt.datetime(2024, 3, 5, 12, 0, tzinfo=dt.UTC)
    return [
        {
            "id": i,
            "name": f"item\t{i}\\\n{name_suffix}" if i % 7 == 0 else f"item {i}{name_suffix}",
            "price": Decimal(i) / 4,
            "seen_at": base + dt.timedelta(minutes=i),
            "tags": {"n": i, "text": "ação"},
            "active": i % 2 == 0,
        }
        for i in range(1, n + 1)
    ]


@pytest.fixture(params=["postgresql", "mysql"])
def db(request):
    if request.param == "postgresql":
        database = request.getfixturevalue("pg_db")
        ddl = PG_DDL
    else:
        database = request.getfixturevalue("mysql_db")
        ddl = MY_DDL
    with database.begin() as conn:
        conn.exec_driver_sql(ddl)
    return database


def _upsert(db, rows, **kw):
    with db.begin() as conn:
        return bulk_upsert(conn, "items", rows, ["id"], **kw)


def _table(db) -> dict[int, tuple]:
    with db.connect() as conn:
        return {
            r[0]: tuple(r[1:]) for r in conn.execute(sa.text("SELECT id, name, price FROM items"))
        }


def test_first_run_inserts_every_row(db):
    result = _upsert(db, _rows(500))
    assert (result.inserted, result.updated, result.unchanged) == (500, 0, 0)
    stored = _table(db)
    assert len(stored) == 500
    # tabs, backslashes and newlines survive staging
    assert stored[7][0] == "item\t7\\\n"
    assert stored[10][1] == Decimal("2.50")


def test_rerun_with_same_rows_changes_nothing(db):
    _upsert(db, _rows(300))
    result = _upsert(db, _rows(300))
    assert (result.inserted, result.updated, result.unchanged) == (0, 0, 300)


def test_mixed_batch_counts_each_kind(db):
    _upsert(db, _rows(100))
    rows = _rows(150)
    for row in rows[:10]:
        row["name"] = "renamed"
    result = _upsert(db, rows)
    assert (result.inserted, result.updated, result.unchanged) == (50, 10, 90)
    assert _table(db)[3][0] == "renamed"


def test_update_columns_limit_what_is_overwritten(db):
    _upsert(db, _rows(5))
    rows = _rows(5, name_suffix=" new")
    for row in rows:
        row["price"] = Decimal("99")
    result = _upsert(db, rows, update_columns=["price"])
    assert result.updated == 5
    stored = _table(db)
    assert stored[1] == ("item 1", Decimal("99.00"))


def test_duplicate_keys_in_one_call_keep_the_last_version(db):
    rows = _rows(3) + [{**_rows(3)[1], "name": "second version"}]
    result = _upsert(db, rows)
    assert result.inserted == 3
    assert result.duplicates_in_input == 1
    assert _table(db)[2][0] == "second version"


def test_row_without_key_is_refused_with_clear_error(db):
    with pytest.raises(ValueError, match="missing key column 'id'"):
        _upsert(db, [{"name": "no id"}])


def test_failed_batch_leaves_table_untouched(db):
    _upsert(db, _rows(10))
    bad = _rows(20)
    bad[15]["price"] = "not a number"
    with pytest.raises(UpsertError, match="20 rows into items failed"):
        _upsert(db, bad)
    assert len(_table(db)) == 10


def test_mysql_batches_are_split_and_still_counted(mysql_db):
    with mysql_db.begin() as conn:
        conn.exec_driver_sql(MY_DDL)
    result = _upsert(mysql_db, _rows(2500), batch_size=300)
    assert result.inserted == 2500
    rows = _rows(2600)
    rows[0]["name"] = "changed"
    result = _upsert(mysql_db, rows, batch_size=300)
    assert (result.inserted, result.updated, result.unchanged) == (100, 1, 2499)
