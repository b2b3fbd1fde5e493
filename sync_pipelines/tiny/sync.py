"""Tiny service-order syncs, plain Python: month loads, incremental, retries, integrity.

Tiny has no "modified since" filter and no webhook for service orders, so change detection
is: list an emission-date window, compare each list item's fingerprint with what we stored,
and fetch the detail only for orders that are new or whose list entry changed. Orders not in
a final state are re-listed by status on every incremental run, whatever their age.

Each page is written in ONE transaction together with its status-history rows, its failures
and its checkpoint, so a crash at any point leaves either the whole page or none of it, and
the rerun resumes from the last committed page.

A ``CircuitBreaker`` (breaker.py) shared by all the calls of one sync stops it when Tiny
fails N calls in a row: the interrupted page is rolled back, and ``CircuitOpen`` says where
the next run resumes (the month's checkpoint, the next incremental listing, or the rows
still waiting in ``import_failures``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ..lib.checkpoints import CheckpointStore
from ..lib.db import Database
from ..lib.http import HttpError, TransientHttpError
from ..lib.redact import redact
from ..lib.upsert import UpsertResult, bulk_upsert
from .breaker import CircuitBreaker, CircuitOpen
from .client import OrderPage, TinyApiError, TinyClient
from .parse import (
    ALL_STATUSES,
    FINAL_STATUSES,
    OPEN_STATUSES,
    ParseError,
    list_fingerprint,
    order_row,
    parse_situacao,
)

SAO_PAULO = ZoneInfo("America/Sao_Paulo")
HISTORY_PIPELINE = "tiny_service_orders_history"
RETRY_BACKOFF_S = 30  # 30 s, 2 min, 8 min, 32 min… (x4 per attempt)
MAX_ATTEMPTS = 5
SEEN_REFRESH = "1 hour"  # how stale last_seen_at may get before a listing refreshes it
log = logging.getLogger("sync_pipelines.tiny")

# Columns the upsert may overwrite: everything but first_seen_at/last_seen_at/updated_at,
# which the database manages (defaults, the touch trigger, and the "seen" update).
UPSERT_COLUMNS = [
    "id", "numero", "situacao", "data_emissao", "data_prevista", "data_conclusao", "cliente_id",
    "cliente_nome", "cliente_codigo", "cliente_tipo_pessoa", "cliente_cpf_cnpj", "cliente_email",
    "cliente_celular", "cliente_municipio", "cliente_uf", "total_servicos", "total_pecas",
    "total_ordem_servico", "desconto", "desconto_percentual", "equipamento", "tecnico",
    "categoria", "list_hash", "parser_version", "raw", "raw_list",
]  # fmt: skip


@dataclass
class SyncResult:
    pages: int = 0
    relisted_pages: int = 0
    listed: int = 0
    details_fetched: int = 0
    upserted: UpsertResult = field(default_factory=UpsertResult)
    status_changes: int = 0
    failures: int = 0
    failures_resolved: int = 0
    resumed_from_offset: int = 0
    api_calls: int = 0
    rate_limited: int = 0
    duration_s: float = 0.0

    def metadata(self) -> dict[str, float | int]:
        return {
            "orders_inserted": self.upserted.inserted,
            "orders_updated": self.upserted.updated,
            "orders_unchanged": self.upserted.unchanged,
            "status_changes": self.status_changes,
            "details_fetched": self.details_fetched,
            "import_failures": self.failures,
            "failures_resolved": self.failures_resolved,
            "pages": self.pages,
            "relisted_pages": self.relisted_pages,
            "orders_listed": self.listed,
            "api_calls": self.api_calls,
            "rate_limited_429": self.rate_limited,
            "resumed_from_offset": self.resumed_from_offset,
            "duration_s": round(self.duration_s, 2),
        }


@dataclass
class _Batch:
    """One page of orders as read from Tiny, before anything is written."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    seen: list[int] = field(default_factory=list)


class _Meter:
    """API calls and 429s of one sync, from the HTTP client's counters."""

    def __init__(self, client: TinyClient):
        self.client = client
        self.result = SyncResult()
        self.start = dict(client.stats)
        self.t0 = time.monotonic()

    def close(self, result: SyncResult) -> SyncResult:
        now = self.client.stats
        result.api_calls = now.get("requests", 0) - self.start.get("requests", 0)
        result.rate_limited = now.get("429", 0) - self.start.get("429", 0)
        result.duration_s = time.monotonic() - self.t0
        return result


