"""Which TabuladorMax column feeds which Gestão Scouter column, and how a lead becomes JSON.

A mapping is ``{"destination_column": "source_column"}`` as in the users' tool; a list of
source columns means "the first non-empty one" (that is how ``telefone`` is built). The
default below is today's mapping from the contract; a configured mapping is merged over it
(``null`` drops a default entry). ``id`` must always be mapped.

Names are only ever used after ``validate_mapping`` found each of them among the real
columns of its side, and then quoted as identifiers: no configured text becomes SQL.
The export's own markers (``sync_source='tabuladormax'``...) are not configurable.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..lib.redact import MASK, mask_email, mask_phone

EXPORT_MARKER = "tabuladormax"

# destination <- source (contracts/scouter.md). address, raw and the internal ids
# (commercial_project_id, responsible_user_id, bitrix_telemarketing_id) are not sent.
_SAME_NAMED = (
    "age", "responsible", "scouter", "celular", "telefone_trabalho", "telefone_casa", "etapa",
    "fonte", "nome_modelo", "local_abordagem", "criado", "date_modify", "updated_at",
    "ficha_confirmada", "presenca_confirmada", "compareceu", "cadastro_existe_foto",
    "data_criacao_ficha", "data_confirmacao_ficha", "horario_agendamento", "valor_ficha",
    "status_fluxo", "etapa_funil", "etapa_fluxo", "status_tabulacao", "maxsystem_id_ficha",
    "op_telemarketing",
)  # fmt: skip
DEFAULT_FIELD_MAPPING: dict[str, str | list[str]] = {
    "id": "id",
    "nome": "name",
    "foto": "photo_url",
    "telefone": ["celular", "telefone_trabalho", "telefone_casa"],
    **{name: name for name in _SAME_NAMED},
}
# Written by the export itself on every row (loop guard of the reverse sync); source type
# used when the schema check suggests adding them.
MARKER_COLUMNS: dict[str, str] = {
    "sync_source": "text",
    "sync_status": "text",
    "last_sync_at": "timestamp with time zone",
}
# Personal fields masked in error snapshots (never stored in clear outside the two apps).
PERSONAL_SOURCE_COLUMNS = frozenset(
    {"name", "celular", "telefone_trabalho", "telefone_casa", "address", "photo_url", "raw"}
)
_TEXT_FORMATS = ("text", "character varying", "character", "varchar", "citext")


class MappingError(ValueError):
    """A configured mapping is malformed (wrong shapes, reserved columns, no id)."""


@dataclass(frozen=True)
class FieldMapping:
    """destination column -> source columns (the first non-empty one is sent)."""

    columns: dict[str, tuple[str, ...]]

    @property
    def source_columns(self) -> list[str]:
        return list(dict.fromkeys(s for sources in self.columns.values() for s in sources))

    @property
    def destination_columns(self) -> list[str]:
        """What every request carries: the mapped columns plus the export's markers."""
        return [*self.columns, *MARKER_COLUMNS]

    def as_config(self) -> dict[str, str | list[str]]:
        return {d: (s[0] if len(s) == 1 else list(s)) for d, s in self.columns.items()}


def resolve_mapping(overrides: Mapping[str, Any] | None = None) -> FieldMapping:
    """The default mapping with ``overrides`` merged over it; shapes checked here, names
    against the real tables in ``validate_mapping``."""
    merged: dict[str, Any] = dict(DEFAULT_FIELD_MAPPING)
    for dest, source in (overrides or {}).items():
        if not isinstance(dest, str) or not dest:
            raise MappingError(f"destination column names are strings, got {dest!r}")
        if dest in MARKER_COLUMNS:
            raise MappingError(
                f"{dest!r} is written by the export itself (loop guard) and cannot be mapped"
            )
        if source is None:
            merged.pop(dest, None)
        else:
            merged[dest] = source
    columns: dict[str, tuple[str, ...]] = {}
    for dest, source in merged.items():
        sources = (source,) if isinstance(source, str) else source
        if (
            not isinstance(sources, list | tuple)
            or not sources
            or not all(isinstance(s, str) and s for s in sources)
        ):
            raise MappingError(
                f"mapping for {dest!r} must be a source column name or a list of them, "
                f"got {source!r}"
            )
        columns[dest] = tuple(sources)
    if columns.get("id") != ("id",):
        raise MappingError("'id' must always be mapped, from the source column 'id'")
    return FieldMapping(columns)


@dataclass(frozen=True)
class MappingProblems:
    missing_at_destination: list[str]  # destination columns (mapped or markers) not there
    missing_at_source: list[tuple[str, str]]  # (destination, source column not in TabuladorMax)

    @property
    def ok(self) -> bool:
        return not self.missing_at_destination and not self.missing_at_source


def validate_mapping(
    mapping: FieldMapping, source: Mapping[str, str], destination: Mapping[str, str]
) -> MappingProblems:
    """Every name checked against the real columns of both sides."""
    missing_dest = [c for c in mapping.destination_columns if c not in destination]
    missing_src = [
        (dest, s) for dest, sources in mapping.columns.items() for s in sources if s not in source
    ]
    return MappingProblems(missing_dest, missing_src)


def _json_value(value: Any, dest_format: str) -> Any:
    if value is None:
        return None
    textual = dest_format in _TEXT_FORMATS
    if isinstance(value, bool):
        # ficha_confirmada: boolean in TabuladorMax, text in Gestão Scouter.
        return ("true" if value else "false") if textual else value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)  # exact: a float would turn 10.10 into 10.0999…
    if isinstance(value, uuid.UUID):
        return str(value)
    if textual and not isinstance(value, str | dict | list):
        return str(value)
    return value


def _first_present(row: Mapping[str, Any], sources: tuple[str, ...]) -> Any:
    for source in sources:
        value = row.get(source)
        if value is not None and not (isinstance(value, str) and not value.strip()):
            return value
    return None


def to_destination(
    row: Mapping[str, Any],
    mapping: FieldMapping,
    destination: Mapping[str, str],
    exported_at: dt.datetime,
) -> dict[str, Any]:
    """One lead as the JSON object PostgREST receives (same keys for every lead)."""
    payload = {
        dest: _json_value(_first_present(row, sources), destination.get(dest, "text"))
        for dest, sources in mapping.columns.items()
    }
    payload["sync_source"] = EXPORT_MARKER
    payload["sync_status"] = "synced"
    payload["last_sync_at"] = exported_at.isoformat()
    return payload


def masked_snapshot(row: Mapping[str, Any]) -> dict[str, Any]:
    """A lead as stored with an export error: personal fields masked, the rest as JSON."""
    snapshot: dict[str, Any] = {}
    for key, value in row.items():
        if value is None:
            snapshot[key] = None
        elif key in PERSONAL_SOURCE_COLUMNS or key in ("nome", "foto", "telefone", "email"):
            text = str(value)
            if key.startswith(("celular", "telefone")):
                snapshot[key] = mask_phone(text)
            elif key == "email":
                snapshot[key] = mask_email(text)
            elif key in ("name", "nome"):
                snapshot[key] = text[:1] + MASK
            else:
                snapshot[key] = MASK
        else:
            snapshot[key] = _json_value(value, "")
    return snapshot
