"""Tiny ERP service orders in Dagster (group ``tiny``).

- ``tiny/service_orders_history``: one partition per emission month since 2014-01
  (America/Sao_Paulo); each resumes from its page checkpoint. Backfill months from the UI
  or ``dagster asset materialize … --partition 2019-05-01``; the ``tiny_api`` pool and the
  shared rate limiter let parallel months share the account's budget.
- ``tiny/service_orders_incremental``: every 15 minutes, the recent emission window plus
  every open order, so a change on any open order is seen however old it is.
- ``tiny/import_failure_retries``: every 5 minutes, failed imports whose backoff elapsed.
- ``tiny/integrity_report``: daily, API vs table per status; imports what is missing and
  fixes stale statuses.
- ``tiny/reparse``: the history's months again, from the stored raw JSON with the current
  parser (after a rule change): no Tiny call, no token, works with Tiny down.

Guards (issue 10): every asset stops early when Tiny fails ``TINY_CIRCUIT_BREAKER_FAILURES``
(5) calls in a row; the run fails with the reason and the resume point in the failure's
metadata. A refused token renewal (``invalid_grant``) fails the run and alerts the admins
once, with the re-authorization steps; the next successful Tiny run sends "resolved".
A renewal that lost a race with a worker outside the row lock (``TinyTokenRace``) is not a
lost authorization: the run fails saying a rerun will do, with retries allowed, no alert.
"""

import datetime as dt
from collections.abc import Mapping
from contextlib import contextmanager

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetSelection,
    Config,
    ConfigurableResource,
    DefaultScheduleStatus,
    Definitions,
    Failure,
    MaterializeResult,
    MetadataValue,
    MonthlyPartitionsDefinition,
    ScheduleDefinition,
    TableColumn,
    TableMetadataValue,
    TableRecord,
    TableSchema,
    asset,
    define_asset_job,
)
from pydantic import Field

from ..catalog import (
    NO_DUPLICATE_ORDER_NUMBERS,
    NO_FAILURES_AWAITING_REVIEW,
    TINY_IMPORT_FAILURES,
    TINY_ORDERS,
    TINY_REPARSE,
    TINY_STATUS_HISTORY,
    table_materializations,
)
from ..lib.alerts import AlertState, announce
from ..lib.crypto import CREDENTIALS_KEY_VAR
from ..lib.db import Database
from ..provenance import run_rows_metadata
from ..resources import DatabaseResource, TelegramResource, env_or
from .breaker import DEFAULT_THRESHOLD, THRESHOLD_VAR, CircuitBreaker, CircuitOpen
from .client import (
    TinyClient,
    TinyReauthorizationRequired,
    TinyTokenRace,
    build_client,
    settings_from_variables,
)
from .parse import ALL_STATUSES
from .reparse import reparse_month
from .sync import (
    MAX_ATTEMPTS,
    check_integrity,
    failure_counts,
    retry_failures,
    sync_incremental,
    sync_month,
)

TZ = "America/Sao_Paulo"
STATUS_NAMES = {
    0: "Em Aberto", 1: "Orçada", 2: "Serv. Concluído", 3: "Finalizada",
    4: "Não Aprovada", 5: "Aprovada", 6: "Em Andamento", 7: "Cancelada",
}  # fmt: skip

TINY_TABLES = ("ordens_servico", "ordem_status_history", "import_failures")
monthly = MonthlyPartitionsDefinition(start_date="2014-01-01", timezone=TZ, end_offset=1)


# Resource field -> the variable that sets it (Definitions wire each with EnvVar).
TINY_VARIABLES = {
    "api_base_url": "TINY_API_BASE_URL",
    "token_url": "TINY_TOKEN_URL",
    "client_id": "TINY_CLIENT_ID",
    "client_secret": "TINY_CLIENT_SECRET",
    "redirect_uri": "TINY_REDIRECT_URI",
    "initial_refresh_token": "TINY_INITIAL_REFRESH_TOKEN",
    "account_max_requests_per_minute": "TINY_MAX_REQUESTS_PER_MINUTE",
    "credentials_key": CREDENTIALS_KEY_VAR,
}