def _list_hashes(db: Database, ids: Iterable[int]) -> dict[int, str]:
    ids = list(ids)
    if not ids:
        return {}
    with db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT id, list_hash FROM ordens_servico WHERE id = ANY(:ids)"),
            {"ids": ids},
        )
        return {r.id: r.list_hash for r in rows}


def _conclusion(
    row: dict[str, Any], stored: sa.Row | None, observed_at: dt.datetime
) -> dt.datetime | None:
    """The API's conclusion date; else, for an order we saw move into a final state, when we saw it."""
    api_date = row.pop("data_conclusao_api")
    if api_date is not None:
        return dt.datetime.combine(api_date, dt.time(), SAO_PAULO)
    if stored is not None and stored.data_conclusao is not None:
        return stored.data_conclusao
    if (
        row["situacao"] in FINAL_STATUSES
        and stored is not None
        and stored.situacao not in FINAL_STATUSES
    ):
        return observed_at
    return None


def _failure(order_id: int, error: str, payload: Any) -> dict[str, Any]:
    return {"id_ordem": order_id, "erro": redact(error)[:2000], "dados_api": payload}


def _fetch_batch(
    client: TinyClient,
    db: Database,
    items: list[Mapping[str, Any]],
    result: SyncResult,
    *,
    breaker: CircuitBreaker,
    force_detail: bool = False,
    skip_details: set[int] | frozenset[int] = frozenset(),
) -> _Batch:
    """Read the details a page needs, holding no database connection or transaction.

    A page may cost up to 100 detail calls, minutes under a tight rate limit: a transaction
    open across them would hold its locks (and a pooled connection) that long. The stored
    state is read again, under row locks, when the batch is written (``_write_batch``).
    ``skip_details`` are orders already tried in this run (a re-list does not retry them).
    """
    batch = _Batch()
    by_id: dict[int, Mapping[str, Any]] = {}
    for item in items:
        try:
            by_id[int(item["id"])] = item
        except (KeyError, TypeError, ValueError):
            # An item without a usable id cannot be fetched or stored; say so loudly.
            log.error("Tiny listed an order without a usable id; skipped (keys: %s)", sorted(item))
    hashes = _list_hashes(db, by_id)
    for order_id, item in by_id.items():
        batch.seen.append(order_id)
        if order_id in skip_details or (
            not force_detail and hashes.get(order_id) == list_fingerprint(item)
        ):
            result.upserted.unchanged += 1
            continue
        detail: Any = None
        try:
            detail = client.get_order(order_id)
        except HttpError as exc:
            # Raises CircuitOpen at the threshold: nothing of this page has been written
            # yet, so no order of it is recorded as seen, synced or failed.
            breaker.failed(exc)
            batch.failures.append(_failure(order_id, f"{type(exc).__name__}: {exc}", None))
            continue
        except (TinyApiError, ValueError) as exc:  # Tiny answered, with an unusable body
            breaker.succeeded()
            batch.failures.append(_failure(order_id, f"{type(exc).__name__}: {exc}", None))
            continue
        breaker.succeeded()
        try:
            result.details_fetched += 1
            batch.rows.append(order_row(item, detail))
        except (TinyApiError, ParseError, ValueError) as exc:
            batch.failures.append(_failure(order_id, f"{type(exc).__name__}: {exc}", detail))
    return batch


