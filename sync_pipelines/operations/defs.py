"""Operations: the databases' schema, operator checks and run-failure alerts.

Materializing ``database_schema`` is the UI's way to run ``sync-pipelines migrate``: it
applies every pending file of every role and shows what was applied where. The checks
(checks.py) and the Telegram alert sensor (alerts.py) are cross-source, so they live here.
"""

from dagster import (
    AssetExecutionContext,
    Definitions,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from ..lib.db import ROLES, DatabaseConfigError
from ..lib.migrations import migrate, migration_roles
from .alerts import run_failure_telegram_alert
from .checks import OPERATOR_CHECKS, table_checks_job

MIGRATIONS_SCHEMA = TableSchema(
    columns=[
        TableColumn("role", "string"),
        TableColumn("schema", "string"),
        TableColumn("applied_now", "int"),
        TableColumn("total", "int"),
        TableColumn("files_applied_now", "string"),
    ]
)


@asset(
    group_name="operations",
    pool="migrations",
    kinds={"postgres", "sql"},
    owners=["team:data-platform"],
    # Each role's database is its <role>_db resource (EnvVar-configured in definitions.py).
    required_resource_keys={f"{role}_db" for role in ROLES},
    description=(
        "Every table the syncs own, created and evolved by the versioned files in sql/<role>/. "
        "Materialize to apply pending migrations to every configured role database."
    ),
)
def database_schema(context: AssetExecutionContext) -> MaterializeResult:
    rows = []
    applied_total = 0
    skipped = []
    for role in migration_roles():
        if role not in ROLES:
            continue  # per-tenant DDL (local sync) is applied by that sync for each tenant
        try:
            db = getattr(context.resources, f"{role}_db").db
        except DatabaseConfigError as exc:
            skipped.append(role)
            context.log.warning(str(exc))
            continue
        try:
            report = migrate(db, role)
        finally:
            db.dispose()
        applied_total += len(report.applied)
        context.log.info(
            f"{db.describe()}: applied {len(report.applied)}, already applied {len(report.already_applied)}"
        )
        rows.append(
            TableRecord(
                {
                    "role": role,
                    "schema": db.schema or "-",
                    "applied_now": len(report.applied),
                    "total": len(report.applied) + len(report.already_applied),
                    "files_applied_now": ", ".join(report.applied) or "-",
                }
            )
        )
    return MaterializeResult(
        metadata={
            "migrations_applied": MetadataValue.int(applied_total),
            "roles_migrated": MetadataValue.int(len(rows)),
            "roles_not_configured": MetadataValue.text(", ".join(skipped) or "none"),
            "migrations": MetadataValue.table(records=rows, schema=MIGRATIONS_SCHEMA),
        }
    )


defs = Definitions(
    assets=[database_schema],
    asset_checks=OPERATOR_CHECKS,
    jobs=[table_checks_job],
    sensors=[run_failure_telegram_alert],
)
