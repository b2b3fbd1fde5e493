"""HubSoft tickets in Dagster (group ``hubsoft``).

- sensor ``hubsoft_health_monitor`` (every minute; full check every 5 min; state in its
  cursor): records each check, tells the admins on Telegram when HubSoft goes offline or
  comes back (alert ``hubsoft:offline`` in the control database's alert state: each admin is
  told once, and an admin Telegram did not reach is retried on the next tick), and on
  coming back requests the recovery run at once.
- job ``sync_tickets`` (the bot's ``/sync_tickets [offline|status|all]``), config ``mode``
  (default ``all``): one op materializing ``hubsoft/offline_ticket_recovery`` (offline tickets
  created in HubSoft exactly once) and/or ``hubsoft/ticket_status_sync`` (active tickets'
  statuses). Schedules: recovery every 30 min, status every 15 min, both skipped with a
  reason while HubSoft is known to be offline.
- asset ``hubsoft/health_report`` (the bot's ``/health_hubsoft``) with its checks.
``HUBSOFT_ENABLED=false`` turns it all off: the sensor and schedules skip saying so, runs
refuse with a clear message.
"""

import datetime as dt
from collections.abc import Mapping
from contextlib import contextmanager
from enum import StrEnum

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    AssetSpec,
    Config,
    ConfigurableResource,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    Failure,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    TableColumn,
    TableMetadataValue,
    TableRecord,
    TableSchema,
    asset,
    define_asset_job,
    multi_asset,
    schedule,
    sensor,
)
from pydantic import Field

from ..catalog import NO_FAILED_TICKETS, SUPPORT_TICKETS, table_materializations
from ..lib.alerts import EVERY_ADMIN, AlertState
from ..provenance import run_rows_metadata
from ..resources import DatabaseResource, TelegramResource, env_or
from .client import (
    HubSoftClient,
    HubSoftError,
    HubSoftSettings,
    build_client,
    hubsoft_enabled,
)
from .health import (
    FULL_CHECK_EVERY,
    OFFLINE,
    MonitorState,
    latest_full_check,
    monitor_tick,
    record_check,
    state_from_history,
    transition_message,
)
from .recovery import pending_count, record_run, recover_offline_tickets
from .report import build_report
from .status import sync_statuses

TZ = "America/Sao_Paulo"
DISABLED = (
    "HubSoft integration is disabled (HUBSOFT_ENABLED=false): nothing is sent to or read "
    "from HubSoft. Set HUBSOFT_ENABLED=true in the code location's environment to turn it on."
)
RECOVERY_KEY = AssetKey(["hubsoft", "offline_ticket_recovery"])
STATUS_KEY = AssetKey(["hubsoft", "ticket_status_sync"])
# The tables whose rows carry the run that last changed them (sync_run_id).
HUBSOFT_TABLES = ("support_tickets", "hubsoft_protocol_map", "hubsoft_sync_runs")
# A health verdict older than this no longer stops the schedules: the run checks itself.
STALE_HEALTH = dt.timedelta(minutes=15)
# The outage alert in the control database's alert_state: raised = offline, resolved = back.
OFFLINE_ALERT = "hubsoft:offline"

# Every HubSoft step shares the hubsoft_api pool (limit 1): recovery, status sync and the
# report never race each other on the API.
HUBSOFT_ASSET = {"group_name": "hubsoft", "pool": "hubsoft_api"}
OWNERSHIP = {"owners": ["team:data-platform"], "tags": {"source": "hubsoft"}}


class SyncMode(StrEnum):
    offline = "offline"
    status = "status"
    all = "all"


class SyncTicketsConfig(Config):
    mode: SyncMode = Field(
        default=SyncMode.all,
        description="offline: recover tickets created while HubSoft was down; status: update "
        "active tickets' statuses; all: both.",
    )


