"""Gestão Scouter's PostgREST, simulated on the shared harness and backed by a real table.

``leads`` lives in a real PostgreSQL table (schema ``gestao_scouter`` of the sandbox
database, or any schema a test picks) with the destination's 49 columns, so values are
judged by PostgreSQL itself, as on Supabase:

- ``POST /rest/v1/leads?on_conflict=id`` + ``Prefer: resolution=merge-duplicates`` runs one
  ``INSERT ... SELECT FROM json_populate_recordset ... ON CONFLICT (id) DO UPDATE`` in one
  transaction: one bad value (``22P02``, ``22007``...) fails the whole array with 400;
  objects with different keys give ``PGRST102``; a key the schema cache does not know gives
  ``PGRST204``; a bad key 401 ``PGRST301``; the read-only (anon) key 401 ``42501`` on writes.
- ``GET /rest/v1/`` is the OpenAPI document of the schema cache (``format`` = Postgres type).
- The schema cache is loaded once: a column added with ``ALTER TABLE`` is only seen after
  ``NOTIFY pgrst, 'reload schema'`` or ``POST /__admin/reload-schema``. As in PostgREST, a
  listener thread of its own receives the notification and reloads the cache
  *asynchronously*: a request sent right after the NOTIFY may still see the old cache.
  ``schema_reloads`` counts reloads and ``wait_for_schema_reload(since)`` waits for the next
  one, the condition a test waits on (PostgREST logs "Schema cache loaded" at that point).
- Errors PostgreSQL raises keep their SQLSTATE, message and detail, with PostgREST's status
  table (``_status_for``): a row a CHECK refuses is 400 ``23514`` whose ``details`` echo the
  whole failing row ("Failing row contains (...)"), values in clear, as the real one does.
  ``reject_rows(sqlstate, condition)`` makes PostgreSQL itself refuse the rows matching a
  condition with any SQLSTATE (a trigger: ``22P05``, ``22021``, ``22023``, ``23P01``...),
  so the exporter meets codes nobody listed.
- ``GET /rest/v1/leads`` supports ``select``, ``col=op.value`` filters (eq, neq, gt, gte, lt,
  lte, is), ``or=(...)``/``and(...)``, ``order`` and ``limit``/``offset``. Replies carry
  ``Content-Range: 0-N/*`` (``0-N/total`` with ``Prefer: count=exact``, and 206 when that
  page is not the whole result) unless ``paging_headers`` is off (a proxy may strip it; the
  contract does not promise it), and at most ``max_rows`` rows whatever the ``limit`` asks
  (Supabase's "Max rows" setting), so a short page does not mean the end.

Every upsert request counts the lead ids it carried (``received``) and the ones it wrote
(``written``), so tests can prove that no lead was sent or written twice.
"""

from __future__ import annotations

import json
import os
import re
import select as selectlib
import threading
from collections import Counter
from typing import Any

import sqlalchemy as sa

from ..lib.db import normalize_url, quote_ident
from .harness import Request, Response, Simulator, route

SANDBOX_SERVICE_KEY = "sandbox-gestao-scouter-service-role-key"
SANDBOX_ANON_KEY = "sandbox-gestao-scouter-anon-key"
DEFAULT_SCHEMA = "gestao_scouter"

# The destination's 49 columns (contracts/scouter.md). Types follow Gestão Scouter's table:
# ficha_confirmada is text there; horario_agendamento a time and maxsystem_id_ficha a bigint,
# so some TabuladorMax text values are refused, as they are in production.
DESTINATION_COLUMNS: list[tuple[str, str]] = [
    ("id", "bigint PRIMARY KEY"),
    ("nome", "text"),
    ("age", "integer"),
    ("analisado_em", "timestamptz"),
    ("analisado_por", "text"),
    ("aprovado", "boolean"),
    ("cadastro_existe_foto", "boolean"),
    ("celular", "text"),
    ("commercial_project_id", "uuid"),
    ("compareceu", "boolean"),
    ("criado", "timestamptz"),
    ("data_confirmacao_ficha", "timestamptz"),
    ("data_criacao_ficha", "timestamptz"),
    ("date_modify", "timestamptz"),
    ("deleted", "boolean DEFAULT false"),
    ("email", "text"),
    ("etapa", "text"),
    ("etapa_fluxo", "text"),
    ("etapa_funil", "text"),
    ("ficha_confirmada", "text"),
    ("fonte", "text"),
    ("foto", "text"),
    ("horario_agendamento", "time"),
    ("last_sync_at", "timestamptz"),
    ("latitude", "double precision"),
    ("local_abordagem", "text"),
    ("local_da_abordagem", "text"),
    ("localizacao", "text"),
    ("longitude", "double precision"),
    ("maxsystem_id_ficha", "bigint"),
    ("nome_modelo", "text"),
    ("op_telemarketing", "text"),
    ("presenca_confirmada", "boolean"),
    ("projeto", "text"),
    ("raw", "jsonb"),
    ("responsible", "text"),
    ("responsible_user_id", "uuid"),
    ("scouter", "text"),
    ("scouter_id", "uuid"),
    ("status_fluxo", "text"),
    ("status_tabulacao", "text"),
    ("supervisor", "text"),
    ("sync_source", "text"),
    ("sync_status", "text"),
    ("telefone", "text"),
    ("telefone_casa", "text"),
    ("telefone_trabalho", "text"),
    ("updated_at", "timestamptz NOT NULL DEFAULT now()"),
    ("valor_ficha", "numeric(10,2)"),
]