class TinyApiResource(ConfigurableResource):
    """The Tiny v3 account, set in ``Definitions`` from the TINY_* variables with ``EnvVar``
    (the UI shows their names, never the client secret or refresh token). Unset credentials
    fail the first Tiny run naming the variables."""

    api_base_url: str | None = Field(
        default=None, description="TINY_API_BASE_URL (default: Tiny's)."
    )
    token_url: str | None = Field(default=None, description="TINY_TOKEN_URL (default: Tiny's).")
    client_id: str | None = Field(default=None, description="TINY_CLIENT_ID.")
    client_secret: str | None = Field(default=None, description="TINY_CLIENT_SECRET (secret).")
    redirect_uri: str | None = Field(default=None, description="TINY_REDIRECT_URI.")
    initial_refresh_token: str | None = Field(
        default=None, description="TINY_INITIAL_REFRESH_TOKEN (secret): bootstraps the tokens once."
    )
    account_max_requests_per_minute: str | None = Field(
        default=None, description="TINY_MAX_REQUESTS_PER_MINUTE: the account's cap (default 60)."
    )
    credentials_key: str | None = Field(
        default=None,
        description=f"{CREDENTIALS_KEY_VAR} (secret): encrypts the stored OAuth tokens.",
    )
    incremental_window_days: int = Field(
        default=7, description="TINY_INCREMENTAL_WINDOW_DAYS: days the incremental sync re-lists."
    )
    circuit_breaker_failures: int = Field(
        default=DEFAULT_THRESHOLD,
        description=f"{THRESHOLD_VAR}: stop a run after this many consecutive failed calls.",
    )
    max_requests_per_minute: int | None = Field(
        default=None,
        description="Lower the account-wide request cap for this run (never raises it).",
    )

    @classmethod
    def from_env_vars(cls, env: Mapping[str, str] | None = None) -> "TinyApiResource":
        return cls(
            **{field: env_or(var, None, env) for field, var in TINY_VARIABLES.items()},
            incremental_window_days=env_or("TINY_INCREMENTAL_WINDOW_DAYS", 7, env),
            circuit_breaker_failures=env_or(THRESHOLD_VAR, DEFAULT_THRESHOLD, env),
        )

    def breaker(self) -> CircuitBreaker:
        """A fresh breaker for one run (its calls share the count)."""
        return CircuitBreaker(self.circuit_breaker_failures)

    def client(self, tiny_db: Database, control_db: Database) -> TinyClient:
        settings = settings_from_variables(
            {var: getattr(self, field) or "" for field, var in TINY_VARIABLES.items()}
        )
        if self.max_requests_per_minute:
            from dataclasses import replace

            settings = replace(
                settings,
                max_requests_per_minute=min(
                    settings.max_requests_per_minute, self.max_requests_per_minute
                ),
            )
        return build_client(settings, tiny_db, control_db)


# What every Tiny asset shares: its group, the API pool (parallel runs share the account's
# budget), kinds for the UI and an owner.
TINY_ASSET = {
    "group_name": "tiny",
    "pool": "tiny_api",
    "kinds": {"api", "postgres"},
    "owners": ["team:data-platform"],
    "tags": {"source": "tiny"},
}


REAUTHORIZATION_ALERT = "tiny:reauthorization_required"


def _reauthorization_alert(
    context,
    telegram: TelegramResource,
    control_db: DatabaseResource,
    needed: bool,
    why: str = "",
):
    """One admin message when the authorization is lost, one when it works again.

    Sent through the project's ``telegram`` resource (which never raises and skips with a
    logged reason when unconfigured); the alert state lives in ``control_db``. An alert
    problem is logged, never raised: it must not hide the run's own outcome.
    """
    try:
        announce(
            AlertState(control_db.db),
            REAUTHORIZATION_ALERT,
            needed,
            raised=lambda: (
                f"🔴 Tiny ERP: the sync stopped, Tiny needs to be authorized again.\n{why}"
            ),
            resolved="✅ Tiny ERP: the authorization works again; the syncs run normally.",
            send=lambda text: telegram.notify_admins(text, context.log),
            details={"reason": why[:500]} if needed else None,
        )
    except Exception as exc:  # noqa: BLE001 - see the docstring
        context.log.warning(f"Tiny alert state not updated: {type(exc).__name__}: {exc}")