class HubSoftResource(ConfigurableResource):
    """The HubSoft API of the support bot. Set in ``Definitions`` from HUBSOFT_ENABLED,
    HUBSOFT_API_URL, HUBSOFT_CLIENT_ID, HUBSOFT_CLIENT_SECRET, HUBSOFT_USERNAME and
    HUBSOFT_PASSWORD (``EnvVar``: the UI shows the names). With HUBSOFT_ENABLED=false nothing
    else is needed; enabled, a missing variable fails the run (or skips the sensor) naming it.
    """

    enabled: str = Field(default="true", description="HUBSOFT_ENABLED: false turns HubSoft off.")
    api_url: str | None = Field(default=None, description="HUBSOFT_API_URL.")
    client_id: str | None = Field(default=None, description="HUBSOFT_CLIENT_ID.")
    client_secret: str | None = Field(default=None, description="HUBSOFT_CLIENT_SECRET (secret).")
    username: str | None = Field(default=None, description="HUBSOFT_USERNAME.")
    password: str | None = Field(default=None, description="HUBSOFT_PASSWORD (secret).")

    @classmethod
    def from_env_vars(cls, env: Mapping[str, str] | None = None) -> "HubSoftResource":
        return cls(
            enabled=env_or("HUBSOFT_ENABLED", "true", env),
            **{field: env_or(var, None, env) for field, var in _VARIABLES.items()},
        )

    @property
    def is_enabled(self) -> bool:
        return hubsoft_enabled(self.enabled)

    def settings(self) -> HubSoftSettings:
        """Raises HubSoftConfigError naming every missing variable."""
        return HubSoftSettings.from_variables(
            {var: getattr(self, field) or "" for field, var in _VARIABLES.items()}
        )


_VARIABLES = {
    "api_url": "HUBSOFT_API_URL",
    "client_id": "HUBSOFT_CLIENT_ID",
    "client_secret": "HUBSOFT_CLIENT_SECRET",
    "username": "HUBSOFT_USERNAME",
    "password": "HUBSOFT_PASSWORD",
}


def _refuse_if_disabled(hubsoft: HubSoftResource) -> None:
    if not hubsoft.is_enabled:
        raise Failure(description=DISABLED)


@contextmanager
def _client(hubsoft: HubSoftResource, **kwargs):
    try:
        client = build_client(hubsoft.settings(), **kwargs)
    except HubSoftError as exc:
        raise Failure(description=str(exc)) from None
    try:
        yield client
    finally:
        client.close()


def _numeric(values: dict) -> dict:
    return {
        k: MetadataValue.float(v) if isinstance(v, float) else MetadataValue.int(v)
        for k, v in values.items()
    }


@multi_asset(
    name="hubsoft_ticket_sync",
    specs=[
        AssetSpec(
            RECOVERY_KEY,
            skippable=True,
            kinds={"api", "postgres"},
            **OWNERSHIP,
            description=(
                "support_tickets saved while HubSoft was down (LOC protocols), opened in HubSoft "
                "exactly once and linked both ways (hubsoft_atendimento_id/hubsoft_protocol, "
                "hubsoft_protocol_map, the local protocol in HubSoft's descricao and "
                "parametros), with a history message. Failures: sync_status='failed' + backoff."
            ),
        ),
        AssetSpec(
            STATUS_KEY,
            skippable=True,
            kinds={"api", "postgres"},
            **OWNERSHIP,
            description="Active support_tickets take their HubSoft status (status, hubsoft_status, synced_at).",
        ),
    ],
    can_subset=True,
    **HUBSOFT_ASSET,
)
def hubsoft_ticket_sync(
    context: AssetExecutionContext,
    config: SyncTicketsConfig,
    hubsoft_db: DatabaseResource,
    hubsoft: HubSoftResource,
    telegram: TelegramResource,
):
    """The bot's /sync_tickets: recovery and/or status sync, per ``mode`` and the selection."""
    _refuse_if_disabled(hubsoft)
    wanted = {
        SyncMode.offline: {RECOVERY_KEY},
        SyncMode.status: {STATUS_KEY},
        SyncMode.all: {RECOVERY_KEY, STATUS_KEY},
    }[config.mode] & set(context.selected_asset_keys)
    db = hubsoft_db.db
    with _client(hubsoft) as client:
        check = client.health_check()
        record_check(db, check)
        if not check.online:
            now = dt.datetime.now(dt.UTC)
            for key in sorted(wanted, key=str):
                kind = "recovery" if key == RECOVERY_KEY else "status"
                record_run(
                    db,
                    kind,
                    now,
                    "skipped",
                    0,
                    0,
                    f"HubSoft offline: {check.error}",
                    context.run.run_id,
                )
            context.log.warning(
                f"HubSoft is offline ({check.error}); nothing synced. Offline tickets stay "
                "pending and are recovered when it is back (the health sensor starts recovery)."
            )
            return
        if RECOVERY_KEY in wanted:
            yield _recover(context, client, db, telegram)
        if STATUS_KEY in wanted:
            yield _sync_status(context, client, db)
    # The table both steps write, with its row count, on its catalog asset.
    for event in table_materializations(db, [SUPPORT_TICKETS]):
        context.log_event(event)


