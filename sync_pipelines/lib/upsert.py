"""The one bulk-upsert helper: stage rows, merge once, count inserted/updated/unchanged.

PostgreSQL: COPY the rows (serialised a column at a time) into a temporary table, then one
statement updates the rows that really differ (``IS DISTINCT FROM``) through a join and
inserts the new keys (``ON CONFLICT`` covering concurrent inserts). Unchanged rows are not
touched at all: no dead tuples, no row locks, no trigger noise, and ``updated`` means changed.
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
import io
import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter

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
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return list(names)


# --- PostgreSQL ---------------------------------------------------------------------------

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_SPECIALS = ("\\", "\t", "\n", "\r")
_NULL = "\\N"
_JSONISH = (dict, list, tuple)


def _copy_text(value) -> str:
    """One field in COPY's text format (``\\N`` is NULL): the general, per-value path."""
    if value is None:
        return _NULL
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int | float | decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, _JSONISH):
        return json.dumps(value, ensure_ascii=False, default=str).translate(_COPY_ESCAPES)
    return str(value).translate(_COPY_ESCAPES)


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


def _copy_column(values: list) -> list[str]:
    """One column in COPY text format, with one conversion chosen for the column's types.

    The per-value type dispatch of ``_copy_text`` costs more than the COPY itself; a column
    almost always holds one type (plus NULLs), so the conversion is picked once.
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
    elif kind in (dt.datetime, dt.date, dt.time):
        texts = ["" if v is None else v.isoformat() for v in values]
    elif kind in _JSONISH:
        dumps = json.JSONEncoder(ensure_ascii=False, default=str).encode
        texts = _escape_column(["" if v is None else dumps(v) for v in values])
    else:
        return [_copy_text(v) for v in values]
    if has_null:
        return [_NULL if v is None else t for v, t in zip(values, texts, strict=True)]
    return texts


def copy_rows_text(rows: Sequence[Mapping], columns: Sequence[str]) -> io.StringIO:
    """Serialise rows for ``COPY ... FROM STDIN`` (text format), a column at a time."""
    if not rows:
        return io.StringIO("")
    try:
        fields = [[row[c] for row in rows] for c in columns]
    except KeyError:
        fields = [[row.get(c) for row in rows] for c in columns]  # missing column -> NULL
    lines = map("\t".join, zip(*map(_copy_column, fields), strict=True))
    return io.StringIO("\n".join(lines) + "\n")


# psycopg2 reads the buffer in chunks of this many characters (default 8 KiB).
_COPY_CHUNK = 1 << 20


def copy_into(
    conn: sa.Connection, table: str, rows: Sequence[Mapping], columns: Sequence[str]
) -> None:
    """Plain COPY of rows into ``table`` (already quoted/qualified) through the DBAPI cursor."""
    col_sql = ", ".join(quote_ident(c) for c in columns)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(
            f"COPY {table} ({col_sql}) FROM STDIN", copy_rows_text(rows, columns), size=_COPY_CHUNK
        )
    finally:
        cursor.close()


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
    staging = quote_ident(f"_stage_{uuid.uuid4().hex[:12]}")
    cols = ", ".join(quote_ident(c) for c in [*columns, *stamp])
    keys = ", ".join(quote_ident(c) for c in key_columns)
    # LIKE copies column types, so COPY parses values exactly as the target would.
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE {staging} (LIKE {target} INCLUDING DEFAULTS) ON COMMIT DROP"
    )
    for name, value in stamp.items():
        # COPY leaves the stamp columns out, so every staged row takes this default.
        conn.exec_driver_sql(
            f"ALTER TABLE {staging} ALTER COLUMN {quote_ident(name)} SET DEFAULT %(v)s",
            {"v": value},
        )
    copy_into(conn, staging, rows, columns)
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
    except conn.dialect.loaded_dbapi.Error as exc:
        # The raw driver is used for COPY and multi-row inserts; give callers one error type.
        # The caller's transaction is now aborted, so nothing of the batch stays.
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UpsertError(
            f"bulk upsert of {len(unique_rows)} rows into {table} failed: {first_line}"
        ) from exc
    result.inserted, result.updated = inserted, updated
    result.unchanged = len(unique_rows) - inserted - updated
    return result
