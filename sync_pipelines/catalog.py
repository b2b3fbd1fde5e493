"""The asset catalog: the external systems the syncs read, the tables they write, and how
they connect, so the global lineage tells the whole story of each sync.

- Each external system is an external asset (``AssetSpec``; nothing in this project
  materializes it) in its sync's group, upstream of the assets that read it.
- Each table a sync writes is an asset: the sync's own asset when it is one table
  (``detran/agenda_slots``, ``local_sync/wpp_chats``), else a spec downstream of the sync
  assets that write it (``tiny/ordens_servico``...). Every table carries
  ``dagster/table_name`` and ``dagster/column_schema``; its columns are read from the
  migrations in ``sql/`` (lib/table_columns.py), the one source of truth for stored shapes.
- ``database_schema`` (the migrations) is upstream of every table the migrations create.
- The sync assets report each table's ``dagster/row_count`` after writing it
  (``table_materializations``): a materialization of the table asset, so the catalog shows
  the count and plots it over time.

Plain data (keys, roles, columns) lives here; the only Dagster objects built are specs and
metadata. No source imports another source: each imports this module for its table keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetMaterialization,
    AssetSpec,
    CodeReferencesMetadataValue,
    Definitions,
    LocalFileCodeReference,
    MetadataValue,
    TableColumn,
    TableSchema,
)

from .lib.db import Database
from .lib.table_columns import table_columns

OWNERS = ["team:data-platform"]
PACKAGE = Path(__file__).resolve().parent
DATABASE_SCHEMA = AssetKey("database_schema")


@dataclass(frozen=True)
class Table:
    """A table a sync writes: its asset key, where its columns are declared, what writes it."""

    key: AssetKey
    role: str  # sql/<role>/ holds its migrations; "" when the project does not own it
    name: str
    group: str
    source: str
    written_by: tuple[AssetKey, ...] = ()  # the sync assets (empty: the key is the sync asset)
    description: str = ""
    columns: tuple[tuple[str, str], ...] = ()  # only for tables no migration of ours creates
    kinds: frozenset[str] = frozenset({"postgres", "table"})


@dataclass(frozen=True)
class External:
    """An external system a sync reads: API, portal or someone else's database."""

    key: AssetKey
    group: str
    source: str
    kinds: frozenset[str]
    description: str
    read_by: tuple[AssetKey, ...]
    code: str  # the module that talks to it, under sync_pipelines/


def _k(path: str) -> AssetKey:
    return AssetKey(path.split("/"))


TINY_SYNCS = (
    _k("tiny/service_orders_history"),
    _k("tiny/service_orders_incremental"),
    _k("tiny/import_failure_retries"),
    _k("tiny/integrity_report"),
)
# Writes ordens_servico from what is stored there; reads no API.
TINY_REPARSE = _k("tiny/reparse")
HUBSOFT_SYNCS = (_k("hubsoft/offline_ticket_recovery"), _k("hubsoft/ticket_status_sync"))
LOCAL_SYNC_TABLES = ("wpp_contacts", "wpp_contact_sectors", "wpp_chats")

EXTERNALS = (
    External(
        _k("tiny/api"),
        "tiny",
        "tiny",
        frozenset({"api"}),
        "Tiny ERP API v3 (OAuth2): service orders and their details.",
        TINY_SYNCS,
        "tiny/client.py",
    ),
    External(
        _k("detran/portal"),
        "detran",
        "detran",
        frozenset({"html"}),
        "DETRAN-SP e-CNHsp portal: each examiner's exam agenda (HTML pages).",
        (_k("detran/agenda_slots"),),
        "detran/client.py",
    ),
    External(
        _k("hubsoft/api"),
        "hubsoft",
        "hubsoft",
        frozenset({"api"}),
        "HubSoft API of the ISP: tickets (atendimentos), their statuses and health.",
        (*HUBSOFT_SYNCS, _k("hubsoft/health_report")),
        "hubsoft/client.py",
    ),
    External(
        _k("tabuladormax/leads"),
        "gestao_scouter",
        "gestao_scouter",
        frozenset({"postgres", "table"}),
        "TabuladorMax's leads table: the source of the Gestão Scouter export.",
        (_k("gestao_scouter/schema_validation"), _k("gestao_scouter/leads_export")),
        "scouter/source.py",
    ),
    External(
        _k("whatsapp/main_db"),
        "local_sync",
        "local_sync",
        frozenset({"mysql"}),
        "The WhatsApp service's main database: contacts, contact sectors and chats of every "
        "tenant instance.",
        tuple(_k(f"local_sync/{t}") for t in LOCAL_SYNC_TABLES),
        "local_sync/source.py",
    ),
)

