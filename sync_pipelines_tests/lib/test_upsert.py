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


ROUND_TRIP_DDL = """CREATE TABLE {t} (id bigint PRIMARY KEY, txt text, num numeric(12,3),
    flt double precision, at timestamptz, day date, doc jsonb, flag boolean, ref uuid, misc text)"""


def test_every_value_survives_the_round_trip_column_by_column(pg_db):
    """The COPY serialiser converts a column at a time: NULLs, empty and blank strings,
    escapes, JSON with backslashes and mixed-type columns must all come back as written."""
    import uuid

    rows = [
        {
            "id": 1,
            "txt": "",
            "num": Decimal("1.5"),
            "flt": 0.1,
            "at": None,
            "day": None,
            "doc": {"a": "x\\y", "b": [1, None]},
            "flag": None,
            "ref": uuid.UUID(int=1),
            "misc": 5,
        },
        {
            "id": 2,
            "txt": "   ",
            "num": None,
            "flt": None,
            "day": dt.date(2019, 2, 16),
            "at": dt.datetime(2019, 2, 16, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-3))),
            "doc": None,
            "flag": True,
            "ref": None,
            "misc": "text",
        },
        {
            "id": 3,
            "txt": None,
            "num": Decimal("-0.001"),
            "flt": 1e300,
            "doc": ["t\tab", "\\N"],
            "at": dt.datetime(2018, 11, 4, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=-2))),
            "day": dt.date(2028, 2, 29),
            "flag": False,
            "ref": uuid.UUID(int=3),
            "misc": None,
        },
        {
            "id": 4,
            "txt": "\\N",
            "num": Decimal("0"),
            "flt": -0.0,
            "at": None,
            "day": None,
            "doc": {},
            "flag": None,
            "ref": None,
        },  # no "misc" at all: written as NULL
        {
            "id": 5,
            "txt": "a\tb\nc\r\\d",
            "num": None,
            "flt": None,
            "at": None,
            "day": None,
            "doc": "[1, 2]",
            "flag": None,
            "ref": None,
            "misc": {"k": "v"},
        },
    ]
    with pg_db.begin() as conn:
        conn.exec_driver_sql(ROUND_TRIP_DDL.format(t="rt"))
        result = bulk_upsert(conn, "rt", rows, ["id"])
        stored = {r.id: r for r in conn.execute(sa.text(f"SELECT * FROM {pg_db.table('rt')}"))}
    assert result.inserted == 5
    assert stored[1].txt == "" and stored[2].txt == "   " and stored[3].txt is None
    assert stored[4].txt == "\\N" and stored[5].txt == "a\tb\nc\r\\d"
    assert stored[1].doc == {"a": "x\\y", "b": [1, None]} and stored[3].doc == ["t\tab", "\\N"]
    assert stored[4].doc == {} and stored[5].doc == [1, 2] and stored[2].doc is None
    assert [stored[i].num for i in (1, 2, 3, 4)] == [Decimal("1.5"), None, Decimal("-0.001"), 0]
    assert stored[3].flt == 1e300 and stored[1].flt == 0.1
    assert stored[2].at == dt.datetime(2019, 2, 17, 2, 30, tzinfo=dt.UTC)
    assert stored[3].at == dt.datetime(2018, 11, 4, 3, 30, tzinfo=dt.UTC)
    assert stored[3].day == dt.date(2028, 2, 29)
    assert [stored[i].flag for i in (1, 2, 3)] == [None, True, False]
    assert str(stored[1].ref) == str(uuid.UUID(int=1)) and stored[2].ref is None
    assert [stored[i].misc for i in (1, 2, 3, 4)] == ["5", "text", None, None]
    assert stored[5].misc == '{"k": "v"}'


def test_a_nul_character_is_refused_naming_the_reason(pg_db):
    with pg_db.begin() as conn:
        conn.exec_driver_sql(ROUND_TRIP_DDL.format(t="nul"))
        with pytest.raises(ValueError, match="NUL character"):
            bulk_upsert(conn, "nul", [{"id": 1, "txt": "a\x00b\n"}], ["id"])


