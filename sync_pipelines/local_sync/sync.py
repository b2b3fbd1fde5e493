"""Copy one instance's contacts, contact sectors and chats from the main database to its tenant.

Plain Python: takes the main, tenant and control databases, returns counts per table. Each
table is written in one tenant transaction through ``bulk_upsert`` (bound parameters,
batched), and its watermark is committed after that transaction, never before.

Modes:
- ``full`` (the 6-hourly reconcile, and the first sync of a tenant): every source row of the
  instance is compared with the tenant's rows; only missing or different rows are written,
  and the drift found (missing, different, only in the tenant) is reported.
- ``incremental``: only source rows changed since the tenant's last successful sync
  (``updated_at >=`` the watermark minus an overlap for late commits; for chats without
  ``updated_at``: new ids plus the chats the tenant still has open).
A table's watermark is the newest source timestamp its pass read (never later than this
run's own clock, so a source row stamped in the future cannot push it past changes still to
come), committed only after the tenant transaction of that pass; a pass that could not see
every change (chats tracked by id) leaves the timestamp watermark where it was.
Every write unit (one table's tenant transaction) first calls ``before_write`` (the
caller's lock check: a run whose lock was lost stops before writing more).
Sector links are always compared as the instance's whole set (it is small and has no
timestamps): links gone at the source are deleted and new ones inserted in ONE transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from ..lib.db import Database
from ..lib.upsert import UpsertResult, bulk_upsert
from . import source, target
from .charset import fit_text, storable
from .watermarks import Watermark, Watermarks

log = logging.getLogger(__name__)

TIMEZONE_VAR = "LOCAL_SYNC_TIMEZONE"
DEFAULT_TIMEZONE = "America/Sao_Paulo"
OVERLAP_VAR = "LOCAL_SYNC_OVERLAP_MINUTES"
TABLES = ("wpp_contacts", "wpp_contact_sectors", "wpp_chats")


@dataclass(frozen=True)
class SyncSettings:
    timezone: ZoneInfo = ZoneInfo(DEFAULT_TIMEZONE)
    # Incremental reads start this much before the watermark: a row committed late with an
    # older updated_at is still picked up (re-reading a few rows costs nothing: upserts).
    overlap: dt.timedelta = dt.timedelta(minutes=10)


@dataclass
class TableResult:
    table: str
    mode: str  # "full" | "incremental" | "set"
    source_rows: int = 0
    upsert: UpsertResult = field(default_factory=UpsertResult)
    missing_in_tenant: int | None = None  # full mode: rows the tenant lacked
    different_in_tenant: int | None = None  # full mode: rows the tenant had with other values
    only_in_tenant: int | None = None  # full mode: tenant rows with no source row (kept)
    deleted: int = 0  # sector links removed
    text_replaced_rows: int = 0  # rows with characters the tenant's charset cannot hold
    text_truncated_rows: int = 0  # rows with a value longer than the tenant's column
    phones_moved_aside: int = 0
    chats_shape: str | None = None
    duration_s: float = 0.0

    @property
    def written(self) -> int:
        return self.upsert.written + self.deleted

    def metadata(self) -> dict[str, int | float | str]:
        data: dict[str, int | float | str] = {
            "mode": self.mode,
            "source_rows": self.source_rows,
            **self.upsert.as_metadata(),
            "rows_written": self.written,
            "text_replaced_rows": self.text_replaced_rows,
            "text_truncated_rows": self.text_truncated_rows,
            "duration_s": round(self.duration_s, 3),
        }
        for name in ("missing_in_tenant", "different_in_tenant", "only_in_tenant"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.table == "wpp_contact_sectors":
            data["deleted"] = self.deleted
        if self.table == "wpp_contacts":
            data["phones_moved_aside"] = self.phones_moved_aside
        if self.chats_shape:
            data["chats_shape"] = self.chats_shape
        return data


# --- value conversion ---------------------------------------------------------------------


def tenant_time(value: dt.datetime | None, tz: ZoneInfo) -> dt.datetime | None:
    """A source timestamp as the tenant's DATETIME: wall clock in ``tz``, whole seconds.

    Naive source values are UTC (Prisma); the conversion is explicit so neither the
    server's nor this process's local time zone can slip in. Seconds are truncated here
    because MySQL and MariaDB round or truncate fractions differently.
    """
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=source.SOURCE_TIMEZONE)
    return value.astimezone(tz).replace(tzinfo=None, microsecond=0)


class TenantClock:
    """``tenant_time`` for many values: the zone's UTC offset is looked up once per UTC day.

    Converting each chat's two timestamps through ``astimezone`` is most of the per-row cost
    of a large chat table. A day whose offset is the same at its first and last microsecond
    has no transition in it (zones change offset at most a couple of times a year, never
    twice in a day), so every instant of it shifts by that offset; a transition day is
    converted value by value, exactly as ``tenant_time`` does.
    """

    _LAST_MICROSECOND = dt.timedelta(days=1, microseconds=-1)

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self._day_offsets: dict[int, dt.timedelta | None] = {}

    def _offset(self, utc_midnight: dt.datetime) -> dt.timedelta | None:
        def at(moment: dt.datetime) -> dt.timedelta | None:
            return moment.replace(tzinfo=dt.UTC).astimezone(self.tz).utcoffset()

        first = at(utc_midnight)
        return first if at(utc_midnight + self._LAST_MICROSECOND) == first else None

    def __call__(self, value: dt.datetime | None) -> dt.datetime | None:
        if value is None or value.tzinfo is not None:
            return tenant_time(value, self.tz)
        day = value.toordinal()
        try:
            offset = self._day_offsets[day]
        except KeyError:
            offset = self._day_offsets[day] = self._offset(dt.datetime.fromordinal(day))
        if offset is None:
            return tenant_time(value, self.tz)
        local = value + offset
        return local.replace(microsecond=0) if local.microsecond else local


class TextFitter:
    """Adapts the rows' text values to the tenant columns and counts the rows it touched."""

    # Any charset that can store an emoji (outside the BMP) stores every character: only
    # the column length then matters (utf8mb4, the usual tenant, skips the per-character test).
    _BEYOND_BMP = "\U0001f600"

    def __init__(self, columns: Mapping[str, target.TextColumn]) -> None:
        self.columns = columns
        self.replaced_rows = 0
        self.truncated_rows = 0

    def fit_rows(self, rows: list[dict]) -> list[dict]:
        """Fit every row in place, a column at a time: a value that is ASCII (or any text in
        a Unicode column) and within the column length is left as it is without a call."""
        replaced: set[int] = set()
        truncated: set[int] = set()
        for name, col in self.columns.items():
            any_text = storable(self._BEYOND_BMP, col.charset)
            limit = col.max_length if col.max_length is not None else float("inf")
            suspects = [
                i
                for i, row in enumerate(rows)
                if (v := row.get(name)).__class__ is str
                and not ((any_text or v.isascii()) and len(v) <= limit)
            ]
            for i in suspects:
                fitted = fit_text(rows[i][name], col.charset, col.max_length)
                rows[i][name] = fitted.value
                if fitted.replaced:
                    replaced.add(i)
                if fitted.truncated:
                    truncated.add(i)
        self.replaced_rows += len(replaced)
        self.truncated_rows += len(truncated)
        return rows


