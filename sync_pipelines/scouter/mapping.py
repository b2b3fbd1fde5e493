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
import json
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
# Personal fields masked in error rows (never stored in clear outside the two apps), by
# their source and their destination names.
PERSONAL_SOURCE_COLUMNS = frozenset(
    {
        "name", "nome_modelo", "celular", "telefone_trabalho", "telefone_casa", "address",
        "photo_url", "raw",
    }
)  # fmt: skip
PERSONAL_DESTINATION_COLUMNS = frozenset({"nome", "foto", "telefone", "email"})
_NAME_COLUMNS = ("name", "nome", "nome_modelo")
# Shorter values are not worth masking inside free text (they would mangle ordinary words).
_MIN_MASKED_LENGTH = 3
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


def _source_value(row: Mapping[str, Any], sources: tuple[str, ...]) -> Any:
    """One source column: its value as it is ("" and "  " included). A list of them (the
    mapping's "first non-empty", e.g. telefone): the first that is neither NULL nor blank,
    else NULL."""
    if len(sources) == 1:
        return row.get(sources[0])
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
        dest: _json_value(_source_value(row, sources), destination.get(dest, "text"))
        for dest, sources in mapping.columns.items()
    }
    payload["sync_source"] = EXPORT_MARKER
    payload["sync_status"] = "synced"
    payload["last_sync_at"] = exported_at.isoformat()
    return payload


def _is_personal(key: str) -> bool:
    return key in PERSONAL_SOURCE_COLUMNS or key in PERSONAL_DESTINATION_COLUMNS


def _masked(key: str, value: Any) -> str:
    text = str(value)
    if key.startswith(("celular", "telefone")):
        return mask_phone(text)
    if key == "email":
        return mask_email(text)
    if key in _NAME_COLUMNS:
        return text[:1] + MASK
    return MASK


def masked_snapshot(row: Mapping[str, Any]) -> dict[str, Any]:
    """A lead as stored with an export error: personal fields masked, the rest as JSON."""
    snapshot: dict[str, Any] = {}
    for key, value in row.items():
        if value is None:
            snapshot[key] = None
        elif _is_personal(key):
            snapshot[key] = _masked(key, value)
        else:
            snapshot[key] = _json_value(value, "")
    return snapshot


def mask_personal_values(text: str, *records: Mapping[str, Any]) -> str:
    """``text`` (an error message or body PostgREST built, which echoes rejected values) with
    each personal value of ``records`` (the lead, the payload sent) replaced by its masked
    form, the same one ``masked_snapshot`` stores. Values are also matched as they appear
    inside a JSON string (escaped quotes, ``\\uXXXX``)."""
    replacements: dict[str, str] = {}
    for record in records:
        for key, value in record.items():
            if value is None or not _is_personal(key):
                continue
            if isinstance(value, dict | list):
                # raw (jsonb): its texts one by one, as they could be echoed.
                parts = _texts_in(value)
            else:
                parts = [str(value)]
            for part in parts:
                if len(part.strip()) < _MIN_MASKED_LENGTH:
                    continue
                masked = _masked(key, part)
                for form in (
                    part,
                    json.dumps(part, ensure_ascii=False)[1:-1],
                    json.dumps(part)[1:-1],
                ):
                    replacements.setdefault(form, masked)
    # Longest first: a full name before the first name it contains.
    for clear in sorted(replacements, key=len, reverse=True):
        text = text.replace(clear, replacements[clear])
    return text


def _texts_in(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [t for v in value.values() for t in _texts_in(v)]
    if isinstance(value, list):
        return [t for v in value for t in _texts_in(v)]
    return [value] if isinstance(value, str) else []