@contextmanager
def _client(
    context,
    tiny_api: "TinyApiResource",
    tiny_db: DatabaseResource,
    control_db: DatabaseResource,
    telegram: TelegramResource,
):
    """The Tiny client of one asset, turning the guards' stops into clear run failures."""
    try:
        client = tiny_api.client(tiny_db.db, control_db.db)
        try:
            yield client
        finally:
            client.close()
    except TinyReauthorizationRequired as exc:
        _reauthorization_alert(context, telegram, control_db, True, str(exc))
        raise Failure(description=str(exc), allow_retries=False) from None
    except TinyTokenRace as exc:
        # The authorization is fine (another worker holds the newest pair): let run_retries
        # rerun it, and do not page the admins.
        raise Failure(description=str(exc), allow_retries=True) from None
    except CircuitOpen as stop:
        metadata = {
            "consecutive_errors": MetadataValue.int(stop.failures),
            "last_status": MetadataValue.int(stop.last_status or 0),
            "resume_point": MetadataValue.text(stop.resume_hint),
        }
        if stop.result is not None:
            metadata |= _numeric(stop.result.metadata())
        context.log.error(stop.reason)
        raise Failure(description=stop.reason, metadata=metadata, allow_retries=False) from None
    _reauthorization_alert(context, telegram, control_db, False)


def _status_table(db: Database) -> TableMetadataValue:
    with db.connect() as conn:
        counts = dict(
            conn.exec_driver_sql("SELECT situacao, count(*) FROM ordens_servico GROUP BY 1").all()
        )
    return MetadataValue.table(
        records=[
            TableRecord({"situacao": s, "name": STATUS_NAMES[s], "orders": counts.get(s, 0)})
            for s in ALL_STATUSES
        ],
        schema=TableSchema(
            columns=[
                TableColumn("situacao", "int"),
                TableColumn("name", "string"),
                TableColumn("orders", "int"),
            ]
        ),
    )


def _report_tables(context: AssetExecutionContext, tiny_db: DatabaseResource) -> dict:
    """Row counts of the tables every Tiny asset writes, on their catalog assets; returns the
    asset's provenance metadata (the rows this run wrote and how to list them)."""
    for event in table_materializations(
        tiny_db.db, [TINY_ORDERS, TINY_STATUS_HISTORY, TINY_IMPORT_FAILURES]
    ):
        context.log_event(event)
    return run_rows_metadata(tiny_db.db, context.run.run_id, TINY_TABLES)


def _numeric(values: dict) -> dict:
    return {
        k: MetadataValue.float(v) if isinstance(v, float) else MetadataValue.int(v)
        for k, v in values.items()
    }


@asset(
    key=["tiny", "service_orders_history"],
    partitions_def=monthly,
    **TINY_ASSET,
    description=(
        "Every Tiny service order emitted in the partition's month (America/Sao_Paulo), in "
        "ordens_servico with raw JSON and status history. Resumes from its page checkpoint."
    ),
)
def service_orders_history(
    context: AssetExecutionContext,
    tiny_api: TinyApiResource,
    tiny_db: DatabaseResource,
    control_db: DatabaseResource,
    telegram: TelegramResource,
) -> MaterializeResult:
    month = dt.date.fromisoformat(context.partition_key)

    def progress(result, page):
        context.log.info(
            f"{month:%Y-%m}: page {result.pages}, {page.offset + len(page.items)}/{page.total} orders, "
            f"{result.details_fetched} details fetched"
        )

    with _client(context, tiny_api, tiny_db, control_db, telegram) as client:
        result = sync_month(
            client,
            tiny_db.db,
            month,
            on_page=progress,
            breaker=tiny_api.breaker(),
            run_id=context.run.run_id,
        )
    provenance = _report_tables(context, tiny_db)
    return MaterializeResult(metadata=_numeric(result.metadata()) | provenance)


class IncrementalConfig(Config):
    window_days: int = Field(
        default=0,
        description="Re-list orders emitted in the last N days (open orders are re-listed "
        "whatever their age); 0: TINY_INCREMENTAL_WINDOW_DAYS (7).",
    )