# PostgREST's table (docs "Errors > HTTP Status Codes"): exact codes first, then classes;
# everything else is 400.
_STATUS_BY_SQLSTATE = {
    "23503": 409, "23505": 409, "25006": 405, "53400": 500, "P0001": 400, "42883": 404,
    "42P01": 404, "42P17": 500, "42501": 403,
}  # fmt: skip
_STATUS_BY_CLASS = {
    "08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500, "38": 500,
    "39": 500, "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500, "57": 500, "58": 500,
    "F0": 500, "HV": 500, "P0": 500, "XX": 500,
}  # fmt: skip
_OPS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_FILTER_RESERVED = {"select", "order", "limit", "offset", "on_conflict", "columns", "or", "and"}


def create_destination_table(engine: sa.Engine, schema: str = DEFAULT_SCHEMA) -> None:
    """Create Gestão Scouter's ``leads`` in ``schema`` if missing (idempotent)."""
    cols = ",\n  ".join(f"{quote_ident(name)} {ddl}" for name, ddl in DESTINATION_COLUMNS)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        conn.exec_driver_sql(
            f"CREATE TABLE IF NOT EXISTS {quote_ident(schema)}.leads (\n  {cols}\n)"
        )
        conn.exec_driver_sql(
            f"CREATE INDEX IF NOT EXISTS leads_updated_at_id "
            f"ON {quote_ident(schema)}.leads (updated_at, id)"
        )


def _status_for(code: str) -> int:
    return _STATUS_BY_SQLSTATE.get(code) or _STATUS_BY_CLASS.get(code[:2], 400)


def _pg_error(exc: sa.exc.DBAPIError) -> Response:
    orig = exc.orig
    code = getattr(orig, "pgcode", None) or "XX000"
    diag = getattr(orig, "diag", None)
    message = getattr(diag, "message_primary", None) or str(orig).splitlines()[0]
    body = {
        "code": code,
        "message": message,
        "details": getattr(diag, "message_detail", None),
        "hint": getattr(diag, "message_hint", None),
    }
    return Response.json(body, _status_for(code))


def _err(status: int, code: str, message: str, details: str | None = None) -> Response:
    return Response.json(
        {"code": code, "message": message, "details": details, "hint": None}, status
    )


