"""Re-derive ``ordens_servico``'s columns from the stored raw JSON, with no API call (issue 18).

Every order keeps the detail and the list item Tiny sent (``raw``, ``raw_list``). When a
parsing rule changes (parse.py, ``PARSER_VERSION`` bumped), ``reparse_month`` runs the current
``order_row`` over one emission month of stored payloads and writes only the orders whose
derived columns come out different, stamping the current version on them. The table then
holds what a fresh load of the same payloads with the new rules would, without downloading
history again through Tiny's rate limit (30-140 requests a minute: ~3,000 orders an hour).

Left as they are: the raw JSON; ``first_seen_at``/``last_seen_at``/``updated_at`` (nothing
changed at Tiny); ``ordem_status_history``, which records what Tiny showed and when (a rule
that reads ``situacao`` differently updates the column and is counted in
``status_changed``, never back-dated into the history); ``import_failures``, orders waiting
for Tiny, not for the parser.

A stored payload the current parser cannot read keeps its stored values and is reported by
order id and field (``unreadable``); the caller turns that into a failed run. A row whose
derived values are unchanged is not written at all (same ``xmin``), even when an older
version derived it: ``parser_version`` is the version that last wrote the row's values,
which the current parser gives identically. Only a row with no version (stored before
versions were recorded) is stamped without a change of values.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from ..lib.db import Database
from ..lib.redact import redact
from ..lib.upsert import UpsertResult, bulk_upsert
from . import parse
from .sync import SAO_PAULO, UPSERT_COLUMNS, month_bounds

log = logging.getLogger("sync_pipelines.tiny.reparse")

# The columns order_row derives from the payloads (the raw JSON itself is the input).
DERIVED_COLUMNS = [
    c for c in UPSERT_COLUMNS if c not in ("id", "raw", "raw_list", "parser_version")
]
WRITTEN_COLUMNS = ["id", *DERIVED_COLUMNS, "parser_version"]
BATCH_SIZE = 500
MAX_UNREADABLE_LISTED = 20


@dataclass
class ReparseResult:
    month: str
    parser_version: int
    read: int = 0
    changed: int = 0  # derived values differ: written with the current parser_version
    version_stamped: int = 0  # same values, no version recorded yet: only the version written
    unchanged: int = 0  # not written
    status_changed: int = 0  # among ``changed``: situacao reads differently now
    unreadable: list[tuple[int, str]] = field(default_factory=list)
    columns_changed: dict[str, int] = field(default_factory=dict)

    def metadata(self) -> dict[str, int]:
        return {
            "parser_version": self.parser_version,
            "rows_read": self.read,
            "rows_changed": self.changed,
            "rows_version_stamped": self.version_stamped,
            "rows_unchanged": self.unchanged,
            "rows_unreadable": len(self.unreadable),
            "status_changed": self.status_changed,
        }

    def unreadable_summary(self) -> str:
        shown = "; ".join(message for _, message in self.unreadable[:MAX_UNREADABLE_LISTED])
        more = len(self.unreadable) - MAX_UNREADABLE_LISTED
        return shown + (f"; and {more} more" if more > 0 else "")


def _month_filter(first: dt.date, last: dt.date) -> tuple[str, dict[str, Any]]:
    """The month's orders, as the history load assigns them: by emission date. An order
    without one (a payload whose ``data`` was empty) belongs to the month it was first seen
    in, São Paulo time, so every stored row is in exactly one partition."""
    start = dt.datetime.combine(first, dt.time(), SAO_PAULO)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), SAO_PAULO)
    return (
        "(data_emissao BETWEEN :first AND :last OR (data_emissao IS NULL "
        "AND first_seen_at >= :start AND first_seen_at < :end))",
        {"first": first, "last": last, "start": start, "end": end},
    )


def _numeric_scales(conn: sa.Connection) -> dict[str, int]:
    """Decimal places of the numeric columns: a value is compared as the column stores it
    (an amount parsed as 1.005 is stored as 1.01, and is no change when stored so)."""
    rows = conn.execute(
        sa.text(
            "SELECT column_name, numeric_scale FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'ordens_servico' "
            "AND data_type = 'numeric'"
        )
    )
    return {r.column_name: r.numeric_scale for r in rows}


def _comparable(value: Any, scale: int | None) -> Any:
    if scale is not None and isinstance(value, Decimal):
        return value.quantize(Decimal(1).scaleb(-scale))
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        # As instants in UTC: Python's == between two zones is False whenever one side is
        # a time in a DST gap or fold (PEP 495), such as the conclusion midnight of
        # 2018-11-04 in São Paulo, which did not exist.
        return value.astimezone(dt.UTC)
    return value


def _midnight_in_sao_paulo(value: dt.datetime) -> bool:
    day = value.astimezone(SAO_PAULO).date()
    # combine() and not a look at the local clock: on a DST day (2018-11-04) São Paulo's
    # midnight did not exist, and the stored instant reads 01:00 locally.
    midnight = dt.datetime.combine(day, dt.time(), SAO_PAULO)
    return _comparable(value, None) == _comparable(midnight, None)


def _conclusion(
    api_date: dt.date | None, stored: dt.datetime | None, detail: Mapping[str, Any]
) -> dt.datetime | None:
    """``data_conclusao`` as a sync would store it for these payloads.

    Tiny's conclusion date wins, as in sync.py. Without one, a stored value is the time a
    sync saw the order finish (no parser can recover it: kept), unless it is what an older
    rule read from ``dataConclusao``: a São Paulo midnight while the payload has a
    ``dataConclusao`` text the current rules read as no date; then it goes, as a fresh load
    would not have it.
    """
    if api_date is not None:
        return dt.datetime.combine(api_date, dt.time(), SAO_PAULO)
    if stored is None:
        return None
    written = str(detail.get("dataConclusao") or "").strip()
    if written and _midnight_in_sao_paulo(stored):
        return None
    return stored


def write_reparsed(
    conn: sa.Connection, rows: list[dict[str, Any]], run_id: str | None = None
) -> UpsertResult:
    """Write re-derived rows (``WRITTEN_COLUMNS``) in the caller's transaction.

    The one write of the reparse: only derived columns and the parser version are updated;
    the upsert skips a row whose values are all the same. The rows exist and are locked by
    the caller, so nothing is inserted; their payloads travel along only because the
    upsert's staging table has the target's NOT NULL columns. ``run_id`` (the Dagster run)
    goes on each row written (``sync_run_id``).
    """
    return bulk_upsert(
        conn,
        "ordens_servico",
        rows,
        ["id"],
        columns=[*WRITTEN_COLUMNS, "raw", "raw_list"],
        update_columns=WRITTEN_COLUMNS[1:],
        stamp={"sync_run_id": run_id},
    )


def _reparse_batch(
    conn: sa.Connection,
    stored_rows: list[sa.Row],
    scales: dict[str, int],
    result: ReparseResult,
    run_id: str | None,
) -> None:
    writes = []
    for stored in stored_rows:
        result.read += 1
        try:
            row = parse.order_row(stored.raw_list, stored.raw)
            if row["id"] != stored.id:  # the write is keyed by id: never another order's row
                raise ValueError(f"the stored payload is order {row['id']}'s")
        except (parse.ParseError, ValueError, TypeError) as exc:
            # Its stored values stay; the run reports it (the parser needs fixing, not Tiny).
            problem = str(exc) if isinstance(exc, parse.ParseError) else f"order {stored.id}: {exc}"
            message = redact(problem)[:500]
            result.unreadable.append((stored.id, message))
            log.error("reparse %s: cannot read the stored payload: %s", result.month, message)
            continue
        row["data_conclusao"] = _conclusion(
            row.pop("data_conclusao_api"), stored.data_conclusao, stored.raw
        )
        differs = [
            c
            for c in DERIVED_COLUMNS
            if _comparable(row[c], scales.get(c)) != _comparable(stored._mapping[c], scales.get(c))
        ]
        if not differs and stored.parser_version is not None:
            result.unchanged += 1
            continue
        if differs:
            result.changed += 1
            result.status_changed += "situacao" in differs
            for column in differs:
                result.columns_changed[column] = result.columns_changed.get(column, 0) + 1
        else:
            result.version_stamped += 1
        writes.append({c: row[c] for c in (*WRITTEN_COLUMNS, "raw", "raw_list")})
    if writes:
        write_reparsed(conn, writes, run_id)


def reparse_month(
    db: Database, month_start: dt.date, *, batch_size: int = BATCH_SIZE, run_id: str | None = None
) -> ReparseResult:
    """Re-derive the stored orders of one emission month (São Paulo) with the current parser.

    Reads the month in id order, ``batch_size`` rows per transaction: each batch is locked
    (``FOR NO KEY UPDATE``, which does not rewrite a row) while it is parsed and written, so
    a sync writing the same order meanwhile waits instead of having its newer payload's
    values overwritten with ones derived from the older payload. Rerunning is harmless: the
    rows written the first time are unchanged the second.
    """
    first, last = month_bounds(month_start)
    result = ReparseResult(month=first.strftime("%Y-%m"), parser_version=parse.PARSER_VERSION)
    where, params = _month_filter(first, last)
    columns = ", ".join(["id", "raw", "raw_list", "parser_version", *DERIVED_COLUMNS])
    after = -1
    with db.connect() as conn:
        scales = _numeric_scales(conn)
    while True:
        with db.begin() as conn:
            batch = conn.execute(
                sa.text(
                    f"SELECT {columns} FROM ordens_servico WHERE {where} AND id > :after "
                    "ORDER BY id LIMIT :n FOR NO KEY UPDATE"
                ),
                {**params, "after": after, "n": batch_size},
            ).all()
            if not batch:
                break
            _reparse_batch(conn, batch, scales, result, run_id)
        after = batch[-1].id
    log.info(
        "reparse %s with parser %d: %d read, %d changed, %d version stamped, %d unchanged, "
        "%d unreadable",
        result.month,
        result.parser_version,
        result.read,
        result.changed,
        result.version_stamped,
        result.unchanged,
        len(result.unreadable),
    )
    return result
