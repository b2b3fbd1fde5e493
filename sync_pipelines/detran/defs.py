"""DETRAN-SP examiner agenda in Dagster (group ``detran``).

- ``detran/agenda_slots``: one partition per day × examiner (``2025-03-12|1``; days in
  America/Sao_Paulo up to 14 days ahead, examiners are the dynamic partitions
  ``detran_examiners``). Reads that day from the e-CNHsp portal and upserts its bookings
  into ``agenda_slots``; marks vanished ones removed only after a successful read; one
  ``agenda_sync_runs`` row per run. Fails (no materialization) when the day could not be
  read, or when another sync of the same examiner holds its lock.
- ``detran/agendamentos``: the same partitions; current available slots → ``agendamentos``.
- ``detran_examiners_sensor``: adds every active examiner of ``detran_examiners`` as a
  partition (running by default: without it a new examiner is never synced).
- ``detran_next_3_days`` (every 15 min) and ``detran_days_4_to_14`` (every 2 h): one run per
  examiner with auto-sync × work day, tagged ``examiner=<id>`` so dagster.yaml's tag limit
  queues runs of one examiner one at a time. Running by default: the users rely on them,
  and each examiner's ``auto_sync`` flag is the switch that says who is synced.

Guards (issue 10, guards.py): ``agenda_slots`` carries two checks, evaluated on every run
(also on a failed one): ``removal_share_within_limit`` (a read removing more than
``DETRAN_REMOVAL_ALERT_SHARE`` of the examiner's current slots) and
``run_failure_rate_within_limit`` (failed runs of the examiner over 24 h above
``DETRAN_FAILURE_RATE_ALERT``). Mass removals and refused logins alert the admins on
Telegram once when they start and once when they clear (alert state in the control
database).
"""

import datetime as dt
import os
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    ConfigurableResource,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    DynamicPartitionsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    PartitionedConfig,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    define_asset_job,
    schedule,
    sensor,
)
from pydantic import Field

from ..lib.alerts import AlertState, announce
from ..lib.db import DatabaseConfigError, database_for_role
from ..lib.locks import LockNotAvailable
from ..lib.redact import mask_cpf, redact
from ..resources import DatabaseResource, TelegramResource
from .appointments import create_appointments
from .client import PortalClient, PortalSettings
from .examiners import ExaminerNotFound, get_examiner, list_examiners
from .guards import (
    DEFAULT_FAILURE_RATE,
    DEFAULT_REMOVAL_SHARE,
    FAILURE_RATE_VAR,
    REMOVAL_SHARE_VAR,
    failure_rate,
    login_key,
    login_refused,
    removal_guard,
    share_from_env,
)
from .sessions import SessionCache
from .sync import SyncOptions, SyncResult, describe_examiner, sync_examiner

TZ = "America/Sao_Paulo"
EXAMINERS_PARTITIONS = "detran_examiners"
DAYS_AHEAD = 14  # the schedules sync today and the next 13 days

days_partitions = DailyPartitionsDefinition(
    start_date="2025-01-01", timezone=TZ, end_offset=DAYS_AHEAD + 1
)
examiner_partitions = DynamicPartitionsDefinition(name=EXAMINERS_PARTITIONS)
agenda_partitions = MultiPartitionsDefinition(
    {"date": days_partitions, "examiner": examiner_partitions}
)


def split_partition(key: str) -> tuple[dt.date, int]:
    """``"2025-03-12|1"`` → (date, usuario_id)."""
    keys = agenda_partitions.get_partition_key_from_str(key).keys_by_dimension
    return dt.date.fromisoformat(keys["date"]), int(keys["examiner"])


def partition_key(day: dt.date, usuario_id: int | str) -> MultiPartitionKey:
    return MultiPartitionKey({"date": day.isoformat(), "examiner": str(usuario_id)})