def _table(columns: tuple[str, ...], rows) -> TableMetadataValue:
    """Rows of text as table metadata (the UI sorts and filters it)."""
    return MetadataValue.table(
        records=[TableRecord(dict(zip(columns, map(str, row), strict=True))) for row in rows],
        schema=TableSchema(columns=[TableColumn(c, "string") for c in columns]),
    )


def _recover(context, client: HubSoftClient, db, telegram: TelegramResource) -> MaterializeResult:
    def progress(done: int, total: int, result) -> None:
        if done % 20 == 0 or done == total:
            context.log.info(
                f"recovery: {done}/{total} tickets, {result.synced} synced, {result.failed} failed"
            )

    result = recover_offline_tickets(client, db, on_ticket=progress, run_id=context.run.run_id)
    if result.skipped_reason:
        context.log.warning(f"recovery skipped: {result.skipped_reason}")
    metadata = _numeric(result.metadata())
    metadata["still_unsynced"] = MetadataValue.int(pending_count(db))
    if result.linked or result.failures:
        rows = [(t.local_protocol, t.hubsoft_protocol, t.kind) for t in result.linked[:50]]
        rows += [(p, "failed", reason[:120]) for p, reason in result.failures[:50]]
        metadata["tickets"] = _table(("local_protocol", "hubsoft_protocol", "how"), rows)
        outcome = telegram.notify_admins(result.summary(), context.log)
        metadata["admins_notified"] = MetadataValue.int(outcome.sent)
    if result.stopped_reason:
        metadata["stopped_reason"] = MetadataValue.text(result.stopped_reason)
    context.log.info(
        f"recovery: {result.created} created, {result.adopted} adopted, {result.failed} failed "
        f"of {result.candidates} candidates"
    )
    metadata |= run_rows_metadata(db, context.run.run_id, HUBSOFT_TABLES)
    return MaterializeResult(asset_key=RECOVERY_KEY, metadata=metadata)


def _sync_status(context, client: HubSoftClient, db) -> MaterializeResult:
    result = sync_statuses(client, db, run_id=context.run.run_id)
    metadata = _numeric(result.metadata())
    if result.changes:
        metadata["changes"] = _table(("ticket", "before", "now"), result.changes[:50])
    if result.stopped_reason:
        metadata["stopped_reason"] = MetadataValue.text(result.stopped_reason)
    context.log.info(
        f"status sync: {result.checked} active tickets checked, {result.changed} changed"
    )
    metadata |= run_rows_metadata(db, context.run.run_id, HUBSOFT_TABLES)
    return MaterializeResult(asset_key=STATUS_KEY, metadata=metadata)