def _write_batch(
    conn: sa.Connection, batch: _Batch, result: SyncResult, origin: str, run_id: str | None
) -> None:
    """Write a fetched page in the caller's transaction; ``run_id`` (the Dagster run, or None)
    goes on every row it changes (``sync_run_id``), never on a row it only saw again.

    The orders' stored rows are locked and read here, not before the detail calls: another
    run (the month load and the incremental sync overlap) may have written them meanwhile,
    and a status change is recorded from what is stored now. Each order's history rows are
    numbered; two runs recording the same change race for the same number, and the unique
    key (id_os, seq) keeps one.
    """
    rows = sorted(batch.rows, key=lambda r: r["id"])  # one lock order for every writer
    ids = [r["id"] for r in rows]
    if rows:
        stored = {
            r.id: r
            for r in conn.execute(
                sa.text(
                    "SELECT id, situacao, data_conclusao FROM ordens_servico "
                    "WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"
                ),
                {"ids": ids},
            )
        }
        last_seq = dict(
            conn.execute(
                sa.text(
                    "SELECT id_os, max(seq) FROM ordem_status_history "
                    "WHERE id_os = ANY(:ids) GROUP BY id_os"
                ),
                {"ids": ids},
            ).all()
        )
        now = dt.datetime.now(dt.UTC)
        history = []
        for row in rows:
            previous = stored.get(row["id"])
            row["data_conclusao"] = _conclusion(row, previous, now)
            if previous is None or previous.situacao != row["situacao"]:
                history.append(
                    {
                        "id_os": row["id"],
                        "status_antigo": None if previous is None else previous.situacao,
                        "status_novo": row["situacao"],
                        "origem": origin,
                        "seq": last_seq.get(row["id"], 0) + 1,
                    }
                )
        result.upserted += bulk_upsert(
            conn,
            "ordens_servico",
            rows,
            ["id"],
            columns=UPSERT_COLUMNS,
            stamp={"sync_run_id": run_id},
        )
        if history:
            written = conn.execute(
                sa.text(
                    "INSERT INTO ordem_status_history (id_os, status_antigo, status_novo, origem, "
                    "seq, sync_run_id) SELECT id_os, status_antigo, status_novo, origem, seq, :run "
                    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS h(id_os bigint, "
                    "status_antigo smallint, status_novo smallint, origem text, seq integer) "
                    "ON CONFLICT (id_os, seq) DO NOTHING RETURNING status_antigo"
                ),
                {"rows": json.dumps(history), "run": run_id},
            ).all()
            result.status_changes += sum(1 for (old,) in written if old is not None)
    if batch.seen:
        # "Seen" is refreshed at most every SEEN_REFRESH: a rerun that finds nothing new
        # leaves the rows (and the run id on them) untouched.
        conn.execute(
            sa.text(
                "UPDATE ordens_servico SET last_seen_at = now() WHERE id = ANY(:ids) "
                "AND last_seen_at < now() - CAST(:refresh AS interval)"
            ),
            {"ids": batch.seen, "refresh": SEEN_REFRESH},
        )
    for failure in batch.failures:
        record_failure(conn, **failure, run_id=run_id)
    result.failures += len(batch.failures)
    if ids:
        resolved = conn.execute(
            sa.text(
                "UPDATE import_failures SET resolvido = true, ultima_tentativa = now(), "
                "sync_run_id = :run WHERE id_ordem = ANY(:ids) AND NOT resolvido"
            ),
            {"ids": ids, "run": run_id},
        ).rowcount
        result.failures_resolved += resolved


def _sync_page(
    client: TinyClient,
    db: Database,
    items: list[Mapping[str, Any]],
    result: SyncResult,
    *,
    origin: str,
    breaker: CircuitBreaker,
    force_detail: bool = False,
    skip_details: set[int] | frozenset[int] = frozenset(),
    also: Callable[[sa.Connection], None] | None = None,
    run_id: str | None = None,
) -> _Batch:
    """Fetch a page's details (no transaction), then write it in one transaction, together
    with ``also`` (the month's checkpoint)."""
    batch = _fetch_batch(
        client,
        db,
        items,
        result,
        breaker=breaker,
        force_detail=force_detail,
        skip_details=skip_details,
    )
    with db.begin() as conn:
        _write_batch(conn, batch, result, origin, run_id)
        if also is not None:
            also(conn)
    return batch


def record_failure(
    conn: sa.Connection, id_ordem: int, erro: str, dados_api: Any, run_id: str | None = None
) -> None:
    """Insert or bump a failure; the next attempt is due after 30 s x 4^(attempts-1)."""
    conn.execute(
        sa.text(
            "INSERT INTO import_failures AS f (id_ordem, erro, dados_api, tentativas, resolvido, "
            "proxima_tentativa, sync_run_id) VALUES (:id, :erro, CAST(:dados AS jsonb), 1, false, "
            "now() + make_interval(secs => :first), :run) "
            "ON CONFLICT (id_ordem) DO UPDATE SET erro = EXCLUDED.erro, "
            "sync_run_id = EXCLUDED.sync_run_id, "
            "dados_api = COALESCE(EXCLUDED.dados_api, f.dados_api), ultima_tentativa = CURRENT_TIMESTAMP, "
            "tentativas = CASE WHEN f.resolvido THEN 1 ELSE f.tentativas + 1 END, resolvido = false, "
            "proxima_tentativa = now() + make_interval(secs => :first * power(4, "
            "CASE WHEN f.resolvido THEN 0 ELSE f.tentativas END))"
        ),
        {
            "id": id_ordem,
            "erro": erro,
            "dados": None
            if dados_api is None
            else json.dumps(dados_api, ensure_ascii=False, default=str),
            "first": RETRY_BACKOFF_S,
            "run": run_id,
        },
    )


def _guarded(
    fetch: Callable[[int], OrderPage], breaker: CircuitBreaker
) -> Callable[[int], OrderPage]:
    """A page fetch that asks again after a transient failure, until the breaker opens.

    A page cannot be skipped, so the only choices are to try again or to stop; each try is
    one more call with its own retries, counted by the breaker.
    """

    def fetch_page(offset: int) -> OrderPage:
        while True:
            try:
                page = fetch(offset)
            except HttpError as exc:
                breaker.failed(exc)
                if not isinstance(exc, TransientHttpError):
                    raise
                log.warning(
                    "listing at offset %d failed (%d in a row): %s",
                    offset,
                    breaker.consecutive,
                    exc,
                )
                continue
            breaker.succeeded()
            return page

    return fetch_page


def month_bounds(month_start: dt.date) -> tuple[dt.date, dt.date]:
    first = month_start.replace(day=1)
    next_month = (first + dt.timedelta(days=32)).replace(day=1)
    return first, next_month - dt.timedelta(days=1)


def sync_month(
    client: TinyClient,
    db: Database,
    month_start: dt.date,
    *,
    on_page: Callable[[SyncResult, OrderPage], None] | None = None,
    breaker: CircuitBreaker | None = None,
    run_id: str | None = None,
) -> SyncResult:
    """Load every order emitted in one month, resuming from the partition's checkpoint.

    Raises ``CircuitOpen`` (with the resume page) when Tiny keeps failing; the checkpoint
    then stays at the last committed page, marked failed with the reason.
    """
    breaker = breaker or CircuitBreaker()
    first, last = month_bounds(month_start)
    key = first.strftime("%Y-%m")
    checkpoints = CheckpointStore(db)
    meter = _Meter(client)
    result = meter.result
    saved = checkpoints.get(HISTORY_PIPELINE, key)
    # A finished month is re-listed from the start (a rerun means "check it again");
    # an interrupted one resumes after its last committed page.
    offset = 0 if saved is None or saved.done else int(saved.position.get("offset", 0))
    result.resumed_from_offset = offset
    if offset:
        log.info("month %s: resuming at offset %d (checkpoint)", key, offset)

    def fetch(off: int) -> OrderPage:
        return client.list_orders(offset=off, emitted_from=first, emitted_to=last)

    failed: set[int] = set()
    try:
        for page in client.iter_pages(_guarded(fetch, breaker), offset):
            result.pages += 1
            result.listed += len(page.items)
            offset = page.offset + len(page.items)
            position = {"offset": offset, "total": page.total}
            batch = _sync_page(
                client,
                db,
                page.items,
                result,
                origin="historical",
                breaker=breaker,
                also=lambda conn, p=position: checkpoints.save(conn, HISTORY_PIPELINE, key, p),
                run_id=run_id,
            )
            failed.update(f["id_ordem"] for f in batch.failures)
            log.info("month %s: page %d, offset %d/%d", key, result.pages, offset, page.total)
            if on_page:
                on_page(result, page)
        # Offset paging reads each page once: an order that changed on a page already read
        # (3 -> 7 while later pages were listed) would stay stale until the nightly check.
        _relist_until_quiet(client, db, fetch, result, "historical", breaker, failed, key, run_id)
    except CircuitOpen as stop:
        page_number = offset // client.PAGE_SIZE + 1
        stop.resumes(
            f"nothing lost, the next run resumes from page {page_number} (offset {offset})",
            meter.close(result),
        )
        with db.begin() as conn:
            # Written explicitly: a re-check of a finished month restarted at offset 0, and
            # its old "done" position must not make the next run skip what was not re-checked.
            checkpoints.save(conn, HISTORY_PIPELINE, key, {"offset": offset}, status="failed")
        checkpoints.mark_failed(HISTORY_PIPELINE, key, stop.reason)
        raise
    checkpoints.mark_done(HISTORY_PIPELINE, key, {"offset": offset})
    return meter.close(result)


def _open_order_ids(conn: sa.Connection) -> dict[int, int]:
    rows = conn.execute(
        sa.text("SELECT id, situacao FROM ordens_servico WHERE situacao = ANY(:open)"),
        {"open": list(OPEN_STATUSES)},
    )
    return {r.id: r.situacao for r in rows}


MAX_RELIST_PASSES = 3


def _relist_until_quiet(
    client: TinyClient,
    db: Database,
    fetch: Callable[[int], OrderPage],
    result: SyncResult,
    origin: str,
    breaker: CircuitBreaker,
    failed: set[int],
    label: str,
    run_id: str | None,
) -> None:
    """List the window again, storing what changed since it was read, until a whole pass
    finds nothing new (at most ``MAX_RELIST_PASSES``).

    Unchanged orders cost no detail call (their list fingerprint matches), so a quiet pass
    costs one list call per page. Orders that already failed in this run are not retried
    here (that would count attempts twice); ``import_failures`` retries them.
    """
    for attempt in range(1, MAX_RELIST_PASSES + 1):
        changed = 0
        for page in client.iter_pages(_guarded(fetch, breaker)):
            result.relisted_pages += 1
            batch = _sync_page(
                client,
                db,
                page.items,
                result,
                origin=origin,
                breaker=breaker,
                skip_details=failed,
                run_id=run_id,
            )
            failed.update(f["id_ordem"] for f in batch.failures)
            changed += len(batch.rows) + len(batch.failures)
        if not changed:
            return
        log.info(
            "%s: re-list pass %d stored %d orders that changed while paging",
            label,
            attempt,
            changed,
        )
    log.warning(
        "%s: orders still changing after %d re-list passes; the incremental sync and the "
        "integrity check pick up what changes next",
        label,
        MAX_RELIST_PASSES,
    )


def _sync_listing(
    client: TinyClient,
    db: Database,
    result: SyncResult,
    fetch,
    origin: str,
    breaker: CircuitBreaker,
    run_id: str | None,
) -> set[int]:
    seen: set[int] = set()
    for page in client.iter_pages(_guarded(fetch, breaker)):
        result.pages += 1
        result.listed += len(page.items)
        batch = _sync_page(
            client, db, page.items, result, origin=origin, breaker=breaker, run_id=run_id
        )
        seen.update(batch.seen)
    return seen


def _refetch(
    client: TinyClient,
    db: Database,
    ids: list[int],
    result: SyncResult,
    origin: str,
    breaker: CircuitBreaker,
    run_id: str | None,
) -> None:
    """Fetch orders one by one (they left the listing we expected them in), 100 per commit.

    Without a list item, the stored fingerprint becomes that of ``{"id": ...}``: the next
    listing that shows the order differs from it and costs one more detail fetch, never a miss.
    """
    for start in range(0, len(ids), 100):
        items = [{"id": order_id} for order_id in ids[start : start + 100]]
        _sync_page(
            client,
            db,
            items,
            result,
            origin=origin,
            breaker=breaker,
            force_detail=True,
            run_id=run_id,
        )


def sync_incremental(
    client: TinyClient,
    db: Database,
    *,
    window_days: int = 7,
    today: dt.date | None = None,
    breaker: CircuitBreaker | None = None,
    run_id: str | None = None,
) -> SyncResult:
    """Re-list the recent emission window and every open order, whatever its age.

    Raises ``CircuitOpen`` when Tiny keeps failing; the next run re-lists everything, so
    stopping loses nothing (the "last incremental run" mark is not moved).
    """
    meter = _Meter(client)
    breaker = breaker or CircuitBreaker()
    try:
        return _incremental(client, db, window_days, today, breaker, meter, run_id)
    except CircuitOpen as stop:
        raise stop.resumes(
            "nothing lost, the next incremental run lists the window and the open orders again",
            meter.close(meter.result),
        ) from None


def _incremental(
    client: TinyClient,
    db: Database,
    window_days: int,
    today: dt.date | None,
    breaker: CircuitBreaker,
    meter: _Meter,
    run_id: str | None,
) -> SyncResult:
    result = meter.result
    today = today or dt.datetime.now(SAO_PAULO).date()
    since = today - dt.timedelta(days=window_days)
    with db.connect() as conn:
        open_before = _open_order_ids(conn)
    seen = _sync_listing(
        client,
        db,
        result,
        lambda off: client.list_orders(offset=off, emitted_from=since, emitted_to=today),
        "incremental",
        breaker,
        run_id,
    )
    for status in OPEN_STATUSES:
        seen |= _sync_listing(
            client,
            db,
            result,
            lambda off, s=status: client.list_orders(offset=off, situacao=s),
            "incremental",
            breaker,
            run_id,
        )
    # An open order that no listing showed has moved (usually into a final state) or shifted
    # between offset pages while it changed: fetch each one directly so none is lost.
    vanished = sorted(set(open_before) - seen)
    if vanished:
        log.info(
            "%d open orders were not in their listings; fetching them one by one", len(vanished)
        )
        _refetch(client, db, vanished, result, "incremental", breaker, run_id)
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO sync_metadata (chave, valor) VALUES ('ultima_execucao_incremental', :v) "
                "ON CONFLICT (chave) DO UPDATE SET valor = EXCLUDED.valor"
            ),
            {"v": dt.datetime.now(dt.UTC).isoformat()},
        )
    return meter.close(result)