def test_a_no_change_pass_leaves_every_row_version_untouched(pg_db):
    """Not rewritten and not even locked: a row lock would stamp xmax and dirty the page."""
    with pg_db.begin() as conn:
        conn.exec_driver_sql(PG_DDL)
        bulk_upsert(conn, "items", _rows(200), ["id"])
    with pg_db.connect() as conn:
        before = conn.execute(sa.text("SELECT id, xmin::text, xmax::text FROM items")).all()
    with pg_db.begin() as conn:
        result = bulk_upsert(conn, "items", _rows(200), ["id"])
    with pg_db.connect() as conn:
        after = conn.execute(sa.text("SELECT id, xmin::text, xmax::text FROM items")).all()
    assert (result.inserted, result.updated, result.unchanged) == (0, 0, 200)
    assert sorted(after) == sorted(before)
    assert {xmax for _, _, xmax in after} == {"0"}


STAMPED_DDL = """CREATE TABLE stamped (id bigint PRIMARY KEY, name text, price numeric(12,2),
    run text, run_no integer)"""


def _stamped(pg_db, rows, stamp, **kw):
    with pg_db.begin() as conn:
        result = bulk_upsert(conn, "stamped", rows, ["id"], stamp=stamp, **kw)
    with pg_db.connect() as conn:
        table = {
            r.id: r
            for r in conn.execute(sa.text("SELECT id, name, run, run_no, xmin::text FROM stamped"))
        }
    return result, table


def test_stamp_is_written_on_insert_and_real_update_only(pg_db):
    with pg_db.begin() as conn:
        conn.exec_driver_sql(STAMPED_DDL)
    rows = [{"id": i, "name": f"n{i}", "price": Decimal(i)} for i in range(1, 6)]
    result, first = _stamped(pg_db, rows, {"run": "run-a", "run_no": 1})
    assert result.inserted == 5
    assert {(r.run, r.run_no) for r in first.values()} == {("run-a", 1)}

    # The same rows under another run: nothing differs, nothing is written or restamped.
    result, again = _stamped(pg_db, rows, {"run": "run-b", "run_no": 2})
    assert (result.inserted, result.updated, result.unchanged) == (0, 0, 5)
    assert again == first

    changed = [dict(r, name="renamed") if r["id"] == 2 else r for r in rows]
    changed.append({"id": 9, "name": "new", "price": Decimal(9)})
    result, after = _stamped(pg_db, changed, {"run": "run-c", "run_no": 3})
    assert (result.inserted, result.updated, result.unchanged) == (1, 1, 4)
    assert {i for i, r in after.items() if r.run == "run-c"} == {2, 9}
    assert {i: after[i] for i in (1, 3, 4, 5)} == {i: first[i] for i in (1, 3, 4, 5)}
    assert after[2].run_no == 3


def test_stamp_with_a_none_value_marks_rows_written_outside_a_run(pg_db):
    with pg_db.begin() as conn:
        conn.exec_driver_sql(STAMPED_DDL)
    _stamped(pg_db, [{"id": 1, "name": "a"}], {"run": "run-a"})
    _, table = _stamped(pg_db, [{"id": 1, "name": "b"}], {"run": None})
    assert (table[1].name, table[1].run) == ("b", None)


def test_stamp_on_an_insert_only_upsert_and_a_quote_in_the_value(pg_db):
    with pg_db.begin() as conn:
        conn.exec_driver_sql(STAMPED_DDL)
    _stamped(pg_db, [{"id": 1, "name": "a"}], {"run": "it's 100%"}, update_columns=[])
    _, table = _stamped(pg_db, [{"id": 1, "name": "b"}], {"run": "other"}, update_columns=[])
    assert (table[1].name, table[1].run) == ("a", "it's 100%")


def test_a_stamp_column_among_the_rows_columns_is_refused(pg_db):
    with pg_db.begin() as conn:
        conn.exec_driver_sql(STAMPED_DDL)
        with pytest.raises(ValueError, match=r"stamp columns \['run'\]"):
            bulk_upsert(conn, "stamped", [{"id": 1, "run": "x"}], ["id"], stamp={"run": "y"})