def _as_int(value) -> int | None:
    return None if value is None else int(value)


def _flag(value) -> int:
    return 1 if value else 0


def _changed_at(row: Mapping) -> dt.datetime | None:
    return row.get("updated_at") or row.get("created_at")


def _newest(marks: Iterable[dt.datetime | None]) -> dt.datetime | None:
    present = [m.replace(tzinfo=None) if m.tzinfo else m for m in marks if m is not None]
    return max(present) if present else None


def _source_now(now: dt.datetime | None) -> dt.datetime:
    """This run's clock in the source's terms (naive UTC, like Prisma's columns)."""
    now = now or dt.datetime.now(dt.UTC)
    return now.astimezone(source.SOURCE_TIMEZONE).replace(tzinfo=None)


def _advance(
    previous: dt.datetime | None, newest_read: dt.datetime | None, now: dt.datetime
) -> dt.datetime | None:
    """The next watermark: the newest change read, capped at this run's clock (taken before
    the read). A row stamped in the future (a writer whose clock runs ahead) would otherwise
    move the watermark past changes other writers have yet to make; capped, the next run
    merely reads that row again. Never moves back."""
    capped = min(newest_read, now) if newest_read is not None else None
    return _newest([capped, previous])


def _nothing() -> None:
    return None


def _diff(
    rows: list[dict], key: str, columns: tuple[str, ...], tenant_rows: Mapping[int, tuple]
) -> tuple[list[dict], int, int, int]:
    """Rows to write (missing or different), and the counts of each kind plus tenant extras."""
    to_write, missing, different = [], 0, 0
    for row in rows:
        current = tenant_rows.get(row[key])
        if current is None:
            missing += 1
            to_write.append(row)
        elif current != tuple(row[c] for c in columns):
            different += 1
            to_write.append(row)
    only_in_tenant = len(set(tenant_rows) - {row[key] for row in rows})
    return to_write, missing, different, only_in_tenant