def retry_failures(
    client: TinyClient,
    db: Database,
    *,
    max_attempts: int = MAX_ATTEMPTS,
    limit: int = 500,
    breaker: CircuitBreaker | None = None,
    run_id: str | None = None,
) -> SyncResult:
    """Retry failed imports whose backoff has elapsed; after ``max_attempts`` they wait for a person.

    Raises ``CircuitOpen`` when Tiny keeps failing; the orders not reached stay in
    ``import_failures`` as they were (the interrupted batch does not count as an attempt).
    """
    meter = _Meter(client)
    breaker = breaker or CircuitBreaker()
    result = meter.result
    with db.connect() as conn:
        due = (
            conn.execute(
                sa.text(
                    "SELECT id_ordem FROM import_failures WHERE NOT resolvido AND tentativas < :max "
                    "AND (proxima_tentativa IS NULL OR proxima_tentativa <= now()) "
                    "ORDER BY proxima_tentativa NULLS FIRST LIMIT :limit"
                ),
                {"max": max_attempts, "limit": limit},
            )
            .scalars()
            .all()
        )
    if due:
        try:
            _refetch(client, db, list(due), result, "retry", breaker, run_id)
        except CircuitOpen as stop:
            raise stop.resumes(
                "nothing lost, the failed imports stay in import_failures for the next retry run",
                meter.close(result),
            ) from None
    return meter.close(result)


