"""The Dagster layer of the local tenant sync: one dynamic partition per tenant instance.

- ``local_sync/wpp_contacts``, ``local_sync/wpp_contact_sectors``, ``local_sync/wpp_chats``:
  one multi-asset step per tenant (one connection pool to that tenant, opened and disposed in
  the step), incremental by default, a full reconcile with ``full_reconcile: true``.
- ``local_sync_new_tenants`` (sensor): adds every instance of the main database whose tenant
  database is configured and reachable as a partition and requests its first (full) sync;
  the others are named in the tick's skip reason and log.
- ``local_sync_changed_tenants`` (sensor, every 30 s): one grouped query a table over the
  main database's rows changed since its cursor (``changes.py``); an incremental run for each
  tenant that changed, none when nothing did.
- ``local_sync_every_6_hours`` (schedule): a full reconcile of every tenant partition; it
  repairs what the change sensor cannot see (sector links, hard deletes, late commits).
All start RUNNING: the point of this sync is that every tenant stays in step without anyone
wiring a cron (the system it replaces synced a tenant on every change), and new tenants
appear over time (the new-tenant sensor is what makes them partitions).
Every run of ``local_sync_job`` carries ``local_sync/tenant=<instance>``, which dagster.yaml
limits to one run at a time per tenant (the advisory lock is the second guard).
"""

import datetime as dt
from collections.abc import Iterator
from zoneinfo import ZoneInfo

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    AssetSpec,
    Config,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    PartitionedConfig,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    multi_asset,
    schedule,
    sensor,
)
from pydantic import Field

from ..catalog import row_count
from ..lib.locks import AdvisoryLock
from ..resources import DatabaseResource, TenantDatabasesResource
from . import changes, source
from .sync import TABLES, SyncSettings, TableResult, sync_tenant
from .tenants import TenantDirectory, scan_tenants

GROUP = "local_sync"
tenant_partitions = DynamicPartitionsDefinition(name="local_sync_tenants")

DESCRIPTIONS = {
    "wpp_contacts": (
        "The instance's contacts in its own tenant database (soft-deleted ones kept with "
        "is_deleted=1). Text the tenant's charset cannot hold is stored with the closest "
        "characters and counted (text_replaced_rows)."
    ),
    "wpp_contact_sectors": (
        "The instance's contact-sector links, kept as exactly the main database's set: "
        "removed links deleted and new ones inserted in one transaction."
    ),
    "wpp_chats": (
        "The instance's chats, DATETIMEs in LOCAL_SYNC_TIMEZONE. Works with the current "
        "wpp_chats (id = main id) and the older shape (AUTO_INCREMENT id + original_id)."
    ),
}
SPECS = [
    AssetSpec(
        key=AssetKey([GROUP, table]),
        group_name=GROUP,
        description=DESCRIPTIONS[table],
        kinds={"mysql"},
        partitions_def=tenant_partitions,
        deps=[] if table == "wpp_contacts" else [AssetKey([GROUP, "wpp_contacts"])],
        owners=["team:data-platform"],
    )
    for table in TABLES
]
FULL_RECONCILE = {"ops": {"local_sync_tenant": {"config": {"full_reconcile": True}}}}
TENANT_TAG = "local_sync/tenant"
MODE_TAG = "local_sync/mode"


class LocalSyncConfig(Config):
    full_reconcile: bool = Field(
        default=False,
        description=(
            "Compare every source row with the tenant (finds rows missing or different in the "
            "tenant). Off: only rows changed since the tenant's last successful sync."
        ),
    )


def _metadata(result: TableResult, tenant_rows: int) -> dict:
    data = {
        k: MetadataValue.int(v) if isinstance(v, int) else v for k, v in result.metadata().items()
    }
    data["duration_s"] = MetadataValue.float(result.duration_s)
    # The tenant's table after the sync: the partition's (tenant's) row count.
    data["dagster/row_count"] = MetadataValue.int(tenant_rows)
    return data


def _directory(
    tenant_dbs: TenantDatabasesResource, whatsapp_db: DatabaseResource
) -> TenantDirectory:
    return TenantDirectory(
        whatsapp_db.db,
        template=tenant_dbs.url_template,
        clients_servers_table=tenant_dbs.clients_servers_table,
    )