class DetranPortalResource(ConfigurableResource):
    """The e-CNHsp portal. Its URL and the credentials key come from the environment
    (``DETRAN_PORTAL_URL``, ``DETRAN_CREDENTIALS_KEY``), never from run config."""

    diagnostics_dir: str | None = Field(
        default=None,
        description="Folder for unrecognised pages (PII-masked); default DETRAN_DIAGNOSTICS_DIR.",
    )
    session_ttl_minutes: int = Field(default=45, description="How long a cached session is reused.")
    touch_interval_minutes: int = Field(
        default=60, description="How stale last_seen_at of an unchanged slot may get."
    )
    logout_after_run: bool | None = Field(
        default=None,
        description="Log out at the end of each run (no session reuse); default "
        "DETRAN_LOGOUT_AFTER_RUN, false.",
    )

    def settings(self) -> PortalSettings:
        settings = PortalSettings.from_env()
        if self.diagnostics_dir:
            settings = PortalSettings(
                settings.base_url, Path(self.diagnostics_dir), settings.timeout, settings.retry
            )
        return settings

    def options(self, holder_hint: str) -> SyncOptions:
        logout = self.logout_after_run
        if logout is None:
            logout = os.environ.get("DETRAN_LOGOUT_AFTER_RUN", "").strip().lower() in (
                "1",
                "true",
                "yes",
            )
        return SyncOptions(
            touch_interval=dt.timedelta(minutes=self.touch_interval_minutes),
            logout_after_run=logout,
            holder_hint=holder_hint,
        )


def _sync_metadata(result: SyncResult, seconds: float) -> dict:
    day = result.days[0] if result.days else None
    return {
        "status": MetadataValue.text(result.status),
        "inserted": MetadataValue.int(result.totals["inserted"]),
        "updated": MetadataValue.int(result.totals["updated"]),
        "unchanged": MetadataValue.int(result.totals["unchanged"]),
        "removed": MetadataValue.int(result.totals["removed"]),
        "bookings_on_portal": MetadataValue.int(sum(d.bookings for d in result.days)),
        "rows_not_stored": MetadataValue.int(len(result.row_problems)),
        "logins": MetadataValue.int(result.logins),
        "session_reused": MetadataValue.bool(result.session_reused),
        "duration_seconds": MetadataValue.float(round(seconds, 3)),
        "agenda_sync_run_id": MetadataValue.int(result.run_id),
        "last_seen_refreshed": MetadataValue.int(day.touched if day else 0),
    }


def _preview(db, usuario_id: int, day: dt.date) -> str:
    import sqlalchemy as sa

    with db.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT hora, status, payload->>'cpf' AS cpf, payload->>'categoria' AS categoria,"
                " payload->>'tipo_processo' AS tipo FROM agenda_slots"
                " WHERE usuario_id = :u AND data = :d ORDER BY hora, status LIMIT 40"
            ),
            {"u": usuario_id, "d": day},
        ).all()
    lines = ["| hora | status | CPF | categoria | processo |", "|---|---|---|---|---|"]
    lines += [
        f"| {r.hora:%H:%M} | {r.status} | {mask_cpf(r.cpf) if r.cpf else '-'} | "
        f"{r.categoria or '-'} | {r.tipo or '-'} |"
        for r in rows
    ]
    return "\n".join(lines)


REMOVAL_CHECK = "removal_share_within_limit"
FAILURE_RATE_CHECK = "run_failure_rate_within_limit"
AGENDA_CHECKS = [
    AssetCheckSpec(
        REMOVAL_CHECK,
        asset=["detran", "agenda_slots"],
        description=f"Fails when one read would remove more than {REMOVAL_SHARE_VAR} "
        f"(default {DEFAULT_REMOVAL_SHARE:.0%}) of the examiner's current slots of the day, "
        "and stays failed until they come back. The read is still recorded.",
    ),
    AssetCheckSpec(
        FAILURE_RATE_CHECK,
        asset=["detran", "agenda_slots"],
        description=f"Fails when more than {FAILURE_RATE_VAR} (default "
        f"{DEFAULT_FAILURE_RATE:.0%}) of the examiner's runs of the last 24 h failed.",
    ),
]


