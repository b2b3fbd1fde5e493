"""A run of ``detran/agenda_slots`` over a range of partitions: many examiners × days at once.

Why: one run per examiner × day per tick made the schedules launch 420 runs per examiner a
day (issue 16). The schedules now launch one run per tick over the box "window days ×
registered examiners" (``MultiPartitionsDefinition`` ranges are boxes: every date of the
range × every examiner of the range). Any run launched with a partition range (e.g. one
examiner over a date range, with the range tags) takes this path too. Such a run:

- syncs the examiners one after the other, each with ``sync_examiner``: the examiner's
  advisory lock (try-only), one portal session for all of that examiner's days, the cached
  session reused;
- in a scheduled run (tag ``detran/scope=auto_sync``) syncs only active examiners with
  auto-sync, on their work days, as decided when the run starts; a manual range syncs every
  day asked;
- skips an examiner whose lock another run holds (a UI re-sync of that examiner is reading
  the portal right now: waiting would only make a second session), with a note in the log;
- never lets one examiner stop the others: a refused login, a broken page or an error is
  recorded against that examiner and the next one is synced;
- reports each day it wrote as a materialization of that ``date|examiner`` partition, and
  makes that day's appointments in the same step (materializing ``detran/agendamentos`` for
  it), so the UI's partition status shows exactly what was synced: a skipped or failed
  examiner's partitions are not marked;
- ends by failing the step, naming the examiners that failed (ids only), when any did; the
  run carries the tag ``detran/failed_examiners``.

The asset's two checks are yielded once per run (Dagster allows one result per check per
step), merged over the examiners: a check fails when it fails for any examiner, and its
metadata names them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    Failure,
    MetadataValue,
)
from dagster._core.definitions.partitions.utils.multi import get_tags_from_multi_partition_key

from ...lib.locks import LockNotAvailable
from ...lib.redact import redact
from ...provenance import rows_of_run_query
from ...resources import DatabaseResource, TelegramResource
from ..appointments import create_appointments
from ..client import PortalClient
from ..examiners import Examiner, ExaminerNotFound, get_examiner
from ..sync import SyncResult, sync_examiner
from .checks import guard_checks
from .partitions import partition_key, split_partition
from .resources import DetranPortalResource

AGENDA_SLOTS = AssetKey(["detran", "agenda_slots"])
AGENDAMENTOS = AssetKey(["detran", "agendamentos"])
# The tables whose rows carry the run that last changed them (sync_run_id).
DETRAN_TABLES = ("agenda_slots", "agenda_sync_runs")

# Set by the schedules: sync only who has auto-sync, on their work days.
SCOPE_TAG = "detran/scope"
AUTO_SYNC_SCOPE = "auto_sync"
# Set on the run when examiners failed: the Runs page can filter on it.
FAILED_TAG = "detran/failed_examiners"


def examiner_days(keys: Iterable[str]) -> dict[int, list[dt.date]]:
    """``date|examiner`` keys → the days of each examiner, in the order the keys come."""
    plan: dict[int, list[dt.date]] = {}
    for key in keys:
        day, usuario_id = split_partition(str(key))
        plan.setdefault(usuario_id, []).append(day)
    return {u: sorted(set(days)) for u, days in plan.items()}


@dataclass
class RangeOutcome:
    """What the run did with each examiner (ids only: no personal data)."""

    synced: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    locked: list[int] = field(default_factory=list)
    not_in_scope: list[int] = field(default_factory=list)
    days_written: int = 0


def _days_to_sync(
    examiner: Examiner, days: Sequence[dt.date], only_auto_sync: bool
) -> tuple[list[dt.date], str | None]:
    """The days of ``examiner`` this run syncs, or an error that stops this examiner."""
    if not examiner.active:
        if only_auto_sync:
            return [], None  # deactivated since the tick: nothing to sync, nothing wrong
        return [], f"examiner {examiner.usuario_id} is inactive: not synced"
    if only_auto_sync:
        if not examiner.auto_sync:
            return [], None
        return [d for d in days if examiner.works_on(d)], None
    return list(days), None


def _day_metadata(result: SyncResult, day) -> dict:
    return {
        "status": MetadataValue.text("partial" if day.unreadable_rows else "success"),
        "inserted": MetadataValue.int(day.inserted),
        "updated": MetadataValue.int(day.updated),
        "unchanged": MetadataValue.int(day.unchanged),
        "removed": MetadataValue.int(day.removed),
        "bookings_on_portal": MetadataValue.int(day.bookings),
        "rows_not_stored": MetadataValue.int(day.unreadable_rows),
        "last_seen_refreshed": MetadataValue.int(day.touched),
        # The examiner's session, shared by all their days in this run.
        "logins": MetadataValue.int(result.logins),
        "session_reused": MetadataValue.bool(result.session_reused),
        "agenda_sync_run_id": MetadataValue.int(result.run_id),
        "days_in_this_run": MetadataValue.int(len(result.days)),
    }


def _materialization(asset_key: AssetKey, day: dt.date, usuario_id: int, metadata: dict):
    key = partition_key(day, usuario_id)
    return AssetMaterialization(
        asset_key=asset_key,
        partition=key,
        metadata=metadata,
        # As Dagster tags the materializations it makes itself: per-dimension filters in the UI.
        tags=dict(get_tags_from_multi_partition_key(key)),
    )


def merge_checks(per_examiner: dict[int, list[AssetCheckResult]]) -> list[AssetCheckResult]:
    """One result per check for the whole run: failed when any examiner's failed."""
    by_check: dict[str, list[tuple[int, AssetCheckResult]]] = {}
    for usuario_id, results in per_examiner.items():
        for result in results:
            by_check.setdefault(result.check_name, []).append((usuario_id, result))
    merged = []
    for name, results in by_check.items():
        if len(results) == 1:
            merged.append(results[0][1])
            continue
        failing = [u for u, r in results if not r.passed]
        severity = results[0][1].severity
        merged.append(
            AssetCheckResult(
                check_name=name,
                passed=not failing,
                severity=severity,
                metadata={
                    "examiners_checked": MetadataValue.int(len(results)),
                    "examiners_failing": MetadataValue.int(len(failing)),
                    "failing_examiner_ids": MetadataValue.text(
                        ", ".join(str(u) for u in failing) or "-"
                    ),
                },
            )
        )
    return merged