def test_stamp_is_refused_on_mysql(mysql_db):
    with mysql_db.begin() as conn:
        conn.exec_driver_sql(MY_DDL)
        with pytest.raises(NotImplementedError, match="PostgreSQL only"):
            bulk_upsert(conn, "items", _rows(1), ["id"], stamp={"run": "x"})


MY_ROUND_TRIP_DDL = """CREATE TABLE rt (id BIGINT PRIMARY KEY, txt TEXT, num DECIMAL(12,3),
    flt DOUBLE, at DATETIME(6), day DATE, doc JSON, flag TINYINT(1), misc TEXT, raw BLOB)
    CHARACTER SET utf8mb4"""


def test_mysql_values_survive_the_round_trip_column_by_column(mysql_db):
    """The MySQL path renders a column at a time: quotes, backslashes, NUL, ^Z, '%s', emoji,
    microseconds, NULLs and mixed-type columns must all come back exactly as written."""
    tricky = 'it\'s "q" \\ back\\slash %s %(x)s \x00 nul \x1a ctrl\n\r\t 😀 ação'
    rows = [
        {
            "id": 1,
            "txt": tricky,
            "num": Decimal("-1.125"),
            "flt": 0.1,
            "at": dt.datetime(2024, 2, 29, 23, 59, 58, 123456),
            "day": dt.date(2028, 2, 29),
            "doc": {"a": "x\\y'", "b": [1, None]},
            "flag": True,
            "misc": 5,
            "raw": b"\x00\xff'\\",
        },
        {
            "id": 2,
            "txt": "",
            "num": None,
            "flt": None,
            "at": None,
            "day": None,
            "doc": None,
            "flag": False,
            "misc": "text",
            "raw": None,
        },
        {"id": 3, "txt": None, "flag": None, "misc": None},  # missing columns: NULL
    ]
    with mysql_db.begin() as conn:
        conn.exec_driver_sql(MY_ROUND_TRIP_DDL)
        result = bulk_upsert(conn, "rt", rows, ["id"])
        stored = {r.id: r for r in conn.execute(sa.text("SELECT * FROM rt"))}
    assert (result.inserted, result.updated, result.unchanged) == (3, 0, 0)
    assert stored[1].txt == tricky and stored[2].txt == "" and stored[3].txt is None
    assert stored[1].num == Decimal("-1.125") and stored[1].flt == 0.1
    assert stored[1].at == dt.datetime(2024, 2, 29, 23, 59, 58, 123456)
    assert stored[1].day == dt.date(2028, 2, 29)
    assert stored[1].doc == '{"a": "x\\\\y\'", "b": [1, null]}'
    assert [stored[i].flag for i in (1, 2, 3)] == [1, 0, None]
    assert [stored[i].misc for i in (1, 2, 3)] == ["5", "text", None]
    assert stored[1].raw == b"\x00\xff'\\" and stored[3].raw is None and stored[2].at is None


def _mysql_without_found_rows(mysql_db):
    """The same database through a plain client (no CLIENT_FOUND_ROWS, which SQLAlchemy sets):
    the server then reports different affected-row and duplicate counts."""
    from sync_pipelines.lib.db import Database

    engine = sa.create_engine(mysql_db.engine.url, connect_args={"client_flag": 0})
    return Database(role="test", engine=engine)


@pytest.mark.parametrize("found_rows", [True, False], ids=["found-rows", "plain-client"])
@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_mysql_counts_with_either_client_flag_and_any_batch_size(mysql_db, found_rows, batch_size):
    with mysql_db.begin() as conn:
        conn.exec_driver_sql(MY_DDL)
    db = mysql_db if found_rows else _mysql_without_found_rows(mysql_db)
    try:
        assert _upsert(db, _rows(20), batch_size=batch_size).inserted == 20
        rows = _rows(25)
        for row in rows[:4]:
            row["name"] = "renamed"
        result = _upsert(db, rows, batch_size=batch_size)
        assert (result.inserted, result.updated, result.unchanged) == (5, 4, 16)
        links = _upsert(db, _rows(27), batch_size=batch_size, update_columns=[])
        assert (links.inserted, links.updated, links.unchanged) == (2, 0, 25)
    finally:
        if db is not mysql_db:
            db.dispose()
    assert _table(mysql_db)[2][0] == "renamed" and len(_table(mysql_db)) == 27


