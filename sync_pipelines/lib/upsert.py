"""The one bulk-upsert helper: stage rows, merge once, count inserted/updated/unchanged.

PostgreSQL: COPY the rows (serialised a column at a time) into a temporary table, then one
statement updates the rows that really differ (``IS DISTINCT FROM``) through a join and
inserts the new keys (``ON CONFLICT`` covering concurrent inserts). Unchanged rows are not
touched at all: no dead tuples, no row locks, no trigger noise, and ``updated`` means changed.
When none of the keys can be in the table yet (an integer key: none in the rows' range;
others: one index probe per key), the rows are COPYed straight into it under a savepoint
instead, at a plain COPY's speed; a key another transaction inserts meanwhile undoes it and
the rows take the staged way. The COPY text is produced slice by slice while the server parses the previous
one, jsonb and timestamps by orjson.
MySQL/MariaDB: multi-row ``INSERT ... ON DUPLICATE KEY UPDATE``, values escaped by PyMySQL's
own converters (chosen once per column, not per value); the server's affected-row count and
its "Records: N Duplicates: D" summary of each statement give the three numbers.

Rows are mappings of column -> value. dict/list values are stored as JSON. Two rows with the
same key in one call are collapsed to the last one (the newest version, e.g. an order that
moved between two list pages) and counted as ``duplicates_in_input``.

``stamp`` (PostgreSQL): columns set to one value on every row inserted or really updated, and
left out of the comparison, e.g. ``{"sync_run_id": run_id}``: a rerun that changes nothing
leaves the rows, and the run id they carry, as they were.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import chain
from operator import attrgetter, itemgetter

import orjson
import sqlalchemy as sa
from pymysql import converters as pymysql_converters

from .db import quote_ident


class UpsertError(RuntimeError):
    """The database refused a batch (bad value, missing column...). Nothing of it was written."""


@dataclass
class UpsertResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates_in_input: int = 0

    @property
    def written(self) -> int:
        return self.inserted + self.updated

    @property
    def total(self) -> int:
        return self.inserted + self.updated + self.unchanged

    def __add__(self, other: UpsertResult) -> UpsertResult:
        return UpsertResult(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
            self.duplicates_in_input + other.duplicates_in_input,
        )

    def as_metadata(self) -> dict[str, int]:
        return {"inserted": self.inserted, "updated": self.updated, "unchanged": self.unchanged}


def _dedupe(rows: Iterable[Mapping], key_columns: Sequence[str]) -> tuple[list[Mapping], int]:
    rows = rows if isinstance(rows, list) else list(rows)
    key_of = itemgetter(*key_columns)
    try:
        # One C-level pass: the last occurrence of a key wins (the newest version).
        latest = {key_of(row): row for row in rows}
    except KeyError as exc:
        raise ValueError(f"upsert row is missing key column {exc.args[0]!r}") from None
    null_key = None in latest if len(key_columns) == 1 else any(None in k for k in latest)
    if null_key:
        raise ValueError(f"upsert row has a NULL key ({', '.join(key_columns)})")
    if len(latest) == len(rows):
        return rows, 0
    return list(latest.values()), len(rows) - len(latest)


def _resolve_columns(rows: Sequence[Mapping], columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    # Every row's keys in first-seen order, iterated in C.
    return list(dict.fromkeys(chain.from_iterable(rows)))


# --- PostgreSQL ---------------------------------------------------------------------------

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_SPECIALS = ("\\", "\t", "\n", "\r")
_NULL = "\\N"
_JSONISH = (dict, list, tuple)
_dumps = json.JSONEncoder(ensure_ascii=False, default=str).encode
# orjson renders what json.dumps(default=str) would, except datetimes (its own ISO form),
# non-str keys (refused) and NaN/Infinity (null): those go to default=str / the options /
# the json fallback below, so a jsonb value is stored exactly as before, ~8x faster.
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
_dump_fast = partial(orjson.dumps, default=str, option=_ORJSON_OPTIONS)


def _plain_text(value) -> str:
    """One non-NULL value as PostgreSQL's text input reads it (not yet COPY-escaped)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int | float | decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, _JSONISH):
        return _dumps(value)
    return str(value)


def _copy_text(value) -> str:
    """One field in COPY's text format (``\\N`` is NULL): the general, per-value path."""
    if value is None:
        return _NULL
    return _plain_text(value).translate(_COPY_ESCAPES)