@asset(
    key=["hubsoft", "health_report"],
    kinds={"api", "postgres"},
    check_specs=[
        AssetCheckSpec(
            "hubsoft_online",
            asset=["hubsoft", "health_report"],
            description="HubSoft answered the health check (token + one authenticated GET).",
        ),
    ],
    description=(
        "The bot's /health_hubsoft: connectivity and latency (token + one authenticated GET), "
        "pending/failed/synced ticket counts, last successful syncs and recommended actions."
    ),
    **HUBSOFT_ASSET,
    **OWNERSHIP,
)
def health_report(
    context: AssetExecutionContext, hubsoft_db: DatabaseResource, hubsoft: HubSoftResource
) -> MaterializeResult:
    _refuse_if_disabled(hubsoft)
    db = hubsoft_db.db
    with _client(hubsoft, for_health=True) as client:
        check = client.health_check()
    record_check(db, check)
    report = build_report(db, check)
    metadata = {
        "online": MetadataValue.bool(report.online),
        "latency_ms": MetadataValue.float(float(check.latency_ms or 0.0)),
        "pending": MetadataValue.int(report.pending),
        "failed": MetadataValue.int(report.failed),
        "synced": MetadataValue.int(report.synced),
        "report": MetadataValue.md(report.markdown()),
    }
    if report.last_recovery:
        metadata["last_successful_recovery"] = MetadataValue.timestamp(report.last_recovery)
    if report.last_status_sync:
        metadata["last_successful_status_sync"] = MetadataValue.timestamp(report.last_status_sync)
    return MaterializeResult(
        metadata=metadata,
        check_results=[
            AssetCheckResult(
                check_name="hubsoft_online",
                passed=report.online,
                metadata={"latency_ms": float(check.latency_ms or 0.0), "error": check.error[:300]},
            ),
        ],
    )


sync_tickets_job = define_asset_job(
    "sync_tickets",
    # The check on support_tickets (operations/checks.py) runs after the syncs that write it.
    selection=AssetSelection.assets(RECOVERY_KEY, STATUS_KEY)
    | AssetSelection.checks(NO_FAILED_TICKETS),
    description="The bot's /sync_tickets: config ops.hubsoft_ticket_sync.config.mode = offline | status | all.",
)
health_report_job = define_asset_job(
    "hubsoft_health_report",
    selection=AssetSelection.assets(health_report) | AssetSelection.checks(NO_FAILED_TICKETS),
)


def _mode_config(mode: str) -> dict:
    return {"ops": {"hubsoft_ticket_sync": {"config": {"mode": mode}}}}


def _schedule_gate(hubsoft_db: DatabaseResource, hubsoft: HubSoftResource, now: dt.datetime) -> str:
    """Why a scheduled sync must not run now ('' = run)."""
    if not hubsoft.is_enabled:
        return DISABLED
    db = hubsoft_db.db
    try:
        last = latest_full_check(db)
    finally:
        db.dispose()
    if last and not last["online"] and now - last["checked_at"] < STALE_HEALTH:
        return (
            f"HubSoft offline at its last check ({last['checked_at']:%H:%M} UTC): skipped; the "
            "health sensor starts recovery as soon as it is back."
        )
    return ""


def _mode_schedule(mode: str, cron: str, name: str, description: str):
    """A schedule that asks for one ``sync_tickets`` mode, skipped while HubSoft is offline."""

    @schedule(
        job=sync_tickets_job,
        cron_schedule=cron,
        execution_timezone=TZ,
        name=name,
        default_status=DefaultScheduleStatus.RUNNING,
        description=description,
    )
    def _mode(
        context: ScheduleEvaluationContext, hubsoft_db: DatabaseResource, hubsoft: HubSoftResource
    ):
        reason = _schedule_gate(hubsoft_db, hubsoft, dt.datetime.now(dt.UTC))
        if reason:
            return SkipReason(reason)
        return RunRequest(run_config=_mode_config(mode), tags={"hubsoft/mode": mode})

    return _mode