def test_mysql_upsert_sends_no_select_per_batch(mysql_db):
    """Counting new keys with a SELECT before each INSERT doubled the round trips and the
    index lookups; the server's own 'Records/Duplicates' summary gives the same numbers."""
    with mysql_db.begin() as conn:
        conn.exec_driver_sql(MY_DDL)
        _upsert(mysql_db, _rows(10))
    with mysql_db.begin() as conn:

        def selects() -> int:
            row = conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Com_select'").one()
            return int(row[1])

        before = selects()
        result = bulk_upsert(conn, "items", _rows(2500), ["id"], batch_size=500)
        after = selects()
    assert (result.inserted, result.unchanged) == (2490, 10)
    assert after - before == 0


def test_new_keys_racing_a_concurrent_insert_fall_back_to_the_merge(pg_db):
    """All keys are new when bulk_upsert looks, so it COPYs them straight into the table; a
    transaction that inserted one of them meanwhile commits while that COPY waits on the key.
    The COPY is undone to its savepoint and the staged merge writes the rows instead."""
    import threading

    with pg_db.begin() as conn:
        conn.exec_driver_sql(PG_DDL)
    rows = _rows(50)
    other = pg_db.engine.connect()
    other_tx = other.begin()
    other.exec_driver_sql("INSERT INTO items (id, name) VALUES (7, 'from elsewhere')")
    outcome: dict = {}

    def upsert() -> None:
        try:
            with pg_db.begin() as conn:
                outcome["pid"] = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
                outcome["result"] = bulk_upsert(conn, "items", rows, ["id"])
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = exc

    worker = threading.Thread(target=upsert)
    worker.start()
    with pg_db.connect() as watcher:
        for _ in range(200):  # until the COPY waits for the other transaction's key 7
            waiting = watcher.exec_driver_sql(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid = %(pid)s",
                {"pid": outcome.get("pid", -1)},
            ).scalar()
            if waiting:
                break
            worker.join(0.05)
        assert waiting, "the upsert never waited on the concurrently inserted key"
    other_tx.commit()
    other.close()
    worker.join(30)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert (result.inserted, result.updated, result.unchanged) == (49, 1, 0)
    with pg_db.connect() as conn:
        stored = dict(conn.exec_driver_sql("SELECT id, name FROM items").all())
    assert stored == {row["id"]: row["name"] for row in rows}


def test_jsonb_values_are_stored_as_before_and_nan_is_still_refused(pg_db):
    """jsonb columns go through orjson, text columns keep json.dumps' text: datetimes, Decimals,
    tuples, non-text keys, nulls and integers beyond 64 bits are stored as json.dumps
    (default=str) would write them; NaN is refused, not turned into null."""
    import json

    docs = [
        {"at": dt.datetime(2024, 3, 5, 12, 0, tzinfo=dt.UTC), "price": Decimal("1.50")},
        {"pair": (1, "a"), 3: None, "deep": {"list": [None, True, 1.5, "x\\y\n"]}},
        {"big": 2**70, "neg": -(2**63) - 1},
        [None, {"k": "ação"}],
    ]
    with pg_db.begin() as conn:
        conn.exec_driver_sql(ROUND_TRIP_DDL.format(t="js"))
        bulk_upsert(
            conn,
            "js",
            [{"id": i, "doc": d, "misc": d} for i, d in enumerate(docs)],
            ["id"],
        )
        stored = dict(conn.exec_driver_sql("SELECT id, doc FROM js ORDER BY id").all())
        text = dict(conn.exec_driver_sql("SELECT id, misc FROM js ORDER BY id").all())
    for i, doc in enumerate(docs):
        written = json.dumps(doc, ensure_ascii=False, default=str)
        assert stored[i] == json.loads(written)
        assert text[i] == written
    with pg_db.begin() as conn, pytest.raises(UpsertError, match="1 rows into js failed"):
        bulk_upsert(conn, "js", [{"id": 9, "doc": {"x": float("nan")}}], ["id"])


