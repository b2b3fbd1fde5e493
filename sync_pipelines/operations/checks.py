"""Asset checks operators look at every day, each on the table it judges.

- ``tiny/ordens_servico: no_duplicate_order_numbers``: one Tiny order number must map to one
  order id; two ids with one number mean an order was re-created in Tiny or imported twice,
  and reports count it twice.
- ``tiny/import_failures: no_failures_awaiting_manual_review``: orders that failed every
  retry wait for a person.
- ``hubsoft/support_tickets: no_failed_tickets``: tickets HubSoft refused, retried with
  backoff.
- ``gestao_scouter/export_errors: no_export_errors_last_24h``: leads PostgREST refused in the
  last 24 hours, by HTTP status; the rows say why.

The job that writes a table selects its checks (their keys live in ``catalog.py``) and
``additional_deps`` orders each check after the sync that writes its table, so it judges the
table as that run left it; the ``table_checks`` job runs them all on demand.
All warn instead of failing the run: the data is still usable, a person has to look. The
metadata holds counts only (numbers plot over time in the UI), never a lead's or a
customer's values.
"""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset_check,
    define_asset_job,
)

from ..catalog import (
    NO_DUPLICATE_ORDER_NUMBERS,
    NO_EXPORT_ERRORS_LAST_24H,
    NO_FAILED_TICKETS,
    NO_FAILURES_AWAITING_REVIEW,
)
from ..resources import DatabaseResource

TINY_INCREMENTAL = AssetKey(["tiny", "service_orders_incremental"])
TINY_RETRIES = AssetKey(["tiny", "import_failure_retries"])
HUBSOFT_SYNCS = [
    AssetKey(["hubsoft", "offline_ticket_recovery"]),
    AssetKey(["hubsoft", "ticket_status_sync"]),
]
SCOUTER_EXPORT = AssetKey(["gestao_scouter", "leads_export"])
# Mirrors tiny.sync.MAX_ATTEMPTS without importing a source (tested equal).
TINY_MAX_ATTEMPTS = 5


def _count(db, sql: str, **params) -> int:
    import sqlalchemy as sa

    with db.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar_one())


@asset_check(
    asset=NO_DUPLICATE_ORDER_NUMBERS.asset_key,
    name=NO_DUPLICATE_ORDER_NUMBERS.name,
    additional_deps=[TINY_INCREMENTAL],
    description="Each Tiny order number appears on one order id only in ordens_servico.",
)
def no_duplicate_order_numbers(
    context: AssetCheckExecutionContext, tiny_db: DatabaseResource
) -> AssetCheckResult:
    with tiny_db.db.connect() as conn:
        duplicated, extra_rows, total = conn.exec_driver_sql(
            "SELECT count(*), coalesce(sum(n - 1), 0), (SELECT count(*) FROM ordens_servico)"
            " FROM (SELECT numero, count(*) AS n FROM ordens_servico"
            "       WHERE numero IS NOT NULL GROUP BY numero HAVING count(*) > 1) d"
        ).one()
    return AssetCheckResult(
        passed=duplicated == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "duplicated_numbers": MetadataValue.int(int(duplicated)),
            "extra_rows": MetadataValue.int(int(extra_rows)),
            "orders": MetadataValue.int(int(total)),
            "how_to_look": MetadataValue.text(
                "SELECT numero, array_agg(id) FROM ordens_servico WHERE numero IS NOT NULL "
                "GROUP BY numero HAVING count(*) > 1"
            ),
        },
    )