def _result_for(rows_in_source: int, upsert: UpsertResult) -> UpsertResult:
    """Upsert counts over the whole source set (rows skipped by the diff are unchanged)."""
    return UpsertResult(
        upsert.inserted,
        upsert.updated,
        rows_in_source - upsert.inserted - upsert.updated,
        upsert.duplicates_in_input,
    )


# --- tables -------------------------------------------------------------------------------


def sync_contacts(
    main_db: Database,
    tenant_db: Database,
    marks: Watermarks,
    instance: str,
    *,
    full: bool,
    settings: SyncSettings,
    now: dt.datetime | None = None,
    before_write: Callable[[], None] = _nothing,
) -> TableResult:
    started = time.monotonic()
    now = _source_now(now)
    previous = None if full else marks.get("wpp_contacts", instance)
    mode = "incremental" if previous and previous.changed_since else "full"
    since = previous.changed_since - settings.overlap if mode == "incremental" else None
    with main_db.connect() as conn:
        source.utc_session(conn)
        source_rows = source.read_contacts(conn, instance, changed_since=since)
    newest = _newest(_changed_at(r) for r in source_rows)
    result = TableResult("wpp_contacts", mode, source_rows=len(source_rows))
    with tenant_db.begin() as conn:
        fitter = TextFitter(target.text_columns(conn, tenant_db, "wpp_contacts"))
        rows = fitter.fit_rows(
            [
                {
                    "id": int(r["id"]),
                    "instance": r["instance"],
                    "name": r["name"] or "",
                    "phone": r["phone"] or "",
                    "customer_id": _as_int(r["customer_id"]),
                    "is_deleted": _flag(r["is_deleted"]),
                }
                for r in source_rows
            ]
        )
        if mode == "full":
            current = target.read_contacts(conn, instance)
            to_write, result.missing_in_tenant, result.different_in_tenant, extra = _diff(
                rows, "id", target.CONTACT_COLUMNS, current
            )
            result.only_in_tenant = extra
            holders = {values[3]: cid for cid, values in current.items()}
        else:
            to_write = rows
            holders = target.contacts_holding_phones(conn, instance, [r["phone"] for r in rows])
        stale = {
            holders[r["phone"]] for r in to_write if holders.get(r["phone"], r["id"]) != r["id"]
        }
        before_write()
        result.phones_moved_aside = target.move_phones_aside(conn, sorted(stale))
        upsert = bulk_upsert(conn, "wpp_contacts", to_write, ["id"], columns=target.CONTACT_COLUMNS)
    result.upsert = _result_for(len(rows), upsert)
    result.text_replaced_rows, result.text_truncated_rows = (
        fitter.replaced_rows,
        fitter.truncated_rows,
    )
    mark = Watermark(changed_since=_advance(previous and previous.changed_since, newest, now))
    marks.commit("wpp_contacts", instance, mark, mode)
    result.duration_s = time.monotonic() - started
    return result