def failure_counts(db: Database, *, max_attempts: int = MAX_ATTEMPTS) -> dict[str, int]:
    with db.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT count(*) FILTER (WHERE NOT resolvido AND tentativas < :max) AS retrying, "
                "count(*) FILTER (WHERE NOT resolvido AND tentativas >= :max) AS manual_review, "
                "count(*) FILTER (WHERE resolvido) AS resolved FROM import_failures"
            ),
            {"max": max_attempts},
        ).one()
    return {"retrying": row.retrying, "manual_review": row.manual_review, "resolved": row.resolved}


@dataclass
class IntegrityReport:
    api_by_status: dict[int, int] = field(default_factory=dict)
    db_by_status: dict[int, int] = field(default_factory=dict)
    recovered: int = 0
    stale_fixed: int = 0
    only_in_db: int = 0
    persistent_failures: int = 0
    sync: SyncResult = field(default_factory=SyncResult)

    @property
    def api_total(self) -> int:
        return sum(self.api_by_status.values())

    @property
    def db_total(self) -> int:
        return sum(self.db_by_status.values())


def _db_statuses(db: Database) -> dict[int, int]:
    with db.connect() as conn:
        return {
            r.id: r.situacao
            for r in conn.execute(sa.text("SELECT id, situacao FROM ordens_servico"))
        }