def test_timestamps_in_any_zone_keep_their_instant(pg_db):
    """Fixed offsets are formatted by orjson, zones with a history (and offsets in seconds,
    as São Paulo's before 1914) by isoformat: every instant comes back the same."""
    import zoneinfo

    sao_paulo = zoneinfo.ZoneInfo("America/Sao_Paulo")
    instants = [
        dt.datetime(2024, 3, 5, 12, 0, 0, 123456, tzinfo=dt.UTC),
        dt.datetime(2019, 2, 16, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-3))),
        dt.datetime(2020, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
        dt.datetime(2020, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-2, seconds=-5))),
        dt.datetime(1900, 1, 1, tzinfo=sao_paulo),
        dt.datetime(2018, 11, 4, 12, 30, tzinfo=sao_paulo),
    ]
    for batch in ([instants[0], instants[1]], instants):  # fixed offsets only, then all
        with pg_db.begin() as conn:
            conn.exec_driver_sql(ROUND_TRIP_DDL.format(t="ts"))
            bulk_upsert(conn, "ts", [{"id": i, "at": at} for i, at in enumerate(batch)], ["id"])
            stored = dict(conn.exec_driver_sql("SELECT id, at FROM ts").all())
            conn.exec_driver_sql("DROP TABLE ts")
        assert stored == dict(enumerate(batch))


def test_new_text_and_composite_keys_go_straight_in_and_a_rerun_merges(pg_db):
    """Keys that are not integers are probed one by one (an array of them, quoted): new ones
    are COPYed in a savepoint (their rows carry a subtransaction's xid), a rerun with one
    changed row goes through the merge (the transaction's own xid) and counts it."""
    keys = ["plain", 'quote "q"', "back\\slash", "comma, {brace}", "ação 😀", " spaced "]
    rows = [
        {"code": code, "day": dt.date(2024, 1, 1 + i), "name": f"n{i}"}
        for i, code in enumerate(keys)
    ]

    def upsert(batch):
        with pg_db.begin() as conn:
            result = bulk_upsert(conn, "coded", batch, ["code", "day"])
            own = conn.exec_driver_sql("SELECT txid_current()::text").scalar()
            xmins = dict(conn.exec_driver_sql("SELECT name, xmin::text FROM coded").all())
        return (result.inserted, result.updated, result.unchanged), own, xmins

    with pg_db.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE coded (code text, day date, name text, PRIMARY KEY (code, day))"
        )
    counts, own, xmins = upsert(rows)
    assert counts == (6, 0, 0)
    assert own not in set(xmins.values())  # written by the savepoint's subtransaction
    changed = [dict(r, name="changed") if r["code"] == "back\\slash" else r for r in rows]
    counts, own, xmins = upsert(
        [*changed, {"code": "new", "day": dt.date(2024, 2, 1), "name": "x"}]
    )
    assert counts == (1, 1, 5)
    assert xmins["changed"] == own and xmins["x"] == own  # the staged merge wrote these
    with pg_db.connect() as conn:
        stored = dict(conn.exec_driver_sql("SELECT code, name FROM coded").all())
    assert stored == {**{r["code"]: r["name"] for r in changed}, "new": "x"}


def test_a_key_the_column_cannot_hold_is_refused_as_an_upsert_error(pg_db):
    with pg_db.begin() as conn:
        conn.exec_driver_sql(PG_DDL)
    with pytest.raises(UpsertError, match="2 rows into items failed: invalid input syntax"):
        _upsert(pg_db, [{"id": "1", "name": "a"}, {"id": "x", "name": "b"}])


def test_stamp_with_copy_special_characters_survives_both_copy_paths(pg_db):
    """The stamp travels as a COPY constant on the direct path (all keys new) and on the
    staged one: a tab, a newline or a backslash in it must arrive as they are."""
    with pg_db.begin() as conn:
        conn.exec_driver_sql(STAMPED_DDL)
    odd = "run\twith\\odd\nchars"
    _, direct = _stamped(pg_db, [{"id": 5, "name": "a"}], {"run": odd})
    _, staged = _stamped(pg_db, [{"id": 5, "name": "b"}, {"id": 3, "name": "c"}], {"run": odd})
    assert direct[5].run == odd
    assert {i: r.run for i, r in staged.items()} == {3: odd, 5: odd}
    assert direct[5].xmin != staged[5].xmin  # the second pass really rewrote id 5