recovery_schedule = _mode_schedule(
    "offline",
    "*/30 * * * *",
    "hubsoft_recovery_every_30_min",
    "Every 30 minutes: open in HubSoft the tickets saved while it was down (skipped while "
    "HubSoft is offline or HUBSOFT_ENABLED=false).",
)
status_schedule = _mode_schedule(
    "status",
    "*/15 * * * *",
    "hubsoft_status_sync_every_15_min",
    "Every 15 minutes: active support_tickets take their HubSoft status (skipped while "
    "HubSoft is offline or HUBSOFT_ENABLED=false).",
)


@sensor(
    job=sync_tickets_job,
    name="hubsoft_health_monitor",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Checks HubSoft every minute (full check every "
        f"{int(FULL_CHECK_EVERY.total_seconds() // 60)} min), records each check, notifies the "
        "admins on online/offline transitions and starts recovery when HubSoft comes back."
    ),
)
def hubsoft_health_monitor(
    context: SensorEvaluationContext,
    hubsoft_db: DatabaseResource,
    control_db: DatabaseResource,
    hubsoft: HubSoftResource,
    telegram: TelegramResource,
):
    if not hubsoft.is_enabled:
        return SkipReason(DISABLED)
    try:
        client = build_client(hubsoft.settings(), for_health=True)
    except HubSoftError as exc:
        return SkipReason(str(exc))
    db = hubsoft_db.db
    try:
        previous = MonitorState.from_cursor(context.cursor) or state_from_history(db)
        now = dt.datetime.now(dt.UTC)
        outcome = monitor_tick(client, db, previous, now)
        _announce_health(context, outcome, db, control_db, telegram, now)
        runs = []
        if outcome.transition:
            context.log.info(f"HubSoft is now {outcome.transition}")
            if outcome.transition != OFFLINE:
                runs.append(
                    RunRequest(
                        run_key=f"hubsoft-back-online-{now:%Y%m%dT%H%M%S}",
                        run_config=_mode_config("offline"),
                        tags={"hubsoft/mode": "offline", "hubsoft/trigger": "back_online"},
                    )
                )
    finally:
        client.close()
        db.dispose()
    cursor = outcome.state.to_cursor()
    if runs:
        return SensorResult(run_requests=runs, cursor=cursor)
    latency = f", {outcome.check.latency_ms:.0f} ms" if outcome.check.latency_ms is not None else ""
    return SensorResult(
        skip_reason=f"HubSoft {outcome.state.state} ({outcome.check.kind} check{latency}); no transition",
        cursor=cursor,
    )


def _announce_health(
    context, outcome, db, control_db: DatabaseResource, telegram: TelegramResource, now
) -> None:
    """The outage alert: the transition and its message are committed together, then every
    pending delivery of a HubSoft alert is sent (an admin not reached last tick is now)."""
    alerts = AlertState(control_db.db)
    channel = telegram.client()  # None when Telegram is not configured
    offline = not outcome.check.online
    alerts.transition_with_message(
        OFFLINE_ALERT,
        offline,
        message=lambda change: transition_message(
            outcome, pending_count(db), offline=change == "raised"
        ),
        recipients=channel.admin_chat_ids if channel is not None else [EVERY_ADMIN],
        details={"error": outcome.check.error[:300]} if offline else None,
        now=now,
    )
    if channel is None:
        report = alerts.deliver_pending(
            lambda text: telegram.notify_admins(text, context.log), key=OFFLINE_ALERT, now=now
        )
    else:
        with channel:
            report = alerts.deliver_pending(channel, key=OFFLINE_ALERT, now=now)
    if report.delivered or report.errors:
        context.log.info(
            f"HubSoft alert deliveries: {report.delivered} sent, {report.failed} to retry, "
            f"{report.gave_up} given up"
            + (f" ({'; '.join(report.errors[:3])})" if report.errors else "")
        )


defs = Definitions(
    assets=[hubsoft_ticket_sync, health_report],
    jobs=[sync_tickets_job, health_report_job],
    schedules=[recovery_schedule, status_schedule],
    sensors=[hubsoft_health_monitor],
)