@asset(
    key=["tiny", "service_orders_incremental"],
    **TINY_ASSET,
    description=(
        "Keeps ordens_servico current: re-lists the recent emission window and every order "
        "not in a final state (0,1,2,5,6), recording each status change."
    ),
)
def service_orders_incremental(
    context: AssetExecutionContext,
    config: IncrementalConfig,
    tiny_api: TinyApiResource,
    tiny_db: DatabaseResource,
    control_db: DatabaseResource,
    telegram: TelegramResource,
) -> MaterializeResult:
    with _client(context, tiny_api, tiny_db, control_db, telegram) as client:
        result = sync_incremental(
            client,
            tiny_db.db,
            window_days=config.window_days or tiny_api.incremental_window_days,
            breaker=tiny_api.breaker(),
            run_id=context.run.run_id,
        )
    context.log.info(
        f"incremental: {result.upserted.inserted} new, {result.upserted.updated} updated, "
        f"{result.status_changes} status changes, {result.api_calls} API calls"
    )
    metadata = _numeric(result.metadata())
    metadata["orders_by_status"] = _status_table(tiny_db.db)
    metadata |= _report_tables(context, tiny_db)
    return MaterializeResult(metadata=metadata)


@asset(
    key=["tiny", "import_failure_retries"],
    **TINY_ASSET,
    description=(
        "Retries orders in import_failures whose backoff elapsed (30 s, 2 min, 8 min… up to "
        f"{MAX_ATTEMPTS} attempts); after that they stay for manual review."
    ),
)
def import_failure_retries(
    context: AssetExecutionContext,
    tiny_api: TinyApiResource,
    tiny_db: DatabaseResource,
    control_db: DatabaseResource,
    telegram: TelegramResource,
) -> MaterializeResult:
    with _client(context, tiny_api, tiny_db, control_db, telegram) as client:
        result = retry_failures(
            client, tiny_db.db, breaker=tiny_api.breaker(), run_id=context.run.run_id
        )
    counts = failure_counts(tiny_db.db)
    metadata = _numeric(result.metadata()) | _numeric(
        {f"failures_{k}": v for k, v in counts.items()}
    )
    metadata |= _report_tables(context, tiny_db)
    return MaterializeResult(metadata=metadata)


@asset(
    key=["tiny", "integrity_report"],
    **TINY_ASSET,
    check_specs=[
        AssetCheckSpec(
            "api_and_table_agree",
            asset=["tiny", "integrity_report"],
            description="Per status, ordens_servico holds as many orders as Tiny lists "
            "(after the report imported what was missing and fixed stale statuses).",
        )
    ],
    description=(
        "Daily integrity check: per status 0–7 compares Tiny's ids with ordens_servico, imports "
        "missing orders, fixes stale statuses (with history) and reports the totals."
    ),
)
def integrity_report(
    context: AssetExecutionContext,
    tiny_api: TinyApiResource,
    tiny_db: DatabaseResource,
    control_db: DatabaseResource,
    telegram: TelegramResource,
) -> MaterializeResult:
    with _client(context, tiny_api, tiny_db, control_db, telegram) as client:
        report = check_integrity(
            client, tiny_db.db, breaker=tiny_api.breaker(), run_id=context.run.run_id
        )
    by_status = MetadataValue.table(
        records=[
            TableRecord(
                {
                    "situacao": s,
                    "name": STATUS_NAMES[s],
                    "api": report.api_by_status.get(s, 0),
                    "table": report.db_by_status.get(s, 0),
                }
            )
            for s in ALL_STATUSES
        ],
        schema=TableSchema(
            columns=[
                TableColumn("situacao", "int"),
                TableColumn("name", "string"),
                TableColumn("api", "int"),
                TableColumn("table", "int"),
            ]
        ),
    )
    agree = report.api_by_status == report.db_by_status
    provenance = _report_tables(context, tiny_db)
    return MaterializeResult(
        metadata=provenance
        | {
            "api_total": MetadataValue.int(report.api_total),
            "db_total": MetadataValue.int(report.db_total),
            "recovered": MetadataValue.int(report.recovered),
            "stale_fixed": MetadataValue.int(report.stale_fixed),
            "only_in_db": MetadataValue.int(report.only_in_db),
            "persistent_failures": MetadataValue.int(report.persistent_failures),
            "api_calls": MetadataValue.int(report.sync.api_calls),
            "duration_s": MetadataValue.float(round(report.sync.duration_s, 2)),
            "by_status": by_status,
        },
        check_results=[
            AssetCheckResult(
                check_name="api_and_table_agree",
                passed=agree and report.persistent_failures == 0,
                metadata={
                    "api_total": report.api_total,
                    "db_total": report.db_total,
                    "persistent_failures": report.persistent_failures,
                },
            )
        ],
    )