TINY_ORDERS = _k("tiny/ordens_servico")
TINY_STATUS_HISTORY = _k("tiny/ordem_status_history")
TINY_IMPORT_FAILURES = _k("tiny/import_failures")
SUPPORT_TICKETS = _k("hubsoft/support_tickets")
SCOUTER_LEADS = _k("gestao_scouter/leads")
SCOUTER_EXPORT_ERRORS = _k("gestao_scouter/export_errors")

# Checks hang on the tables they judge (operations/checks.py); the sync jobs that write a
# table select its checks by these keys, so a check runs right after the write it judges.
NO_DUPLICATE_ORDER_NUMBERS = AssetCheckKey(TINY_ORDERS, "no_duplicate_order_numbers")
NO_FAILURES_AWAITING_REVIEW = AssetCheckKey(
    TINY_IMPORT_FAILURES, "no_failures_awaiting_manual_review"
)
NO_FAILED_TICKETS = AssetCheckKey(SUPPORT_TICKETS, "no_failed_tickets")
NO_EXPORT_ERRORS_LAST_24H = AssetCheckKey(SCOUTER_EXPORT_ERRORS, "no_export_errors_last_24h")


def _scouter_columns() -> tuple[tuple[str, str], ...]:
    # Gestão Scouter's table is not ours: its columns are the ones the export writes.
    from .scouter.mapping import DEFAULT_FIELD_MAPPING, MARKER_COLUMNS

    return (*((c, "mapped") for c in DEFAULT_FIELD_MAPPING), *MARKER_COLUMNS.items())


TABLES = (
    Table(
        TINY_ORDERS,
        "tiny",
        "ordens_servico",
        "tiny",
        "tiny",
        (*TINY_SYNCS, TINY_REPARSE),
        "Tiny service orders cached for the apps (one row per order, current status).",
    ),
    Table(
        TINY_STATUS_HISTORY,
        "tiny",
        "ordem_status_history",
        "tiny",
        "tiny",
        TINY_SYNCS[:2] + TINY_SYNCS[3:],
        "Every status change seen on a service order.",
    ),
    Table(
        TINY_IMPORT_FAILURES,
        "tiny",
        "import_failures",
        "tiny",
        "tiny",
        TINY_SYNCS,
        "Orders that could not be imported, with backoff; retried every 5 minutes.",
    ),
    Table(_k("detran/agenda_slots"), "detran", "agenda_slots", "detran", "detran"),
    Table(_k("detran/agendamentos"), "detran", "agendamentos", "detran", "detran"),
    Table(
        SUPPORT_TICKETS,
        "hubsoft",
        "support_tickets",
        "hubsoft",
        "hubsoft",
        HUBSOFT_SYNCS,
        "The support bot's tickets, with their HubSoft link and sync state.",
    ),
    Table(
        SCOUTER_LEADS,
        "",
        "leads",
        "gestao_scouter",
        "gestao_scouter",
        (_k("gestao_scouter/leads_export"),),
        "Gestão Scouter's leads (PostgREST/Supabase), written by the daily export.",
        kinds=frozenset({"supabase", "table"}),
    ),
    Table(
        SCOUTER_EXPORT_ERRORS,
        "tabuladormax",
        "gestao_scouter_export_errors",
        "gestao_scouter",
        "gestao_scouter",
        (_k("gestao_scouter/leads_export"),),
        "Leads Gestão Scouter refused, one row per lead and attempt, with the reason "
        "(values masked).",
    ),
    *(
        Table(
            _k(f"local_sync/{t}"),
            "tenant",
            t,
            "local_sync",
            "local_sync",
            kinds=frozenset({"mysql", "table"}),
        )
        for t in LOCAL_SYNC_TABLES
    ),
)
_BY_KEY = {t.key: t for t in TABLES}