def _alerts(context) -> AlertState | None:
    """The alert state in the control database, or None (logged) when it is not configured.

    Built from the environment like the shared ``control_db`` resource, so the DETRAN
    assets need no extra resource key; an unconfigured control database only turns the
    alerts off, never the sync.
    """
    try:
        return AlertState(database_for_role("control"))
    except DatabaseConfigError as exc:
        context.log.warning(f"DETRAN alerts are off: {exc}")
        return None


def _announce(context, alerts: AlertState | None, key: str, active: bool, **texts) -> None:
    if alerts is None:
        return
    telegram = TelegramResource()
    try:
        change = announce(
            alerts,
            key,
            active,
            send=lambda text: telegram.notify_admins(text, context.log),
            **texts,
        )
    except Exception as exc:  # noqa: BLE001 - an alert problem must not hide the run's outcome
        context.log.warning(f"alert {key} not updated: {type(exc).__name__}: {exc}")
        return
    if change:
        context.log.warning(f"alert {key}: {change}")


def _guard_checks(context, db, result: SyncResult) -> list[AssetCheckResult]:
    """Evaluate the examiner's guards after a run, send the alerts, return both checks."""
    alerts = _alerts(context)
    who = f"examiner {result.usuario_id}"
    refused = login_refused(result)
    if refused is not None:
        _announce(
            context,
            alerts,
            login_key(result.usuario_id),
            refused,
            raised=lambda: (
                f"🔴 DETRAN: the portal refused the login of {who}: "
                f"{redact(result.error or '')}. Their agenda is not synced until the credentials are "
                "fixed (`sync-pipelines detran add-examiner --usuario-id "
                f"{result.usuario_id} ...`)."
            ),
            resolved=f"✅ DETRAN: {who} logs in to the portal again; their agenda syncs.",
        )
    checks = []
    guard = removal_guard(
        db, result, alerts, share_from_env(REMOVAL_SHARE_VAR, DEFAULT_REMOVAL_SHARE)
    )
    if guard is None:
        checks.append(
            AssetCheckResult(
                check_name=REMOVAL_CHECK,
                passed=True,
                metadata={"note": "no day was read: nothing removed, nothing to judge"},
            )
        )
    else:
        days = f"{result.window_start.isoformat()}" + (
            f"..{result.window_end.isoformat()}" if result.window_end != result.window_start else ""
        )
        _announce(
            context,
            alerts,
            guard.key,
            guard.active,
            details=guard.details(),
            raised=lambda: (
                f"⚠️ DETRAN: {guard.vanished} of {guard.before} current slots of {who} "
                f"on {days} vanished from the portal at once ({guard.share:.0%} > "
                f"{guard.threshold:.0%}). They are marked removed; check the portal before the "
                "clinic acts on it."
            ),
            resolved=f"✅ DETRAN: the slots of {who} on {days} are back to normal "
            f"({guard.share:.0%} missing).",
        )
        checks.append(
            AssetCheckResult(
                check_name=REMOVAL_CHECK,
                passed=not guard.active,
                metadata={
                    "before": guard.before,
                    "vanished": guard.vanished,
                    "share": MetadataValue.float(round(guard.share, 4)),
                    "threshold": MetadataValue.float(guard.threshold),
                    "this_run_before": guard.run_before,
                    "this_run_removed": guard.run_vanished,
                    "since_earlier_run": guard.carried_over,
                },
            )
        )
    rate = failure_rate(
        db, result.usuario_id, share_from_env(FAILURE_RATE_VAR, DEFAULT_FAILURE_RATE)
    )
    checks.append(
        AssetCheckResult(
            check_name=FAILURE_RATE_CHECK,
            passed=not rate.too_high,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "failed_runs": rate.failed,
                "finished_runs": rate.finished,
                "failure_rate": MetadataValue.float(round(rate.rate, 4)),
                "threshold": MetadataValue.float(rate.threshold),
                "hours": rate.hours,
            },
        )
    )
    if alerts is not None:
        alerts.db.dispose()
    return checks