def sync_contact_sectors(
    main_db: Database,
    tenant_db: Database,
    instance: str,
    *,
    before_insert: Callable[[], None] | None = None,
    before_write: Callable[[], None] = _nothing,
) -> TableResult:
    """Make the tenant's links of the instance exactly the source's set, in one transaction.

    ``before_insert`` runs between the delete and the insert (tests use it to prove a crash
    there leaves the old set: the transaction rolls the delete back).
    """
    started = time.monotonic()
    with main_db.connect() as conn:
        wanted = source.read_sector_links(conn, instance)
    result = TableResult("wpp_contact_sectors", "set", source_rows=len(wanted))
    with tenant_db.begin() as conn:
        current = target.read_sector_links(conn, instance)
        gone = sorted(current - wanted)
        new = sorted(wanted - current)
        result.missing_in_tenant, result.only_in_tenant = len(new), len(gone)
        before_write()
        result.deleted = target.delete_sector_links(conn, gone)
        if before_insert is not None:
            before_insert()
        upsert = bulk_upsert(
            conn,
            "wpp_contact_sectors",
            [{"contact_id": c, "sector_id": s} for c, s in new],
            ["contact_id", "sector_id"],
            columns=["contact_id", "sector_id"],
            update_columns=[],
            batch_size=500,
        )
    result.upsert = _result_for(len(wanted), upsert)
    result.duration_s = time.monotonic() - started
    return result


def _chat_row(r: Mapping, key: str, tz: TenantClock) -> dict:
    return {
        key: int(r["id"]),
        "instance": r["instance"],
        "type": r["type"] or "",
        "avatar_url": r["avatar_url"],
        "user_id": _as_int(r["user_id"]),
        "contact_id": _as_int(r["contact_id"]),
        "sector_id": _as_int(r["sector_id"]),
        "started_at": tz(r["started_at"]),
        "finished_at": tz(r["finished_at"]),
        "finished_by": _as_int(r["finished_by"]),
        "result_id": _as_int(r["result_id"]),
        "is_finished": _flag(r["is_finished"]),
        "is_schedule": _flag(r["is_schedule"]),
    }