@multi_asset(
    name="local_sync_tenant",
    specs=SPECS,
    can_subset=True,
    pool="tenant_databases",
    description="One tenant's replica tables, synced from the main WhatsApp database.",
)
def local_sync_tenant(
    context: AssetExecutionContext,
    config: LocalSyncConfig,
    whatsapp_db: DatabaseResource,
    control_db: DatabaseResource,
    tenant_dbs: TenantDatabasesResource,
) -> Iterator[MaterializeResult]:
    instance = context.partition_key
    tables = [t for t in TABLES if AssetKey([GROUP, t]) in context.selected_asset_keys]
    directory = _directory(tenant_dbs, whatsapp_db)
    # Unreachable: fail now with the tenant's name and what to check, not a driver traceback
    # from the middle of the sync. One partition per tenant, so other tenants' runs go on.
    target = directory.probe(instance)
    context.log.info(
        f"{target.describe()}; tables {', '.join(tables)}; "
        f"{'full reconcile' if config.full_reconcile else 'incremental'}"
    )
    tenant_db = target.open()
    try:
        # One sync of a tenant at a time (the schedule and a UI launch may overlap).
        with AdvisoryLock(
            control_db.db, f"local_sync:{instance}", holder_hint="(local sync)"
        ) as lock:
            outcome = sync_tenant(
                whatsapp_db.db,
                tenant_db,
                control_db.db,
                instance,
                tables=tables,
                full=config.full_reconcile,
                settings=SyncSettings(
                    timezone=ZoneInfo(tenant_dbs.timezone),
                    overlap=dt.timedelta(minutes=tenant_dbs.overlap_minutes),
                ),
                before_write=lock.ensure_held,
                on_table=lambda r: context.log.info(
                    f"{r.table}: {r.source_rows} source rows, {r.upsert.inserted} inserted, "
                    f"{r.upsert.updated} updated, {r.deleted} deleted ({r.mode}, {r.duration_s:.1f}s)"
                ),
            )
        tenant_rows = {table: row_count(tenant_db, table) for table in tables}
    finally:
        tenant_db.dispose()
    if outcome.migrations_applied:
        context.log.info(f"tenant tables created: {', '.join(outcome.migrations_applied)}")
    for table in tables:
        yield MaterializeResult(
            asset_key=AssetKey([GROUP, table]),
            metadata=_metadata(outcome.tables[table], tenant_rows[table]),
        )


def _tenant_tag(key: str) -> dict[str, str]:
    return {TENANT_TAG: key}


local_sync_job = define_asset_job(
    "local_sync_job",
    selection=AssetSelection.groups(GROUP),
    description="Sync one tenant's contacts, contact sectors and chats.",
    # Every run of the job (sensors, schedule, UI launches, backfills) carries
    # local_sync/tenant=<instance>: dagster.yaml runs one at a time per tenant, the others queue.
    config=PartitionedConfig(
        partitions_def=tenant_partitions,
        run_config_for_partition_key_fn=lambda key: {},
        tags_for_partition_key_fn=_tenant_tag,
    ),
)


@schedule(
    job=local_sync_job,
    cron_schedule="0 */6 * * *",
    execution_timezone="America/Sao_Paulo",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Full reconcile of every tenant every 6 hours (repairs any drift).",
)
def local_sync_every_6_hours(context: ScheduleEvaluationContext):
    tenants = context.instance.get_dynamic_partitions(tenant_partitions.name)
    if not tenants:
        return SkipReason("no tenant partitions yet (the local_sync_new_tenants sensor adds them)")
    stamp = context.scheduled_execution_time.isoformat()
    return [
        RunRequest(
            run_key=f"{tenant}:{stamp}",
            partition_key=tenant,
            run_config=FULL_RECONCILE,
            tags={MODE_TAG: "full", **_tenant_tag(tenant)},
        )
        for tenant in sorted(tenants)
    ]