@asset(
    key=["detran", "agenda_slots"],
    partitions_def=agenda_partitions,
    group_name="detran",
    pool="detran_portal",
    kinds={"postgres", "html"},
    owners=["team:data-platform"],
    check_specs=AGENDA_CHECKS,
    description=(
        "Bookings of one examiner on one day, read from the DETRAN-SP e-CNHsp portal "
        "(Agenda Diária do Perito) into agenda_slots: deduplicated by a stable uid, unchanged "
        "bookings not rewritten, vanished ones marked removed only after a successful read; "
        "each run logged in agenda_sync_runs."
    ),
)
def agenda_slots(
    context: AssetExecutionContext,
    detran_db: DatabaseResource,
    detran_portal: DetranPortalResource,
):
    day, usuario_id = split_partition(context.partition_key)
    db = detran_db.db
    try:
        examiner = get_examiner(db, usuario_id)
    except ExaminerNotFound as exc:
        raise Failure(description=str(exc), allow_retries=False) from None
    if not examiner.active:
        raise Failure(
            description=f"examiner {usuario_id} is inactive: not synced (reactivate it with "
            "`sync-pipelines detran add-examiner --usuario-id ... --active --keep-password`)",
            allow_retries=False,
        )
    settings = detran_portal.settings()
    started = time.monotonic()
    context.log.info(f"syncing {describe_examiner(examiner)} for {day.isoformat()}")
    try:
        result = sync_examiner(
            db,
            examiner,
            [day],
            portal_factory=lambda credentials: PortalClient(settings, credentials),
            sessions=SessionCache(
                db,
                settings.base_url,
                ttl=dt.timedelta(minutes=detran_portal.session_ttl_minutes),
            ),
            options=detran_portal.options(holder_hint=f"(this is Dagster run {context.run_id})"),
        )
    except LockNotAvailable as exc:
        # Another run is syncing this examiner (the portal allows one session per user):
        # stop at once without touching the portal; the next tick picks the day up.
        raise Failure(
            description=f"examiner {usuario_id} is already being synced by another run; this "
            f"run stopped without reading the portal. {exc}",
            allow_retries=False,
        ) from None
    metadata = _sync_metadata(result, time.monotonic() - started)
    # Yielded before a failure too: a failed run must still count in the failure-rate check.
    yield from _guard_checks(context, db, result)
    if result.status == "failed":
        raise Failure(
            description=f"{day.isoformat()} of examiner {usuario_id} was not synced: {result.error}"
            " (nothing was marked removed; see agenda_sync_runs.error_details)",
            metadata=metadata,
            allow_retries=False,
        )
    if result.status == "partial":
        context.log.warning(f"partial sync: {result.error}")
    metadata["preview"] = MetadataValue.md(_preview(db, usuario_id, day))
    yield MaterializeResult(metadata=metadata)


@asset(
    key=["detran", "agendamentos"],
    deps=[agenda_slots],
    partitions_def=agenda_partitions,
    group_name="detran",
    kinds={"postgres"},
    owners=["team:data-platform"],
    description=(
        "The clinic's appointments made from the examiner's current available slots of the "
        "day: idempotent, linked through agenda_slots.agendamento_id, never a second "
        "appointment for the same CPF and time."
    ),
)
def agendamentos(context: AssetExecutionContext, detran_db: DatabaseResource) -> MaterializeResult:
    day, usuario_id = split_partition(context.partition_key)
    started = time.monotonic()
    result = create_appointments(detran_db.db, usuario_id, day)
    if result.removed_with_appointment:
        context.log.warning(
            f"{result.removed_with_appointment} slot(s) with an appointment were removed from "
            "the portal: check those appointments"
        )
    return MaterializeResult(
        metadata={
            "created": MetadataValue.int(result.created),
            "linked_existing": MetadataValue.int(result.linked_existing),
            "already_linked": MetadataValue.int(result.already_linked),
            "without_cpf": MetadataValue.int(result.without_cpf),
            "removed_with_appointment": MetadataValue.int(result.removed_with_appointment),
            "duration_seconds": MetadataValue.float(round(time.monotonic() - started, 3)),
        }
    )