def sync_chats(
    main_db: Database,
    tenant_db: Database,
    marks: Watermarks,
    instance: str,
    *,
    full: bool,
    settings: SyncSettings,
    now: dt.datetime | None = None,
    before_write: Callable[[], None] = _nothing,
) -> TableResult:
    started = time.monotonic()
    now = _source_now(now)
    previous = None if full else marks.get("wpp_chats", instance)
    mode = "incremental" if previous and previous.max_id is not None else "full"
    with tenant_db.begin() as conn:
        shape = target.chats_shape(conn)
        if shape.legacy:
            before_write()
            target.ensure_original_id_unique(conn, tenant_db)
        open_ids = target.open_chat_ids(conn, shape, instance) if mode == "incremental" else []
    with main_db.connect() as conn:
        source.utc_session(conn)
        by_timestamp = source.has_column(conn, "chats", "updated_at")
        # Only a pass that sees every changed chat may move the timestamp watermark: the
        # full one, and the one by timestamp. The id pass (new + open chats) cannot.
        sees_every_change = by_timestamp and (mode == "full" or bool(previous.changed_since))
        if mode == "full":
            source_rows = source.read_chats(conn, instance, with_updated_at=by_timestamp)
        elif sees_every_change:
            source_rows = source.read_chats(
                conn,
                instance,
                changed_since=previous.changed_since - settings.overlap,
                after_id=previous.max_id,
                also_ids=open_ids,
            )
        else:
            source_rows = source.read_chats(
                conn, instance, after_id=previous.max_id, also_ids=open_ids
            )
    result = TableResult("wpp_chats", mode, source_rows=len(source_rows), chats_shape=shape.name)
    columns = (shape.key, *target.CHAT_DATA_COLUMNS)
    with tenant_db.begin() as conn:
        fitter = TextFitter(target.text_columns(conn, tenant_db, "wpp_chats"))
        clock = TenantClock(settings.timezone)
        rows = fitter.fit_rows([_chat_row(r, shape.key, clock) for r in source_rows])
        if mode == "full":
            current = target.read_chats(conn, shape, instance)
            to_write, result.missing_in_tenant, result.different_in_tenant, extra = _diff(
                rows, shape.key, target.CHAT_DATA_COLUMNS, current
            )
            result.only_in_tenant = extra
        else:
            to_write = rows
        before_write()
        upsert = bulk_upsert(conn, "wpp_chats", to_write, [shape.key], columns=columns)
    result.upsert = _result_for(len(rows), upsert)
    result.text_replaced_rows, result.text_truncated_rows = (
        fitter.replaced_rows,
        fitter.truncated_rows,
    )
    max_ids = [r[shape.key] for r in rows] + ([previous.max_id] if previous else [])
    newest = _newest(r.get("updated_at") for r in source_rows) if sees_every_change else None
    mark = Watermark(
        changed_since=_advance(previous and previous.changed_since, newest, now),
        max_id=max(max_ids) if max_ids else 0,
    )
    marks.commit("wpp_chats", instance, mark, mode)
    result.duration_s = time.monotonic() - started
    return result


@dataclass
class TenantSyncResult:
    instance: str
    tables: dict[str, TableResult] = field(default_factory=dict)
    migrations_applied: list[str] = field(default_factory=list)


def sync_tenant(
    main_db: Database,
    tenant_db: Database,
    control_db: Database,
    instance: str,
    *,
    tables: Iterable[str] = TABLES,
    full: bool = False,
    settings: SyncSettings | None = None,
    on_table: Callable[[TableResult], None] | None = None,
    before_write: Callable[[], None] = _nothing,
    now: dt.datetime | None = None,
) -> TenantSyncResult:
    """Sync the chosen tables of one instance (contacts first: the links join on them).

    ``before_write`` runs before each table's writes (pass the advisory lock's
    ``ensure_held``); ``now`` is this run's clock (default: the current time).
    """
    settings = settings or SyncSettings()
    now = now or dt.datetime.now(dt.UTC)
    wanted = set(tables)
    unknown = wanted - set(TABLES)
    if unknown:
        raise ValueError(f"unknown local sync table(s): {', '.join(sorted(unknown))}")
    marks = Watermarks(control_db)
    outcome = TenantSyncResult(instance)
    outcome.migrations_applied = target.ensure_tables(tenant_db).applied
    # Contacts and chats read the same way (watermarks, full or incremental); sector links
    # are replaced as a set.
    watermarked = dict(full=full, settings=settings, now=now, before_write=before_write)
    steps: list[tuple[str, Callable[[], TableResult]]] = [
        ("wpp_contacts", lambda: sync_contacts(main_db, tenant_db, marks, instance, **watermarked)),
        (
            "wpp_contact_sectors",
            lambda: sync_contact_sectors(main_db, tenant_db, instance, before_write=before_write),
        ),
        ("wpp_chats", lambda: sync_chats(main_db, tenant_db, marks, instance, **watermarked)),
    ]
    for table, step in steps:
        if table not in wanted:
            continue
        result = step()
        outcome.tables[table] = result
        if result.text_replaced_rows or result.text_truncated_rows:
            log.warning(
                "%s of %s: %d row(s) had characters the tenant's charset cannot store "
                "(stored with the closest characters), %d value(s) cut to the column length",
                table,
                instance,
                result.text_replaced_rows,
                result.text_truncated_rows,
            )
        if on_table is not None:
            on_table(result)
    return outcome