def _list_every_order(
    client: TinyClient, breaker: CircuitBreaker, result: SyncResult
) -> dict[int, Mapping[str, Any]]:
    """Every order Tiny has, by id, from listings without a status filter.

    A listing filtered by status shifts under offset paging when an order changes status
    while it is read: the orders after it move one place and the one on the page edge is
    never seen. Unfiltered and ordered by (data, id), the listing does not move when a
    status changes; orders deleted while paging still shift it, so it is read again,
    keeping what each pass saw, until it has seen as many distinct orders as Tiny counts.
    """
    listed: dict[int, Mapping[str, Any]] = {}
    total = 0
    for _ in range(MAX_RELIST_PASSES):
        for page in client.iter_pages(
            _guarded(lambda off: client.list_orders(offset=off), breaker)
        ):
            result.pages += 1
            result.listed += len(page.items)
            total = page.total
            for item in page.items:
                try:
                    listed[int(item["id"])] = item
                except (KeyError, TypeError, ValueError):
                    log.error(
                        "integrity: Tiny listed an order without a usable id (keys: %s)",
                        sorted(item),
                    )
        if len(listed) >= total:
            return listed
    log.warning(
        "integrity: %d distinct orders listed but Tiny counts %d after %d passes",
        len(listed),
        total,
        MAX_RELIST_PASSES,
    )
    return listed