def sync_partition_range(
    context: AssetExecutionContext,
    detran_db: DatabaseResource,
    detran_portal: DetranPortalResource,
    telegram: TelegramResource,
    control_db: DatabaseResource,
) -> Iterator:
    """The body of ``detran/agenda_slots`` for a run over a range of partitions."""
    db = detran_db.db
    only_auto_sync = context.run.tags.get(SCOPE_TAG) == AUTO_SYNC_SCOPE
    plan = examiner_days(context.partition_keys)
    settings = detran_portal.settings()
    sessions = detran_portal.session_cache(db)
    options = detran_portal.run_options(context.run.run_id)
    outcome = RangeOutcome()
    checks: dict[int, list[AssetCheckResult]] = {}
    context.log.info(
        f"syncing {len(plan)} examiner(s) over {len(context.partition_keys)} partition(s)"
        + (" (auto-sync examiners on their work days only)" if only_auto_sync else "")
    )
    for usuario_id, wanted in plan.items():
        started = time.monotonic()
        try:
            examiner = get_examiner(db, usuario_id)
        except ExaminerNotFound as exc:
            outcome.failed[usuario_id] = str(exc)
            continue
        days, refusal = _days_to_sync(examiner, wanted, only_auto_sync)
        if refusal:
            outcome.failed[usuario_id] = refusal
            continue
        if not days:
            outcome.not_in_scope.append(usuario_id)
            continue
        try:
            result = sync_examiner(
                db,
                examiner,
                days,
                portal_factory=lambda credentials: PortalClient(settings, credentials),
                sessions=sessions,
                options=options,
            )
        except LockNotAvailable:
            # Another run (a re-sync from the UI, a backfill) is reading this examiner's
            # agenda now; the portal allows one session per examiner. The next tick syncs them.
            context.log.warning(
                f"examiner {usuario_id} skipped: another run holds their lock (it is being "
                "synced there); nothing read, nothing marked"
            )
            outcome.locked.append(usuario_id)
            continue
        except Exception as exc:  # noqa: BLE001 - one examiner must not stop the others
            outcome.failed[usuario_id] = f"{type(exc).__name__}: {redact(exc)}"
            context.log.error(f"examiner {usuario_id}: {outcome.failed[usuario_id]}")
            continue
        checks[usuario_id] = guard_checks(context, db, result, telegram, control_db, detran_portal)
        for day in result.days:
            if not day.ok:
                continue
            metadata = _day_metadata(result, day) | {
                "run_rows_query": MetadataValue.md(
                    "Rows this run wrote (and no later run changed):\n\n```sql\n"
                    + "\n".join(rows_of_run_query(db, t, context.run.run_id) for t in DETRAN_TABLES)
                    + "\n```"
                )
            }
            yield _materialization(AGENDA_SLOTS, day.date, usuario_id, metadata)
            outcome.days_written += 1
            try:
                made = create_appointments(db, usuario_id, day.date, context.run.run_id)
            except Exception as exc:  # noqa: BLE001 - the slots are stored; report and go on
                outcome.failed[usuario_id] = (
                    f"appointments of {day.date.isoformat()}: {type(exc).__name__}: {redact(exc)}"
                )
                continue
            yield _materialization(
                AGENDAMENTOS,
                day.date,
                usuario_id,
                {k: MetadataValue.int(v) for k, v in dataclasses.asdict(made).items()},
            )
        if result.status == "failed" or result.days_failed:
            outcome.failed.setdefault(usuario_id, f"{result.status}: {result.error}")
        else:
            outcome.synced.append(usuario_id)
        context.log.info(
            f"examiner {usuario_id}: {result.status}, {result.days_ok}/{len(days)} day(s) "
            f"written, {result.logins} login(s), session reused: {result.session_reused}, "
            f"{time.monotonic() - started:.1f}s"
        )
    yield from merge_checks(checks)
    summary = {
        "examiners_synced": MetadataValue.int(len(outcome.synced)),
        "examiners_failed": MetadataValue.int(len(outcome.failed)),
        "failed_examiner_ids": MetadataValue.text(", ".join(map(str, outcome.failed)) or "-"),
        "examiners_skipped_locked": MetadataValue.text(", ".join(map(str, outcome.locked)) or "-"),
        "examiners_not_in_scope": MetadataValue.int(len(outcome.not_in_scope)),
        "days_written": MetadataValue.int(outcome.days_written),
    }
    context.log.info(
        f"{len(outcome.synced)} examiner(s) synced, {len(outcome.failed)} failed, "
        f"{len(outcome.locked)} skipped (locked elsewhere), {outcome.days_written} day(s) written"
    )
    if outcome.failed:
        context.instance.add_run_tags(
            context.run.run_id, {FAILED_TAG: ",".join(map(str, outcome.failed))}
        )
        reasons = "; ".join(f"examiner {u}: {why}" for u, why in outcome.failed.items())
        raise Failure(
            description=f"{len(outcome.failed)} examiner(s) not (fully) synced — {reasons}. "
            "The other examiners' days are stored and marked; see agenda_sync_runs.",
            metadata=summary,
            allow_retries=False,
        )
