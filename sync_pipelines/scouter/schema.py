"""Before an export: can we reach and write Gestão Scouter, and do both schemas fit the mapping?

``check_connection`` is today's ``validate-gestao-scouter-config``: configuration, reachability
(the OpenAPI root), the key (PostgREST's JWT check) and write permission on ``leads`` (an
upsert of an empty array, see ``GestaoScouterClient.check_write``). Each failure says what to
fix.

``compare_schemas`` is ``validate-gestao-scouter-schema``: mapped destination columns missing
in Gestão Scouter (with ``ALTER TABLE`` statements typed from the *source* columns, then the
schema-cache reload), mapped source columns missing in TabuladorMax, type pairs that will
refuse some values, and columns present on one side only (informational).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..lib.db import quote_ident
from ..lib.http import HttpError
from .client import GestaoScouterClient, PostgrestError
from .mapping import MARKER_COLUMNS, FieldMapping, validate_mapping

RELOAD_STATEMENT = "NOTIFY pgrst, 'reload schema';"

# Source type (format_type) -> destination formats that accept every value of it.
_INTEGERS = ("smallint", "integer", "bigint", "numeric", "double precision", "real")
_COMPATIBLE: dict[str, tuple[str, ...]] = {
    "smallint": _INTEGERS,
    "integer": _INTEGERS[1:],
    "bigint": ("bigint", "numeric"),
    "numeric": ("numeric",),
    "boolean": ("boolean",),
    "timestamp with time zone": ("timestamp with time zone",),
    "date": ("date", "timestamp with time zone", "timestamp without time zone"),
    "uuid": ("uuid",),
    "jsonb": ("jsonb", "json"),
    "json": ("jsonb", "json"),
}
_TEXT = ("text", "character varying", "character", "citext")


@dataclass
class ConnectionReport:
    ok: bool
    steps: list[tuple[str, bool, str]] = field(default_factory=list)  # (step, passed, message)

    @property
    def problems(self) -> list[str]:
        return [message for _, passed, message in self.steps if not passed]


def check_connection(client: GestaoScouterClient) -> ConnectionReport:
    """Reachability + key + read of the schema, then write permission on leads."""
    report = ConnectionReport(ok=True)
    try:
        columns = client.columns()
        report.steps.append(("reach", True, f"OpenAPI root lists {len(columns)} leads columns"))
    except PostgrestError as exc:
        report.ok = False
        report.steps.append(("reach", False, str(exc)))
        return report
    except HttpError as exc:
        report.ok = False
        report.steps.append(
            (
                "reach",
                False,
                f"cannot reach Gestão Scouter ({exc.cause or exc.status or 'no reply'}): check "
                f"GESTAO_SCOUTER_URL (https://<project>.supabase.co) and the network; {exc}",
            )
        )
        return report
    try:
        client.check_write()
        report.steps.append(("write", True, "upsert permission on leads confirmed"))
    except PostgrestError as exc:
        report.ok = False
        report.steps.append(("write", False, str(exc)))
    except HttpError as exc:
        report.ok = False
        report.steps.append(("write", False, f"write check did not get a reply: {exc}"))
    return report


def _base_type(type_sql: str) -> str:
    """``numeric(10,2)`` -> ``numeric``; ``character varying(20)`` -> ``character varying``."""
    return type_sql.split("(")[0].strip()


@dataclass
class SchemaReport:
    missing_at_destination: dict[str, str]  # destination column -> suggested type
    missing_at_source: list[tuple[str, str]]  # (destination column, missing source column)
    type_warnings: list[str]
    only_at_source: list[str]
    only_at_destination: list[str]
    suggested_sql: str  # for Gestão Scouter's SQL editor ("" when nothing is missing there)
    suggested_source_sql: str  # for TabuladorMax, when a mapped source column is missing

    @property
    def ok(self) -> bool:
        return not self.missing_at_destination and not self.missing_at_source

    def summary(self) -> str:
        if self.ok:
            return "schemas match the field mapping"
        parts = []
        if self.missing_at_destination:
            parts.append(
                "missing in Gestão Scouter leads: " + ", ".join(self.missing_at_destination)
            )
        if self.missing_at_source:
            parts.append(
                "missing in TabuladorMax leads: "
                + ", ".join(f"{src} (for {dest})" for dest, src in self.missing_at_source)
            )
        return "; ".join(parts)

    def markdown(self) -> str:
        lines = [f"**{self.summary()}**"]
        if self.suggested_sql:
            lines += [
                "",
                "Run in Gestão Scouter's SQL editor:",
                "```sql",
                self.suggested_sql,
                "```",
            ]
        if self.suggested_source_sql:
            lines += [
                "",
                "Fix the field mapping, or add the column(s) to TabuladorMax:",
                "```sql",
                self.suggested_source_sql,
                "```",
            ]
        if self.type_warnings:
            lines += ["", "Type differences (values the destination cannot hold are refused):"]
            lines += [f"- {w}" for w in self.type_warnings]
        return "\n".join(lines)


def compare_schemas(
    mapping: FieldMapping, source: Mapping[str, str], destination: Mapping[str, str]
) -> SchemaReport:
    """``source``: column -> SQL type (catalog); ``destination``: column -> OpenAPI format."""
    problems = validate_mapping(mapping, source, destination)
    missing_dest: dict[str, str] = {}
    for column in problems.missing_at_destination:
        if column in MARKER_COLUMNS:
            missing_dest[column] = MARKER_COLUMNS[column]
            continue
        present = [s for s in mapping.columns[column] if s in source]
        # The column takes the type of the source column that feeds it.
        missing_dest[column] = source[present[0]] if present else "text"
    sql = [
        f"ALTER TABLE public.leads ADD COLUMN IF NOT EXISTS {quote_ident(c)} {t};"
        for c, t in missing_dest.items()
    ]
    if sql:
        sql.append(RELOAD_STATEMENT)
    source_sql = [
        f"ALTER TABLE public.leads ADD COLUMN IF NOT EXISTS {quote_ident(src)} "
        f"{destination.get(dest, 'text')};"
        for dest, src in problems.missing_at_source
    ]
    warnings = []
    for dest, sources in mapping.columns.items():
        if dest not in destination:
            continue
        fmt = _base_type(destination[dest])
        for src in sources:
            if src not in source:
                continue
            src_type = _base_type(source[src])
            if fmt in _TEXT or src_type == fmt or fmt in _COMPATIBLE.get(src_type, ()):
                continue
            warnings.append(f"{src} ({source[src]}) → {dest} ({destination[dest]})")
    mapped_sources = set(mapping.source_columns)
    return SchemaReport(
        missing_at_destination=missing_dest,
        missing_at_source=problems.missing_at_source,
        type_warnings=warnings,
        only_at_source=sorted(c for c in source if c not in mapped_sources),
        only_at_destination=sorted(c for c in destination if c not in mapping.destination_columns),
        suggested_sql="\n".join(sql),
        suggested_source_sql="\n".join(source_sql),
    )