class PostgrestSimulator(Simulator):
    """PostgREST for Gestão Scouter's ``leads`` over a real PostgreSQL table."""

    name = "postgrest"

    def __init__(
        self,
        seed: int = 0,
        *,
        database_url: str | None = None,
        schema: str = DEFAULT_SCHEMA,
        service_key: str = SANDBOX_SERVICE_KEY,
        anon_key: str = SANDBOX_ANON_KEY,
        faults: dict[str, Any] | None = None,
        max_rows: int | None = 1000,
        paging_headers: bool = True,
    ) -> None:
        super().__init__(seed, faults)
        self.max_rows = max_rows
        self.paging_headers = paging_headers
        self._database_url = database_url
        self.schema = schema
        self.service_key = service_key
        self.anon_key = anon_key
        self._engine: sa.Engine | None = None
        self._listener: Any = None  # psycopg2 connection LISTENing on "pgrst"
        self._listener_thread: threading.Thread | None = None
        self._listener_stop = threading.Event()
        self._db_lock = threading.Lock()
        self._columns: dict[str, str] | None = None  # the schema cache: name -> format
        self._reloaded = threading.Condition(self._lock)
        self._rules = 0
        self.received: Counter[int] = Counter()
        self.written: Counter[int] = Counter()
        self.schema_reloads = 0

    # ---- database -------------------------------------------------------------------

    @property
    def engine(self) -> sa.Engine:
        """Connects on first use: in the sandbox the database URL is only known then."""
        with self._db_lock:
            if self._engine is None:
                url = self._database_url or os.environ.get("SYNC_DATABASE_URL", "")
                if not url:
                    raise RuntimeError("postgrest simulator: no database (SYNC_DATABASE_URL)")
                self._engine = sa.create_engine(normalize_url(url), pool_size=4)
                create_destination_table(self._engine, self.schema)
                raw = self._engine.raw_connection()
                raw.detach()
                listener = raw.dbapi_connection
                listener.autocommit = True
                with listener.cursor() as cur:
                    cur.execute("LISTEN pgrst")
                self._listener = listener
                self._listener_stop.clear()
                self._listener_thread = threading.Thread(
                    target=self._listen, name=f"{self.name}-listener", daemon=True
                )
                self._listener_thread.start()
            return self._engine

    @property
    def table(self) -> str:
        return f"{quote_ident(self.schema)}.leads"

    def _listen(self) -> None:
        """PostgREST's listener: wait for ``NOTIFY pgrst``, reload the cache off-request."""
        listener = self._listener
        while not self._listener_stop.is_set():
            try:
                ready, _, _ = selectlib.select([listener], [], [], 0.2)
                if not ready:
                    continue
                listener.poll()
            except Exception:  # the connection was closed by stop()
                return
            payloads = [n.payload for n in listener.notifies]
            listener.notifies.clear()
            if any(p in ("", "reload schema") for p in payloads):
                self.reload_schema()

    def wait_for_schema_reload(self, since: int, timeout: float = 10.0) -> int:
        """Block until ``schema_reloads`` exceeds ``since`` (the count read before the
        NOTIFY); returns the new count. Raises ``TimeoutError`` if no reload happened."""
        with self._reloaded:
            if not self._reloaded.wait_for(lambda: self.schema_reloads > since, timeout):
                raise TimeoutError(f"no schema cache reload within {timeout} s")
            return self.schema_reloads

    def reload_schema(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT a.attname, format_type(a.atttypid, NULL) FROM pg_attribute a "
                    "WHERE a.attrelid = to_regclass(:t) AND a.attnum > 0 "
                    "AND NOT a.attisdropped ORDER BY a.attnum"
                ),
                {"t": self.table},
            ).all()
        with self._lock:
            self._columns = {name: fmt for name, fmt in rows}
            self.schema_reloads += 1
            self._reloaded.notify_all()
            return dict(self._columns)

    def columns(self) -> dict[str, str]:
        with self._lock:
            cached = self._columns
        return dict(cached) if cached is not None else self.reload_schema()

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.received.clear()
            self.written.clear()

    def reject_rows(
        self, sqlstate: str, condition: str, message: str = "format('row %s rejected', NEW.id)"
    ) -> None:
        """Make PostgreSQL refuse every row written with ``condition`` true (SQL over ``NEW``)
        with ``sqlstate`` and ``message`` (a SQL text expression), the detail echoing the
        whole row as a CHECK violation's does. A test fixture: the SQL is the test's own."""
        if not re.fullmatch(r"[0-9A-Z]{5}", sqlstate):
            raise ValueError(f"not a SQLSTATE: {sqlstate!r}")
        with self._lock:
            self._rules += 1
            name = quote_ident(f"reject_rows_{self._rules}")
        function = f"{quote_ident(self.schema)}.{name}"
        body = (
            f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $rule$ "
            f"BEGIN IF {condition} THEN RAISE EXCEPTION USING ERRCODE = '{sqlstate}', "
            f"MESSAGE = {message}, DETAIL = 'Failing row contains ' || NEW::text || '.'; "
            f"END IF; RETURN NEW; END $rule$"
        )
        with self.engine.begin() as conn:
            # psycopg2 reads "%" as a placeholder even without parameters (format's %s).
            conn.exec_driver_sql(body.replace("%", "%%"))
            conn.exec_driver_sql(
                f"CREATE TRIGGER {name} BEFORE INSERT OR UPDATE ON {self.table} "
                f"FOR EACH ROW EXECUTE FUNCTION {function}()"
            )

    def stop(self) -> None:
        super().stop()
        self._listener_stop.set()
        if self._listener_thread is not None:
            self._listener_thread.join(timeout=5)
            self._listener_thread = None
        with self._db_lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    # ---- auth -----------------------------------------------------------------------

    def _role(self, request: Request) -> str | None:
        """'service_role', 'anon' or None (no valid key), from apikey + Bearer."""
        apikey = request.header("apikey") or ""
        bearer = (request.header("authorization") or "").removeprefix("Bearer ").strip()
        if apikey == bearer == self.service_key:
            return "service_role"
        if apikey == self.anon_key and bearer in ("", self.anon_key):
            return "anon"
        return None

    def _unauthorized(self) -> Response:
        return _err(401, "PGRST301", "JWSError JWSInvalidSignature")

    # ---- routes ---------------------------------------------------------------------

    @route("POST", r"/__admin/reload-schema")
    def _admin_reload(self, request: Request) -> Response:
        return Response.json({"columns": sorted(self.reload_schema())})

    @route("GET", r"/rest/v1/?")
    def openapi(self, request: Request) -> Response:
        if self._role(request) is None:
            return self._unauthorized()
        properties = {
            name: {"format": fmt, "type": _json_type(fmt)} for name, fmt in self.columns().items()
        }
        if "id" in properties:
            properties["id"]["description"] = "Note:\nThis is a Primary Key.<pk/>"
        document = {
            "swagger": "2.0",
            "info": {"title": "PostgREST API (simulated)", "version": "12.2"},
            "paths": {"/": {}, "/leads": {}},
            "definitions": {
                "leads": {"type": "object", "required": ["id"], "properties": properties}
            },
        }
        return Response.json(document, headers={"Content-Type": "application/openapi+json"})

    @route("POST", r"/rest/v1/leads")
    def upsert(self, request: Request) -> Response:
        role = self._role(request)
        if role is None:
            return self._unauthorized()
        try:
            rows = request.json()
        except ValueError as exc:
            return _err(400, "PGRST102", "Empty or invalid json", str(exc))
        if isinstance(rows, dict):
            rows = [rows]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            return _err(400, "PGRST102", "Invalid body: an object or an array of objects")
        ids = [r.get("id") for r in rows if isinstance(r.get("id"), int)]
        with self._lock:
            self.received.update(ids)
        if role != "service_role":
            return _err(401, "42501", "permission denied for table leads")
        keys = list(rows[0]) if rows else []
        if any(set(r) != set(keys) for r in rows):
            return _err(400, "PGRST102", "All object keys must match")
        known = self.columns()
        for key in keys:
            if key not in known:
                return _err(
                    400,
                    "PGRST204",
                    f"Could not find the '{key}' column of 'leads' in the schema cache",
                )
        prefer = request.header("prefer") or ""
        on_conflict = request.query.get("on_conflict")
        if on_conflict is not None and on_conflict not in known:
            return _err(400, "42703", f'column "{on_conflict}" does not exist')
        conflict = ""
        if on_conflict is not None and keys:
            target = quote_ident(on_conflict)
            if "resolution=merge-duplicates" in prefer:
                sets = ", ".join(
                    f"{quote_ident(k)} = EXCLUDED.{quote_ident(k)}"
                    for k in keys
                    if k != on_conflict
                )
                conflict = f" ON CONFLICT ({target}) DO UPDATE SET {sets}" if sets else ""
                conflict = conflict or f" ON CONFLICT ({target}) DO NOTHING"
            elif "resolution=ignore-duplicates" in prefer:
                conflict = f" ON CONFLICT ({target}) DO NOTHING"
        cols = ", ".join(quote_ident(k) for k in keys) if keys else '"id"'
        sql = (
            f"INSERT INTO {self.table} ({cols}) SELECT {cols} "
            f"FROM json_populate_recordset(NULL::{self.table}, CAST(:body AS json)){conflict}"
        )
        try:
            # One transaction for the whole array: one bad value and nothing is written.
            with self.engine.begin() as conn:
                conn.execute(sa.text(sql), {"body": json.dumps(rows)})
        except sa.exc.DBAPIError as exc:
            return _pg_error(exc)
        with self._lock:
            self.written.update(ids)
        if "return=representation" in prefer:
            return Response.json(rows, 201)
        return Response.empty(201)

    @route("GET", r"/rest/v1/leads")
    def select(self, request: Request) -> Response:
        if self._role(request) is None:
            return self._unauthorized()
        known = self.columns()
        params: dict[str, Any] = {}
        try:
            select = request.query.get("select", "*")
            if select.strip() == "*":
                select_sql = ", ".join(quote_ident(c) for c in known)
            else:
                names = [c.strip() for c in select.split(",")]
                select_sql = ", ".join(_column(c, known) for c in names)
            conditions = []
            for key, value in request.query.items():
                if key in ("or", "and"):
                    conditions.append(_logic(key, value, known, params))
                elif key not in _FILTER_RESERVED:
                    conditions.append(_condition(key, value, known, params))
            sql = f"SELECT {select_sql} FROM {self.table}"
            if conditions:
                sql += " WHERE " + " AND ".join(conditions)
            count_sql = f"SELECT count(*) FROM ({sql}) AS counted"
            order = request.query.get("order")
            if order:
                sql += " ORDER BY " + ", ".join(_order(o, known) for o in order.split(","))
            limit = int(request.query["limit"]) if "limit" in request.query else None
            if self.max_rows is not None:
                # Supabase's "Max rows": the server's cap wins over the client's limit.
                limit = self.max_rows if limit is None else min(limit, self.max_rows)
            if limit is not None:
                sql += f" LIMIT {limit}"
            offset = int(request.query.get("offset", 0))
            if offset:
                sql += f" OFFSET {offset}"
        except _BadQuery as exc:
            return _err(400, exc.code, str(exc))
        except ValueError as exc:
            return _err(400, "PGRST100", f"failed to parse the query: {exc}")
        counted = "count=exact" in (request.header("prefer") or "")
        try:
            with self.engine.connect() as conn:
                rows = [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]
                total = conn.execute(sa.text(count_sql), params).scalar_one() if counted else None
        except sa.exc.DBAPIError as exc:
            return _pg_error(exc)
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if self.paging_headers:
            span = f"{offset}-{offset + len(rows) - 1}" if rows else "*"
            headers["Content-Range"] = f"{span}/{'*' if total is None else total}"
        # PostgREST answers 206 when a count shows the page is not the whole result.
        partial = total is not None and offset + len(rows) < total
        return Response(
            206 if partial else 200,
            json.dumps(rows, default=_json_default, ensure_ascii=False).encode("utf-8"),
            headers,
        )