def check_integrity(
    client: TinyClient,
    db: Database,
    *,
    breaker: CircuitBreaker | None = None,
    run_id: str | None = None,
) -> IntegrityReport:
    """Per status 0–7, compare the API's ids with the table; import missing orders and fix
    stale statuses (with history rows). Raises ``CircuitOpen`` when Tiny keeps failing."""
    meter = _Meter(client)
    breaker = breaker or CircuitBreaker()
    try:
        return _integrity(client, db, breaker, meter, run_id)
    except CircuitOpen as stop:
        raise stop.resumes(
            "nothing lost, the next integrity run compares everything again",
            meter.close(meter.result),
        ) from None


def _integrity(
    client: TinyClient, db: Database, breaker: CircuitBreaker, meter: _Meter, run_id: str | None
) -> IntegrityReport:
    report = IntegrityReport(sync=meter.result)
    listed = _list_every_order(client, breaker, report.sync)
    listed_status: dict[int, int] = {}
    for order_id, item in listed.items():
        try:
            listed_status[order_id] = parse_situacao(order_id, item.get("situacao"))
        except ParseError as exc:
            # Counted nowhere, and imported as "missing" or "stale" so the detail decides.
            log.error("integrity: %s", exc)
            listed_status[order_id] = -1
    report.api_by_status = {
        s: sum(1 for v in listed_status.values() if v == s) for s in ALL_STATUSES
    }
    stored = _db_statuses(db)
    missing = [i for i in listed if i not in stored]
    stale = [i for i in listed if i in stored and stored[i] != listed_status[i]]
    report.only_in_db = sum(1 for i in stored if i not in listed)
    for label, ids in (("missing", missing), ("stale", stale)):
        for start in range(0, len(ids), 100):
            items = [listed[i] for i in ids[start : start + 100]]
            batch = _sync_page(
                client,
                db,
                items,
                report.sync,
                origin="integrity",
                breaker=breaker,
                force_detail=True,
                run_id=run_id,
            )
            ok = len(batch.rows)
            if label == "missing":
                report.recovered += ok
            else:
                report.stale_fixed += ok
    after = _db_statuses(db)
    report.db_by_status = {s: sum(1 for v in after.values() if v == s) for s in ALL_STATUSES}
    report.persistent_failures = failure_counts(db)["manual_review"]
    meter.close(report.sync)
    return report
