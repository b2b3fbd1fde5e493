"""Asset checks operators look at every day, on tables whose shape is a published contract.

- ``tiny/service_orders_incremental: no_duplicate_order_numbers``: one Tiny order number must
  map to one order id in ``ordens_servico``; two ids with one number mean an order was
  re-created in Tiny or imported twice, and reports count it twice.
- ``gestao_scouter/leads_export: no_export_errors_last_24h``: leads PostgREST refused in the
  last 24 hours (``gestao_scouter_export_errors``), by HTTP status; the rows say why.

Both warn instead of failing the run: the data is still usable, a person has to look. The
metadata holds counts only (numbers plot over time in the UI), never a lead's or a
customer's values.
"""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    MetadataValue,
    asset_check,
)

from ..resources import DatabaseResource

TINY_INCREMENTAL = AssetKey(["tiny", "service_orders_incremental"])
SCOUTER_EXPORT = AssetKey(["gestao_scouter", "leads_export"])


@asset_check(
    asset=TINY_INCREMENTAL,
    name="no_duplicate_order_numbers",
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
    asset=SCOUTER_EXPORT,
    name="no_export_errors_last_24h",
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
    table = "| HTTP status | errors |\n|---|---:|\n" + "\n".join(
        f"| {status} | {n} |" for status, n in by_status
    )
    return AssetCheckResult(
        passed=total == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "errors_last_24h": MetadataValue.int(int(total)),
            "by_status": MetadataValue.md(table if by_status else "none"),
            "how_to_look": MetadataValue.text(
                "SELECT export_date, lead_id, error_message, response_status FROM "
                "gestao_scouter_export_errors WHERE created_at > now() - interval '24 hours' "
                "ORDER BY created_at DESC"
            ),
        },
    )


OPERATOR_CHECKS = [no_duplicate_order_numbers, no_export_errors_last_24h]