class _BadQuery(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _json_type(fmt: str) -> str:
    if fmt in ("bigint", "integer", "smallint"):
        return "integer"
    if fmt in ("numeric", "double precision", "real"):
        return "number"
    if fmt == "boolean":
        return "boolean"
    return "string"


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _column(name: str, known: dict[str, str]) -> str:
    if name not in known:
        raise _BadQuery("42703", f"column leads.{name} does not exist")
    return quote_ident(name)


def _condition(column: str, expression: str, known: dict[str, str], params: dict) -> str:
    op, _, value = expression.partition(".")
    col = _column(column, known)
    if op == "is":
        if value.lower() not in ("null", "true", "false"):
            raise _BadQuery("PGRST100", f"is.{value}: expected null, true or false")
        return f"{col} IS {value.upper()}"
    if op not in _OPS:
        raise _BadQuery("PGRST100", f"unknown operator {op!r}")
    name = f"p{len(params)}"
    params[name] = value
    # An untyped literal: PostgreSQL casts it to the column's type, as PostgREST's does.
    return f"{col} {_OPS[op]} :{name}"


def _split_top(text: str) -> list[str]:
    parts, depth, buf = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(buf)
            buf = ""
        else:
            buf += ch
    parts.append(buf)
    return [p for p in parts if p]


def _logic(kind: str, body: str, known: dict[str, str], params: dict) -> str:
    """``or=(a.gt.1,and(b.eq.2,c.lt.3))`` -> SQL with bound values."""
    if not (body.startswith("(") and body.endswith(")")):
        raise _BadQuery("PGRST100", f"{kind} needs parentheses")
    terms = []
    for term in _split_top(body[1:-1]):
        match = re.match(r"^(not\.)?(and|or)(\(.*\))$", term)
        if match:
            inner = _logic(match.group(2), match.group(3), known, params)
            terms.append(f"NOT {inner}" if match.group(1) else inner)
            continue
        column, _, expression = term.partition(".")
        terms.append(_condition(column, expression, known, params))
    joiner = " OR " if kind == "or" else " AND "
    return "(" + joiner.join(terms) + ")"


def _order(term: str, known: dict[str, str]) -> str:
    parts = term.strip().split(".")
    col = _column(parts[0], known)
    direction = "DESC" if "desc" in parts[1:] else "ASC"
    nulls = " NULLS FIRST" if "nullsfirst" in parts[1:] else ""
    return f"{col} {direction}{nulls}"