def _escape_column(texts: list[str]) -> list[str]:
    """COPY-escape a column of strings in a few C-level passes instead of one call per value.

    PostgreSQL text never holds NUL, so NUL can join and split the column safely; a column
    without any special character (the usual case) is returned as it is.
    """
    joined = "\x00".join(texts)
    if joined.count("\x00") != len(texts) - 1:
        raise ValueError("a text value contains a NUL character, which PostgreSQL cannot store")
    if not any(ch in joined for ch in _COPY_SPECIALS):
        return texts
    return joined.translate(_COPY_ESCAPES).split("\x00")


def _json_text(value) -> str:
    """One JSON value by orjson where it renders what json.dumps(default=str) would."""
    try:
        out = orjson.dumps(value, default=str, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:  # an int beyond 64 bits, a key orjson refuses...
        return _dumps(value)
    # orjson writes NaN/Infinity as null, json.dumps as NaN (which PostgreSQL refuses, as it
    # should); a value whose null does not read back as None (or a tuple...) takes json.dumps.
    if b"null" in out and orjson.loads(out) != value:
        return _dumps(value)
    return out.decode()


def _jsonb_column(values: list) -> list[str]:
    """A column of non-NULL JSON values for a jsonb column, COPY-escaped. orjson's text
    (compact, no control characters: only backslashes need escaping) costs a quarter of
    json.dumps'; jsonb keeps no formatting, so the stored values are the same."""
    try:
        # Decoded at once: orjson's output starts as a 1 KiB buffer, and keeping 100k of
        # them alive costs more than json.dumps itself.
        texts = [_dump_fast(v).decode() for v in values]
        joined = "\x00".join(texts)
    except orjson.JSONEncodeError:
        joined = ""
    if not joined or "null" in joined:  # one by one: see _json_text
        texts = [_json_text(v) for v in values]
        joined = "\x00".join(texts)
    if "\\" not in joined:
        return texts
    return joined.replace("\\", "\\\\").split("\x00")


def _whole_minutes(zone: dt.tzinfo | None) -> bool:
    if zone is None:
        return True
    if type(zone) is not dt.timezone:
        return False  # a zone's offset changes with the date (and was once in seconds)
    offset = zone.utcoffset(None)
    return offset.seconds % 60 == 0 and not offset.microseconds


def _isoformat_column(values: list) -> list[str]:
    """``isoformat()`` of a column of datetimes (or times), by orjson when the zones allow: its
    RFC 3339 text is the same for naive values and fixed offsets in whole minutes (the usual
    UTC or -03:00), at a seventh of the cost. It would drop an offset's seconds, so other
    zones keep ``isoformat()``."""
    if all(map(_whole_minutes, set(map(attrgetter("tzinfo"), values)))):
        try:
            encoded = orjson.dumps(values)  # '["2024-03-05T12:00:00+00:00","..."]': no escapes
        except orjson.JSONEncodeError:
            pass
        else:
            return encoded[2:-2].decode().split('","')
    return [v.isoformat() for v in values]


def _copy_column(values: list, jsonb: bool = False) -> list[str]:
    """One column in COPY text format, with one conversion chosen for the column's types.

    The per-value type dispatch of ``_copy_text`` costs more than the COPY itself; a column
    almost always holds one type (plus NULLs), so the conversion is picked once. ``jsonb``:
    the target column is jsonb, which keeps no formatting, so the fast encoder may write it.
    """
    kinds = set(map(type, values))
    has_null = type(None) in kinds
    kinds.discard(type(None))
    if not kinds:
        return [_NULL] * len(values)
    if len(kinds) > 1:
        return [_copy_text(v) for v in values]
    (kind,) = kinds
    if kind is str:
        texts = ["" if v is None else v for v in values] if has_null else values
        texts = _escape_column(texts)
    elif kind is bool:
        texts = ["t" if v else "f" for v in values]
    elif kind in (int, float, decimal.Decimal, uuid.UUID):
        texts = [str(v) for v in values] if has_null else list(map(str, values))
    elif kind is dt.date:
        # Dates repeat (a day per order, per slot...): format each distinct one once.
        text_of = {v: v.isoformat() for v in set(values) if v is not None}
        texts = [text_of.get(v, "") for v in values] if has_null else [*map(text_of.get, values)]
    elif kind in (dt.datetime, dt.time):
        texts = _isoformat_column([v for v in values if v is not None] if has_null else values)
        if has_null:
            formatted = iter(texts)
            return [_NULL if v is None else next(formatted) for v in values]
    elif kind in _JSONISH and jsonb:
        texts = _jsonb_column([v for v in values if v is not None] if has_null else values)
        if has_null:
            encoded = iter(texts)
            return [_NULL if v is None else next(encoded) for v in values]
    elif kind in _JSONISH:
        texts = _escape_column(["" if v is None else _dumps(v) for v in values])
    else:
        return [_copy_text(v) for v in values]
    if has_null:
        return [_NULL if v is None else t for v, t in zip(values, texts, strict=True)]
    return texts


def _fields(rows: Sequence[Mapping], columns: Sequence[str]) -> list[list]:
    try:
        return [list(map(itemgetter(c), rows)) for c in columns]
    except KeyError:
        return [[row.get(c) for row in rows] for c in columns]  # missing column -> NULL


def copy_rows_text(
    rows: Sequence[Mapping],
    columns: Sequence[str],
    jsonb: Collection[str] = (),
    constants: Mapping[str, object] | None = None,
) -> str:
    """Rows as ``COPY ... FROM STDIN`` text, a column at a time (``jsonb``: such columns),
    then one column per ``constants`` entry holding its value on every row."""
    if not rows:
        return ""
    fields = _fields(rows, columns)
    texts = [_copy_column(f, c in jsonb) for f, c in zip(fields, columns, strict=True)]
    texts += [[_copy_text(value)] * len(rows) for value in (constants or {}).values()]
    return "\n".join(map("\t".join, zip(*texts, strict=True))) + "\n"


class _CopyStream:
    """The file psycopg2's ``copy_expert`` reads: each ``read`` serialises the next slice of
    rows, so the server parses one slice while Python serialises the next (on two cores the
    serialiser's time mostly hides behind the server's, instead of adding to it)."""

    def __init__(
        self,
        rows: Sequence[Mapping],
        columns: Sequence[str],
        jsonb: Collection[str],
        constants: Mapping[str, object],
    ):
        self._rows, self._columns, self._jsonb = rows, columns, jsonb
        self._constants = constants
        self._next = 0
        self.error: Exception | None = None

    def read(self, size: int = -1) -> str:
        start = self._next
        self._next = start + _COPY_SLICE
        try:
            return copy_rows_text(
                self._rows[start : self._next], self._columns, self._jsonb, self._constants
            )
        except Exception as exc:
            self.error = exc  # psycopg2 reports it only as "error in .read() call"
            raise

    readline = read


# Rows per slice: big enough that Python's per-slice work is small, small enough that the
# server starts after a few milliseconds and never waits long for the next one.
_COPY_SLICE = 5000


def copy_into(
    conn: sa.Connection,
    table: str,
    rows: Sequence[Mapping],
    columns: Sequence[str],
    jsonb: Collection[str] = (),
    constants: Mapping[str, object] | None = None,
) -> None:
    """Plain COPY of rows into ``table`` (already quoted/qualified) through the DBAPI cursor,
    serialised slice by slice while the server works (``jsonb``: the jsonb columns;
    ``constants``: columns with one value on every row, e.g. the writing run's id)."""
    constants = dict(constants or {})
    col_sql = ", ".join(quote_ident(c) for c in [*columns, *constants])
    stream = _CopyStream(rows, columns, jsonb, constants)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(f"COPY {table} ({col_sql}) FROM STDIN", stream)
    except conn.dialect.loaded_dbapi.Error:
        if stream.error is not None:
            raise stream.error from None  # our serialiser's own error (a NUL...), as raised
        raise
    finally:
        cursor.close()


def _column_types(conn: sa.Connection, target: str) -> dict[str, str]:
    """The target's columns and their SQL types (``format_type``), from the catalog."""
    result = conn.exec_driver_sql(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %(t)s::regclass AND attnum > 0 AND NOT attisdropped",
        {"t": target},
    )
    return dict(result.all())


def _array_literal(values: list) -> str:
    """A column of non-NULL values as a PostgreSQL array literal."""
    kinds = set(map(type, values))
    if kinds <= {int}:
        return "{" + ",".join(map(str, values)) + "}"
    texts = values if kinds <= {str} else [_plain_text(v) for v in values]
    joined = "\x00".join(texts)  # NUL cannot be in PostgreSQL text: a safe separator
    if "\\" in joined or '"' in joined:
        joined = joined.replace("\\", "\\\\").replace('"', '\\"')
    return '{"' + joined.replace("\x00", '","') + '"}'


_INTEGER_TYPES = frozenset({"bigint", "integer", "smallint"})


def _any_key_exists(
    conn: sa.Connection,
    target: str,
    rows: Sequence[Mapping],
    key_columns: Sequence[str],
    types: Mapping[str, str],
) -> bool:
    """Whether any of the rows' keys may already be in the target.

    An integer key is checked as a range: two index lookups tell a first load or new ids
    above the existing ones (a rerun sees a row in range at once and stages as before; new
    ids among existing ones stage too). Other keys get one index probe per key, the first
    hit ending it. Only integers: Python orders text by code point, a collation may not.
    """
    (first, *others) = key_columns
    if not others and types[first] in _INTEGER_TYPES:
        ids = list(map(itemgetter(first), rows))
        if set(map(type, ids)) == {int}:
            column = quote_ident(first)
            return bool(
                conn.exec_driver_sql(
                    f"SELECT EXISTS (SELECT 1 FROM {target} "
                    f"WHERE {column} BETWEEN %(lo)s AND %(hi)s)",
                    {"lo": min(ids), "hi": max(ids)},
                ).scalar()
            )
    arrays = ", ".join(f"%(k{i})s::{types[k]}[]" for i, k in enumerate(key_columns))
    names = ", ".join(quote_ident(k) for k in key_columns)
    match = " AND ".join(f"t.{quote_ident(k)} = k.{quote_ident(k)}" for k in key_columns)
    params = {f"k{i}": _array_literal(f) for i, f in enumerate(_fields(rows, key_columns))}
    return bool(
        conn.exec_driver_sql(
            f"SELECT EXISTS (SELECT 1 FROM unnest({arrays}) AS k({names}) "
            f"JOIN {target} AS t ON {match})",
            params,
        ).scalar()
    )


UNIQUE_VIOLATION = "23505"


def _copy_new_rows(
    conn: sa.Connection,
    target: str,
    rows: Sequence[Mapping],
    columns: Sequence[str],
    jsonb: Collection[str],
    stamp: Mapping[str, object],
) -> bool:
    """COPY rows whose keys are all new straight into the target, as fast as a plain COPY
    (the stamp columns as constants).

    Under a savepoint: if another transaction inserted one of the keys meanwhile, the COPY
    is undone and False sends the rows through the staged merge instead. Any other error
    (a bad value...) leaves nothing of the batch and propagates.
    """
    try:
        with conn.begin_nested():
            copy_into(conn, target, rows, columns, jsonb, constants=stamp)
    except conn.dialect.loaded_dbapi.IntegrityError as exc:
        if getattr(exc, "pgcode", None) == UNIQUE_VIOLATION:
            return False
        raise
    return True


# The merge joins the staged rows to the target by a hash join; with the default work_mem
# (4 MB) 100k rows spill to disk in batches. Raised for the merge statement only.
_MERGE_WORK_MEM = "64MB"


def _raise_work_mem(conn: sa.Connection) -> str:
    """Raise work_mem to _MERGE_WORK_MEM (never lower it) for this transaction; returns the
    caller's value for _set_work_mem to put back."""
    return conn.exec_driver_sql(
        "SELECT current_setting('work_mem'), set_config('work_mem', CASE WHEN "
        "pg_size_bytes(current_setting('work_mem')) < pg_size_bytes(%(m)s) THEN %(m)s "
        "ELSE current_setting('work_mem') END, true)",
        {"m": _MERGE_WORK_MEM},
    ).one()[0]


def _set_work_mem(conn: sa.Connection, value: str) -> None:
    conn.exec_driver_sql("SELECT set_config('work_mem', %(v)s, true)", {"v": value})


def _pg_upsert(
    conn: sa.Connection,
    table: str,
    rows: Sequence[Mapping],
    columns: Sequence[str],
    key_columns: Sequence[str],
    update_columns: Sequence[str],
    stamp: Mapping[str, object],
) -> tuple[int, int]:
    target = ".".join(quote_ident(p) for p in table.split(".")) if '"' not in table else table
    types = _column_types(conn, target)
    jsonb = frozenset(c for c in columns if types.get(c) == "jsonb")
    # All keys new (a first load, a new month): nothing to compare, so no staging either.
    # (A key column the target lacks is left to the staged COPY to report.)
    probe = all(k in types for k in key_columns)
    if (
        probe
        and not _any_key_exists(conn, target, rows, key_columns, types)
        and _copy_new_rows(conn, target, rows, columns, jsonb, stamp)
    ):
        return len(rows), 0
    staging = quote_ident(f"_stage_{uuid.uuid4().hex[:12]}")
    cols = ", ".join(quote_ident(c) for c in [*columns, *stamp])
    keys = ", ".join(quote_ident(c) for c in key_columns)
    # LIKE copies column types, so COPY parses values exactly as the target would.
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE {staging} (LIKE {target} INCLUDING DEFAULTS) ON COMMIT DROP"
    )
    # The stamp columns travel as constants of the COPY (never compared, see below).
    copy_into(conn, staging, rows, columns, jsonb, constants=stamp)
    match = " AND ".join(f"t.{quote_ident(k)} = s.{quote_ident(k)}" for k in key_columns)
    if update_columns:
        written = [*update_columns, *stamp]  # the stamp is written, never compared
        sets = ", ".join(f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in written)
        old = ", ".join(f"t.{quote_ident(c)}" for c in update_columns)
        new = ", ".join(f"EXCLUDED.{quote_ident(c)}" for c in update_columns)
        # ROW(...) keeps a single column comparable as a row too.
        conflict = f"DO UPDATE SET {sets} WHERE ROW({old}) IS DISTINCT FROM ROW({new})"
        # Changed rows are updated by a join first: ON CONFLICT DO UPDATE would lock (and so
        # write) every existing row, even the unchanged ones its WHERE then skips.
        changed = ", ".join(f"{quote_ident(c)} = s.{quote_ident(c)}" for c in written)
        stage_new = ", ".join(f"s.{quote_ident(c)}" for c in update_columns)
        update_cte = (
            f"updated AS (UPDATE {target} AS t SET {changed} FROM {staging} AS s "
            f"WHERE {match} AND ROW({old}) IS DISTINCT FROM ROW({stage_new}) RETURNING 1), "
        )
        updated_count = "(SELECT count(*) FROM updated)"
    else:
        conflict = "DO NOTHING"
        update_cte, updated_count = "", "0"
    work_mem = _raise_work_mem(conn)
    # New keys are inserted; ON CONFLICT still covers a row another transaction inserted
    # meanwhile. xmax = 0 only on a freshly inserted row version: inserts vs updates.
    result = conn.exec_driver_sql(
        f"WITH {update_cte}merged AS (INSERT INTO {target} AS t ({cols}) "
        f"SELECT {cols} FROM {staging} AS s "
        f"WHERE NOT EXISTS (SELECT 1 FROM {target} AS t WHERE {match}) "
        f"ON CONFLICT ({keys}) {conflict} RETURNING (t.xmax = 0) AS fresh) "
        f"SELECT (SELECT count(*) FILTER (WHERE fresh) FROM merged), "
        f"{updated_count} + (SELECT count(*) FILTER (WHERE NOT fresh) FROM merged)"
    ).one()
    _set_work_mem(conn, work_mem)
    conn.exec_driver_sql(f"DROP TABLE {staging}")
    return int(result[0]), int(result[1])