@asset(
    key=TINY_REPARSE,
    partitions_def=monthly,
    deps=[service_orders_history],
    group_name="tiny",
    # No API pool: it never calls Tiny, so it neither waits for nor slows the API syncs.
    kinds={"postgres"},
    owners=["team:data-platform"],
    tags={"source": "tiny"},
    description=(
        "Re-derives the month's orders in ordens_servico from their stored raw JSON with the "
        "current parser (run it after a parsing rule changed): no Tiny call, writes only the "
        "orders whose values change and stamps parser_version on them; history and failures "
        "are left as they are. Fails naming the orders whose payload the parser cannot read "
        "(their stored values are kept)."
    ),
)
def reparse(context: AssetExecutionContext, tiny_db: DatabaseResource) -> MaterializeResult:
    # Only the database: no Tiny resource, so a reparse needs neither the API nor its token.
    month = dt.date.fromisoformat(context.partition_key)
    result = reparse_month(tiny_db.db, month, run_id=context.run.run_id)
    metadata = _numeric(result.metadata())
    metadata["columns_changed"] = MetadataValue.json(result.columns_changed)
    if result.unreadable:
        raise Failure(
            description=(
                f"{len(result.unreadable)} stored orders of {result.month} cannot be read by "
                f"parser version {result.parser_version}; their stored values are kept, the "
                f"other orders were reparsed. Fix the rule and run the month again: "
                f"{result.unreadable_summary()}"
            ),
            metadata=metadata,
            allow_retries=False,
        )
    context.log.info(
        f"{result.month}: {result.read} orders read, {result.changed} changed, "
        f"{result.unchanged} unchanged (parser version {result.parser_version})"
    )
    for event in table_materializations(tiny_db.db, [TINY_ORDERS]):
        context.log_event(event)
    metadata |= run_rows_metadata(tiny_db.db, context.run.run_id, ["ordens_servico"])
    return MaterializeResult(metadata=metadata)


# Each job also runs the checks on the tables it writes (operations/checks.py), after it.
incremental_job = define_asset_job(
    "tiny_incremental_sync",
    selection=AssetSelection.assets(service_orders_incremental)
    | AssetSelection.checks(NO_DUPLICATE_ORDER_NUMBERS),
)
retries_job = define_asset_job(
    "tiny_import_failure_retries",
    selection=AssetSelection.assets(import_failure_retries)
    | AssetSelection.checks(NO_FAILURES_AWAITING_REVIEW),
)
integrity_job = define_asset_job("tiny_integrity_check", selection=[integrity_report])
# For CLI backfills of many months: `dagster job backfill -j tiny_reparse --partitions ...`.
reparse_job = define_asset_job("tiny_reparse", selection=[reparse])

defs = Definitions(
    assets=[
        service_orders_history,
        service_orders_incremental,
        import_failure_retries,
        integrity_report,
        reparse,
    ],
    jobs=[incremental_job, retries_job, integrity_job, reparse_job],
    schedules=[
        # Running by default: these replace the cron jobs the users rely on.
        ScheduleDefinition(
            job=incremental_job,
            description="Every 15 minutes: the recent emission window and every open order.",
            cron_schedule="*/15 * * * *",
            execution_timezone=TZ,
            default_status=DefaultScheduleStatus.RUNNING,
        ),
        ScheduleDefinition(
            job=retries_job,
            description="Every 5 minutes: retry failed imports whose backoff has elapsed.",
            cron_schedule="*/5 * * * *",
            execution_timezone=TZ,
            default_status=DefaultScheduleStatus.RUNNING,
        ),
        ScheduleDefinition(
            job=integrity_job,
            description="Daily at 03:00 (São Paulo): API vs table per status; repairs drift.",
            cron_schedule="0 3 * * *",
            execution_timezone=TZ,
            default_status=DefaultScheduleStatus.RUNNING,
        ),
    ],
)