def _examiner_tag(key: str) -> dict[str, str]:
    return {"examiner": str(split_partition(key)[1])}


detran_agenda_job = define_asset_job(
    "detran_agenda_sync",
    selection=[agenda_slots, agendamentos],
    description="One examiner's day: portal → agenda_slots → agendamentos.",
    # Every run of this job (schedules, UI launches, backfills) carries examiner=<id>, which
    # dagster.yaml limits to one run at a time per examiner.
    config=PartitionedConfig(
        partitions_def=agenda_partitions,
        run_config_for_partition_key_fn=lambda key: {},
        tags_for_partition_key_fn=_examiner_tag,
    ),
)


@sensor(
    name="detran_examiners_sensor",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Adds every active examiner of detran_examiners as a partition.",
)
def detran_examiners_sensor(context: SensorEvaluationContext, detran_db: DatabaseResource):
    wanted = [e.partition_key for e in list_examiners(detran_db.db)]
    existing = set(context.instance.get_dynamic_partitions(EXAMINERS_PARTITIONS))
    new = [k for k in wanted if k not in existing]
    if not new:
        return SkipReason(f"{len(wanted)} active examiner(s), all already partitions")
    context.log.info(f"adding examiner partition(s): {', '.join(new)}")
    return SensorResult(dynamic_partitions_requests=[examiner_partitions.build_add_request(new)])


def window_run_requests(
    context: ScheduleEvaluationContext, db, first_offset: int, last_offset: int
) -> list[RunRequest] | SkipReason:
    """One run per auto-sync examiner × work day in [today+first, today+last]."""
    when = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    today = when.astimezone(ZoneInfo(TZ)).date()
    registered = set(context.instance.get_dynamic_partitions(EXAMINERS_PARTITIONS))
    requests = []
    for examiner in list_examiners(db):
        if not examiner.auto_sync or examiner.partition_key not in registered:
            continue
        for offset in range(first_offset, last_offset + 1):
            day = today + dt.timedelta(days=offset)
            if not examiner.works_on(day):
                continue
            key = partition_key(day, examiner.usuario_id)
            requests.append(
                RunRequest(
                    run_key=f"{key}@{when.isoformat()}",
                    partition_key=key,
                    tags={"examiner": examiner.partition_key},
                )
            )
    if not requests:
        return SkipReason("no examiner with auto-sync works on these days (or none registered)")
    return requests


@schedule(
    name="detran_next_3_days",
    cron_schedule="*/15 * * * *",
    execution_timezone=TZ,
    job=detran_agenda_job,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Today and the next 2 days of every examiner with auto-sync, every 15 minutes.",
)
def detran_next_3_days(context: ScheduleEvaluationContext, detran_db: DatabaseResource):
    return window_run_requests(context, detran_db.db, 0, 2)


@schedule(
    name="detran_days_4_to_14",
    cron_schedule="0 */2 * * *",
    execution_timezone=TZ,
    job=detran_agenda_job,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Days 4 to 14 of every examiner with auto-sync, every 2 hours.",
)
def detran_days_4_to_14(context: ScheduleEvaluationContext, detran_db: DatabaseResource):
    return window_run_requests(context, detran_db.db, 3, DAYS_AHEAD - 1)


defs = Definitions(
    assets=[agenda_slots, agendamentos],
    jobs=[detran_agenda_job],
    sensors=[detran_examiners_sensor],
    schedules=[detran_next_3_days, detran_days_4_to_14],
    resources={"detran_portal": DetranPortalResource()},
)