# --- MySQL / MariaDB ----------------------------------------------------------------------

FOUND_ROWS_FLAG = 2  # pymysql.constants.CLIENT.FOUND_ROWS
NO_BACKSLASH_ESCAPES = 512  # pymysql.constants.SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES
# The server's summary of a multi-row INSERT (the C API's mysql_info()). "Duplicates" counts
# the rows whose key was already there: all of them with CLIENT_FOUND_ROWS, else only the
# ones the UPDATE changed (MySQL's and MariaDB's sql_insert.cc alike).
_DEFAULT_ENCODERS = dict(pymysql_converters.encoders)
_INSERT_INFO = re.compile(rb"Records: (\d+)\s+Duplicates: (\d+)")


def _mq(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _mysql_value(value):
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


def _mysql_literal(value, escape_text: Callable[[str], str], encoders: Mapping) -> str:
    """One value as PyMySQL's parameter binding renders it (its own converters)."""
    value = _mysql_value(value)
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + escape_text(value) + "'"
    if isinstance(value, bytes | bytearray):
        return "X'" + value.hex() + "'"
    return pymysql_converters.escape_item(value, None, mapping=encoders)


def _mysql_column(values: list, escape_text: Callable[[str], str], encoders: Mapping) -> list[str]:
    """A column of values as SQL literals, the conversion picked once for the column's type.

    PyMySQL has no server-side binding: ``cursor.execute(sql, params)`` escapes each value
    with its converters and formats them into the statement, dispatching on every value's
    type (about a microsecond each, most of a sync's client time). This renders exactly the
    same literals with the same converters, but chooses the converter once per column.
    """
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if any(k is not str and encoders.get(k) is not _DEFAULT_ENCODERS.get(k) for k in kinds):
        # The connection has its own converter for this type: use it, value by value.
        return [_mysql_literal(v, escape_text, encoders) for v in values]
    if kinds <= {str}:
        return ["NULL" if v is None else "'" + escape_text(v) + "'" for v in values]
    if kinds <= {int}:
        return ["NULL" if v is None else str(v) for v in values]
    if kinds <= {bool}:
        return ["NULL" if v is None else ("1" if v else "0") for v in values]
    if kinds == {dt.datetime}:
        # escape_datetime's text for a naive value is isoformat(" "); it ignores a zone.
        return [
            "NULL"
            if v is None
            else "'" + (v if v.tzinfo is None else v.replace(tzinfo=None)).isoformat(" ") + "'"
            for v in values
        ]
    return [_mysql_literal(v, escape_text, encoders) for v in values]


def _escaper(dbapi) -> Callable[[str], str]:
    """The string escaping PyMySQL applies on this connection (it depends on the SQL mode)."""
    if getattr(dbapi, "server_status", 0) & NO_BACKSLASH_ESCAPES:
        return lambda s: s.replace("'", "''")
    return pymysql_converters.escape_string


def _insert_counts(cursor, affected: int, rows: int, found_rows: bool) -> tuple[int, int] | None:
    """(inserted, updated) of one multi-row INSERT ... ON DUPLICATE KEY UPDATE, from the
    server's info line; None when the server sent none (single-row statements)."""
    result = getattr(cursor, "_result", None)
    match = _INSERT_INFO.search(getattr(result, "message", None) or b"")
    if match is None or int(match.group(1)) != rows:
        return None
    duplicates = int(match.group(2))
    if found_rows:
        # duplicates = keys found; affected = inserted + 2 per changed + 1 per unchanged
        return rows - duplicates, affected - rows
    # duplicates = rows changed; affected = inserted + 2 per changed
    return affected - 2 * duplicates, duplicates


def _mysql_upsert(
    conn: sa.Connection,
    table: str,
    rows: Sequence[Mapping],
    columns: Sequence[str],
    key_columns: Sequence[str],
    update_columns: Sequence[str],
    batch_size: int,
) -> tuple[int, int]:
    target = ".".join(_mq(p) for p in table.split("."))
    cols = ", ".join(_mq(c) for c in columns)
    if update_columns:
        dup = ", ".join(f"{_mq(c)} = VALUES({_mq(c)})" for c in update_columns)
    else:
        dup = f"{_mq(key_columns[0])} = {_mq(key_columns[0])}"  # insert-or-ignore, counted
    key_tuple = "(" + ", ".join(_mq(k) for k in key_columns) + ")"
    dbapi = conn.connection.dbapi_connection
    found_rows = bool(getattr(dbapi, "client_flag", 0) & FOUND_ROWS_FLAG)
    escape_text = _escaper(dbapi)
    encoders = getattr(dbapi, "encoders", None) or pymysql_converters.encoders
    try:
        fields = [[row[c] for row in rows] for c in columns]
    except KeyError:
        fields = [[row.get(c) for row in rows] for c in columns]  # missing column -> NULL
    literals = [
        "(" + ", ".join(t) + ")"
        for t in zip(*(_mysql_column(f, escape_text, encoders) for f in fields), strict=True)
    ]
    key_positions = [list(columns).index(k) for k in key_columns]
    inserted = updated = 0
    cursor = dbapi.cursor()
    try:
        for start in range(0, len(rows), batch_size):
            chunk = literals[start : start + batch_size]
            existing = None
            if len(chunk) == 1:
                # A one-row INSERT gets no info line from the server: count its key first.
                key = (
                    "("
                    + ", ".join(
                        _mysql_column([fields[p][start]], escape_text, encoders)[0]
                        for p in key_positions
                    )
                    + ")"
                )
                cursor.execute(f"SELECT COUNT(*) FROM {target} WHERE {key_tuple} = {key}")
                existing = int(cursor.fetchone()[0])
            # The values are PyMySQL's own escaped literals (see _mysql_column); no params
            # are passed, so a '%' in the data is never taken for a placeholder.
            affected = cursor.execute(
                f"INSERT INTO {target} ({cols}) VALUES {', '.join(chunk)} "
                f"ON DUPLICATE KEY UPDATE {dup}"
            )
            if existing is not None:
                fresh = 1 - existing
                changed = affected - 1 if found_rows else (affected - fresh) // 2
                counts = fresh, max(changed, 0)
            else:
                counts = _insert_counts(cursor, affected, len(chunk), found_rows)
                if counts is None:
                    raise UpsertError(
                        f"the server sent no 'Records: … Duplicates: …' summary for a "
                        f"{len(chunk)}-row INSERT into {table}: cannot count inserted/updated"
                    )
            inserted += counts[0]
            updated += counts[1]
    finally:
        cursor.close()
    return inserted, updated


# --- entry point --------------------------------------------------------------------------


def bulk_upsert(
    conn: sa.Connection,
    table: str,
    rows: Iterable[Mapping],
    key_columns: Sequence[str],
    *,
    columns: Sequence[str] | None = None,
    update_columns: Sequence[str] | None = None,
    batch_size: int = 1000,
    stamp: Mapping[str, object] | None = None,
) -> UpsertResult:
    """Insert new rows and update changed ones of ``table`` inside the caller's transaction.

    ``table`` is a plain or ``schema.table`` name (quoted here). ``columns`` defaults to the
    union of the rows' keys; ``update_columns`` defaults to every non-key column. Columns a
    row lacks are written as NULL. ``stamp`` (PostgreSQL only) maps columns to one value
    written on every inserted or really updated row and never compared (see the module
    docstring); a stamp column must not be among the rows' columns. Nothing is committed
    here: the caller's transaction decides, so data and checkpoints can commit together.
    """
    stamp = dict(stamp or {})
    unique_rows, duplicates = _dedupe(rows, key_columns)
    result = UpsertResult(duplicates_in_input=duplicates)
    if not unique_rows:
        return result
    cols = _resolve_columns(unique_rows, columns)
    if stamp:
        clash = sorted(set(stamp) & {*cols, *key_columns, *(update_columns or ())})
        if clash:
            raise ValueError(f"stamp columns {clash} are also upserted columns of {table}")
    missing_keys = [k for k in key_columns if k not in cols]
    if missing_keys:
        raise ValueError(f"key columns {missing_keys} are not among the upserted columns")
    updates = (
        list(update_columns)
        if update_columns is not None
        else [c for c in cols if c not in key_columns]
    )
    dialect = conn.dialect.name
    if stamp and dialect != "postgresql":
        raise NotImplementedError(f"bulk_upsert stamps columns on PostgreSQL only, not {dialect}")
    try:
        if dialect == "postgresql":
            inserted, updated = _pg_upsert(
                conn, table, unique_rows, cols, key_columns, updates, stamp
            )
        elif dialect in ("mysql", "mariadb"):
            inserted, updated = _mysql_upsert(
                conn, table, unique_rows, cols, key_columns, updates, batch_size
            )
        else:
            raise NotImplementedError(f"bulk_upsert does not support {dialect}")
    except (conn.dialect.loaded_dbapi.Error, sa.exc.DBAPIError) as exc:
        # The raw driver is used for COPY and multi-row inserts, SQLAlchemy for the key probe
        # and the merge; give callers one error type. Nothing of the batch stays.
        error = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig else exc
        first_line = (
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        )
        raise UpsertError(
            f"bulk upsert of {len(unique_rows)} rows into {table} failed: {first_line}"
        ) from exc
    result.inserted, result.updated = inserted, updated
    result.unchanged = len(unique_rows) - inserted - updated
    return result
