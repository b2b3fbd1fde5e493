"""The DETRAN assets: ``detran/agenda_slots`` (portal → agenda_slots, with its checks) and
``detran/agendamentos`` (available slots → the clinic's appointments)."""

import datetime as dt
import time

from dagster import (
    AssetExecutionContext,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableMetadataValue,
    TableRecord,
    TableSchema,
    asset,
)

from ...lib.locks import LockNotAvailable
from ...lib.redact import mask_cpf
from ...provenance import run_rows_metadata
from ...resources import DatabaseResource, TelegramResource
from ..appointments import create_appointments
from ..client import PortalClient
from ..examiners import ExaminerNotFound, get_examiner
from ..sync import SyncResult, describe_examiner, sync_examiner
from .checks import AGENDA_CHECKS, guard_checks
from .partition_ranges import DETRAN_TABLES, examiner_days, sync_partition_range
from .partitions import agenda_partitions, split_partition
from .resources import DetranPortalResource


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


PREVIEW_SCHEMA = TableSchema(
    columns=[
        TableColumn("hora", "time"),
        TableColumn("status", "string"),
        TableColumn("cpf", "string", description="masked"),
        TableColumn("categoria", "string"),
        TableColumn("processo", "string"),
    ]
)


def _preview(db, usuario_id: int, day: dt.date) -> TableMetadataValue:
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
    records = [
        TableRecord(
            {
                "hora": f"{r.hora:%H:%M}",
                "status": r.status,
                "cpf": mask_cpf(r.cpf) if r.cpf else "-",
                "categoria": r.categoria or "-",
                "processo": r.tipo or "-",
            }
        )
        for r in rows
    ]
    return MetadataValue.table(records=records, schema=PREVIEW_SCHEMA)


def _partition_rows(db, table: str, usuario_id: int, day: dt.date) -> int:
    """Rows of one examiner's day in ``table``: the partition's ``dagster/row_count``."""
    import sqlalchemy as sa

    with db.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    f"SELECT count(*) FROM {db.table(table)} WHERE usuario_id = :u AND data = :d"
                ),
                {"u": usuario_id, "d": day},
            ).scalar_one()
        )


@asset(
    key=["detran", "agenda_slots"],
    partitions_def=agenda_partitions,
    group_name="detran",
    pool="detran_portal",
    kinds={"postgres", "html"},
    owners=["team:data-platform"],
    check_specs=AGENDA_CHECKS,
    # A run over a range of partitions (the schedules' all-examiner run) reports its
    # materializations partition by partition (partition_ranges.py): the step yields no
    # output then, so the asset must not require one. No BackfillPolicy.single_run(): Dagster
    # refuses it beside detran_agenda_sync's PartitionedConfig, which gives a UI re-sync its
    # examiner=<id> tag; a UI backfill stays one run per partition, as before.
    output_required=False,
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
    telegram: TelegramResource,
    control_db: DatabaseResource,
):
    if context.has_partition_key_range:
        yield from sync_partition_range(context, detran_db, detran_portal, telegram, control_db)
        return
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
            sessions=detran_portal.session_cache(db),
            options=detran_portal.run_options(context.run.run_id),
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
    yield from guard_checks(context, db, result, telegram, control_db, detran_portal)
    if result.status == "failed":
        raise Failure(
            description=f"{day.isoformat()} of examiner {usuario_id} was not synced: {result.error}"
            " (nothing was marked removed; see agenda_sync_runs.error_details)",
            metadata=metadata,
            allow_retries=False,
        )
    if result.status == "partial":
        context.log.warning(f"partial sync: {result.error}")
    metadata["preview"] = _preview(db, usuario_id, day)
    metadata["dagster/row_count"] = MetadataValue.int(
        _partition_rows(db, "agenda_slots", usuario_id, day)
    )
    metadata |= run_rows_metadata(db, context.run.run_id, DETRAN_TABLES)
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
    if context.has_partition_key_range:
        # Runs only when selected without agenda_slots (a range of agenda_slots makes the
        # appointments of each day it synced itself): every day of the range, as asked.
        made = [
            create_appointments(detran_db.db, usuario_id, day, context.run.run_id)
            for usuario_id, days in examiner_days(context.partition_keys).items()
            for day in days
        ]
        return MaterializeResult(
            metadata={
                "partitions": MetadataValue.int(len(made)),
                "created": MetadataValue.int(sum(m.created for m in made)),
            }
        )
    day, usuario_id = split_partition(context.partition_key)
    started = time.monotonic()
    result = create_appointments(detran_db.db, usuario_id, day, context.run.run_id)
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
            "corrected_from_portal": MetadataValue.int(result.corrected),
            "kept_local_edits": MetadataValue.int(result.kept_local_edits),
            "duration_seconds": MetadataValue.float(round(time.monotonic() - started, 3)),
            "dagster/row_count": MetadataValue.int(
                _partition_rows(detran_db.db, "agendamentos", usuario_id, day)
            ),
        }
        # The appointments are the clinic's table: the slots linked to them carry the run.
        | run_rows_metadata(detran_db.db, context.run.run_id, ["agenda_slots"])
    )