def column_schema(table: Table) -> TableSchema:
    if table.role:
        columns = [
            TableColumn(c.name, c.type, constraints=None if c.nullable else _NOT_NULL)
            for c in table_columns(table.role, table.name)
        ]
    else:
        columns = [
            TableColumn(name, type_) for name, type_ in (table.columns or _scouter_columns())
        ]
    return TableSchema(columns=columns)


def _not_null():
    from dagster import TableColumnConstraints

    return TableColumnConstraints(nullable=False)


_NOT_NULL = _not_null()


def table_metadata(table: Table) -> dict:
    return {
        "dagster/table_name": table.name,
        "dagster/column_schema": column_schema(table),
    }


def _code_reference(path: Path) -> dict:
    return {
        "dagster/code_references": CodeReferencesMetadataValue(
            code_references=[LocalFileCodeReference(file_path=str(path), line_number=1)]
        )
    }


def catalog_specs() -> list[AssetSpec]:
    """The external systems and the tables that are not a sync asset themselves."""
    specs = [
        AssetSpec(
            e.key,
            group_name=e.group,
            description=e.description,
            kinds=set(e.kinds),
            owners=OWNERS,
            tags={"source": e.source, "external": "true"},
            metadata=_code_reference(PACKAGE / e.code),
        )
        for e in EXTERNALS
    ]
    for table in TABLES:
        if not table.written_by:
            continue
        specs.append(
            AssetSpec(
                table.key,
                group_name=table.group,
                description=table.description,
                kinds=set(table.kinds),
                owners=OWNERS,
                tags={"source": table.source},
                deps=[*table.written_by, *([DATABASE_SCHEMA] if table.role else [])],
                metadata={**table_metadata(table), **_code_reference(PACKAGE / "catalog.py")},
            )
        )
    return specs


def _source_file(group: str) -> Path:
    for candidate in (PACKAGE / group / "defs", PACKAGE / group / "defs.py"):
        if candidate.exists():
            return candidate / "__init__.py" if candidate.is_dir() else candidate
    return PACKAGE / "operations" / "defs.py"


_READS = {key: e.key for e in EXTERNALS for key in e.read_by}
_GROUP_SOURCE = {"scouter": "gestao_scouter"}


def _enrich(spec: AssetSpec) -> AssetSpec:
    """What every sync asset gets: its external source upstream, ``database_schema`` upstream
    of a table the migrations create, the table metadata when the asset is a table, its
    ``source`` tag, owners and a link to the file that defines it."""
    deps = [d.asset_key for d in spec.deps]
    extra_deps = [k for k in (_READS.get(spec.key),) if k is not None and k not in deps]
    table = _BY_KEY.get(spec.key)
    metadata = {}
    if table is not None:
        metadata.update(table_metadata(table))
        if table.role and table.role != "tenant" and DATABASE_SCHEMA not in deps:
            extra_deps.append(DATABASE_SCHEMA)
    if "dagster/code_references" not in spec.metadata:
        folder = {"gestao_scouter": "scouter"}.get(spec.group_name or "", spec.group_name or "")
        metadata.update(_code_reference(_source_file(folder)))
    tags = {} if "source" in spec.tags else {"source": spec.group_name or "operations"}
    return spec.merge_attributes(
        deps=extra_deps,
        metadata=metadata,
        tags=tags,
        owners=[] if spec.owners else OWNERS,
    )


def with_catalog(defs: Definitions) -> Definitions:
    """``defs`` with the external systems and tables added and every asset connected."""
    return Definitions.merge(
        defs.map_asset_specs(func=_enrich), Definitions(assets=catalog_specs())
    )


def table_key(path: str) -> AssetKey:
    key = _k(path)
    if key not in _BY_KEY:
        raise KeyError(f"{path} is not a table of the catalog")
    return key


def row_count(db: Database, table: str) -> int:
    with db.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {db.table(table)}")).scalar_one())


def table_materializations(
    db: Database, keys: Iterable[AssetKey], partition: str | None = None
) -> Iterator[AssetMaterialization]:
    """One materialization per table written, with its row count after the write.

    Log them with ``context.log_event``: the table assets show the count in the catalog.
    """
    for key in keys:
        table = _BY_KEY[key]
        yield AssetMaterialization(
            asset_key=key,
            partition=partition,
            metadata={"dagster/row_count": MetadataValue.int(row_count(db, table.name))},
        )