@sensor(
    job=local_sync_job,
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Adds each instance of the main database with a reachable tenant database as a "
        "partition and syncs it; reports instances without one."
    ),
)
def local_sync_new_tenants(
    context: SensorEvaluationContext,
    whatsapp_db: DatabaseResource,
    tenant_dbs: TenantDatabasesResource,
):
    with whatsapp_db.db.connect() as conn:
        instances = source.list_instances(conn)
    known = set(context.instance.get_dynamic_partitions(tenant_partitions.name))
    scan = scan_tenants(
        _directory(tenant_dbs, whatsapp_db), [i for i in instances if i not in known]
    )
    for instance, why in sorted(scan.unavailable.items()):
        context.log.warning(f"instance {instance!r} has no usable tenant database: {why}")
    unavailable = (
        "; not synced (no usable tenant database): " + ", ".join(sorted(scan.unavailable))
        if scan.unavailable
        else ""
    )
    if not scan.ready:
        return SkipReason(f"no new tenant among {len(instances)} instance(s){unavailable}")
    return SensorResult(
        run_requests=[
            RunRequest(
                partition_key=i,
                run_config=FULL_RECONCILE,
                tags={MODE_TAG: "full", **_tenant_tag(i)},
            )
            for i in scan.ready
        ],
        dynamic_partitions_requests=[tenant_partitions.build_add_request(scan.ready)],
    )


# Runs not yet started: they will read every change committed before they start.
PENDING = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED]
CHANGE_INTERVAL_S = 30


def _pending_tenants(context: SensorEvaluationContext) -> set[str]:
    """Tenants with a run of the whole job waiting to start (a change needs no second one)."""
    runs = context.instance.get_runs(
        filters=RunsFilter(job_name=local_sync_job.name, statuses=PENDING)
    )
    every_table = {spec.key for spec in SPECS}
    return {
        r.tags[TENANT_TAG]
        for r in runs
        if TENANT_TAG in r.tags and (r.asset_selection is None or every_table <= r.asset_selection)
    }


@sensor(
    job=local_sync_job,
    minimum_interval_seconds=CHANGE_INTERVAL_S,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Every 30 s, one grouped query per table (contacts, chats) finds the instances whose "
        "rows changed in the main database since the cursor (updated_at, created_at, chats' "
        "started_at/finished_at) and launches an incremental sync of those tenants only; a "
        "tenant with a sync still queued gets none. A change is in its tenant within about a "
        "minute. It cannot see sector links (no timestamp), rows deleted at the source or a "
        "commit landing more than LOCAL_SYNC_OVERLAP_MINUTES after its timestamp: the "
        "6-hourly full reconcile repairs those."
    ),
)
def local_sync_changed_tenants(
    context: SensorEvaluationContext,
    whatsapp_db: DatabaseResource,
    tenant_dbs: TenantDatabasesResource,
):
    previous = changes.load_state(context.cursor)
    with whatsapp_db.db.connect() as conn:
        seen = changes.look(
            conn,
            previous,
            overlap=dt.timedelta(minutes=tenant_dbs.overlap_minutes),
            now=dt.datetime.now(dt.UTC),
        )
    cursor = changes.dump_state(seen.state)
    if seen.first:
        return SensorResult(
            skip_reason="first look: the main database's state is the baseline from now on",
            cursor=cursor,
        )
    known = set(context.instance.get_dynamic_partitions(tenant_partitions.name))
    changed = {i: digest for i, digest in seen.changed.items() if i in known}
    unknown = sorted(set(seen.changed) - known)
    if unknown:
        context.log.info(
            f"changed instance(s) with no tenant partition (local_sync_new_tenants adds "
            f"them): {', '.join(unknown)}"
        )
    pending = _pending_tenants(context) & set(changed)
    if pending:
        context.log.info(f"already queued, no second run: {', '.join(sorted(pending))}")
    requests = [
        RunRequest(
            # The same state seen twice (a tick retried before its cursor was saved) gives
            # the same key: Dagster launches it once.
            run_key=f"changed:{instance}:{digest}",
            partition_key=instance,
            tags={MODE_TAG: "incremental", "local_sync/trigger": "change", **_tenant_tag(instance)},
        )
        for instance, digest in sorted(changed.items())
        if instance not in pending
    ]
    if not requests:
        why = f"no tenant changed ({seen.window_rows} row(s) in the window)"
        if pending:
            why = f"changed tenant(s) already have a queued sync: {', '.join(sorted(pending))}"
        return SensorResult(skip_reason=why, cursor=cursor)
    return SensorResult(run_requests=requests, cursor=cursor)


defs = Definitions(
    assets=[local_sync_tenant],
    jobs=[local_sync_job],
    schedules=[local_sync_every_6_hours],
    sensors=[local_sync_new_tenants, local_sync_changed_tenants],
)