@asset_check(
    asset=NO_FAILURES_AWAITING_REVIEW.asset_key,
    name=NO_FAILURES_AWAITING_REVIEW.name,
    additional_deps=[TINY_RETRIES],
    description=f"Orders that failed {TINY_MAX_ATTEMPTS} times wait in import_failures for a "
    "person (warns with their count).",
)
def no_failures_awaiting_manual_review(
    context: AssetCheckExecutionContext, tiny_db: DatabaseResource
) -> AssetCheckResult:
    waiting = _count(
        tiny_db.db,
        "SELECT count(*) FROM import_failures WHERE NOT resolvido AND tentativas >= :max",
        max=TINY_MAX_ATTEMPTS,
    )
    return AssetCheckResult(
        passed=waiting == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "awaiting_manual_review": MetadataValue.int(waiting),
            "how_to_fix": MetadataValue.text(
                "SELECT id_ordem, erro, tentativas FROM import_failures WHERE NOT resolvido "
                f"AND tentativas >= {TINY_MAX_ATTEMPTS}; fix the order in Tiny, then UPDATE "
                "import_failures SET tentativas = 0 for it to be retried."
            ),
        },
    )


@asset_check(
    asset=NO_FAILED_TICKETS.asset_key,
    name=NO_FAILED_TICKETS.name,
    additional_deps=HUBSOFT_SYNCS,
    description="Tickets HubSoft refused wait in support_tickets with sync_status='failed' "
    "(retried with backoff; warns with their count).",
)
def no_failed_tickets(
    context: AssetCheckExecutionContext, hubsoft_db: DatabaseResource
) -> AssetCheckResult:
    with hubsoft_db.db.connect() as conn:
        failed, uncertain = conn.exec_driver_sql(
            "SELECT count(*), count(*) FILTER (WHERE hubsoft_atendimento_id IS NULL "
            "AND create_sent_at IS NOT NULL) FROM support_tickets WHERE sync_status = 'failed'"
        ).one()
    return AssetCheckResult(
        passed=failed == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "failed": MetadataValue.int(int(failed)),
            # failed after a lost reply: looked up in HubSoft before any resend
            "uncertain": MetadataValue.int(int(uncertain)),
            "how_to_look": MetadataValue.text(
                "SELECT protocol, sync_error, next_sync_at FROM support_tickets "
                "WHERE sync_status = 'failed'"
            ),
        },
    )


@asset_check(
    asset=NO_EXPORT_ERRORS_LAST_24H.asset_key,
    name=NO_EXPORT_ERRORS_LAST_24H.name,
    additional_deps=[SCOUTER_EXPORT],
    description="No lead was refused by Gestão Scouter in the last 24 hours.",
)
def no_export_errors_last_24h(
    context: AssetCheckExecutionContext, tabuladormax_db: DatabaseResource
) -> AssetCheckResult:
    with tabuladormax_db.db.connect() as conn:
        by_status = conn.exec_driver_sql(
            "SELECT coalesce(response_status::text, 'no response'), count(*)"
            " FROM gestao_scouter_export_errors"
            " WHERE created_at > now() - interval '24 hours' GROUP BY 1 ORDER BY 2 DESC"
        ).all()
    total = sum(n for _, n in by_status)
    return AssetCheckResult(
        passed=total == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "errors_last_24h": MetadataValue.int(int(total)),
            "by_status": MetadataValue.table(
                records=[TableRecord({"http_status": s, "errors": int(n)}) for s, n in by_status],
                schema=TableSchema(
                    columns=[TableColumn("http_status", "string"), TableColumn("errors", "int")]
                ),
            ),
            "how_to_look": MetadataValue.text(
                "SELECT export_date, lead_id, error_message, response_status FROM "
                "gestao_scouter_export_errors WHERE created_at > now() - interval '24 hours' "
                "ORDER BY created_at DESC"
            ),
        },
    )


OPERATOR_CHECKS = [
    no_duplicate_order_numbers,
    no_failures_awaiting_manual_review,
    no_failed_tickets,
    no_export_errors_last_24h,
]

table_checks_job = define_asset_job(
    "table_checks",
    selection=AssetSelection.checks(*OPERATOR_CHECKS),
    description="Every check on the tables the syncs write, without syncing anything. Each "
    "check also runs in the job that writes its table.",
)
