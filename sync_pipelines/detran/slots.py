"""From the portal's bookings to ``agenda_slots`` rows: stable identity and content hash.

- ``external_uid`` = sha1 of unit, service, date, time and the candidate's CPF digits: the
  same booking gets the same uid on every run, whatever the column order or the cells
  around it (a name fix, a new phone).
- ``content_hash`` = sha256 of the normalised booking fields only (no timestamps, no run
  ids), so an unchanged booking hashes the same and the upsert leaves it untouched.
- A booking without a CPF is identified by its normalised name instead; one with neither,
  or a row the parser could not read, cannot be stored and is reported by table row (never
  dropped silently, never with its personal data). ``DayRows.complete`` is False then: the
  day does not prove that a slot missing from it is gone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field

from .client import DayAgenda
from .parse import BOOKING_FIELDS, PageFormatError, normalize_text, parse_hora

SOURCE = "DETRAN"
SERVICES = {"medico": "MEDICO", "psicologo": "PSICOLOGO"}


def _digits(text: str | None) -> str:
    return re.sub(r"\D", "", text or "")


def _squash(text: str | None) -> str | None:
    if text is None:
        return None
    text = re.sub(r"\s+", " ", text).strip()
    return text or None


def normalized_booking(booking: dict) -> dict:
    """The fields that make a booking what it is, in one canonical spelling."""
    cpf = _digits(booking.get("cpf"))
    phone = _digits(booking.get("telefone"))
    email = _squash(booking.get("email"))
    normalized = {
        "hora": parse_hora(booking.get("hora")).strftime("%H:%M"),
        "cpf": cpf or None,
        "nome": (_squash(booking.get("nome")) or "").upper() or None,
        "telefone": phone or None,
        "email": email.casefold() if email else None,
    }
    for name in BOOKING_FIELDS:
        if name not in normalized:
            value = _squash(booking.get(name))
            normalized[name] = value.upper() if value else None
    extras = booking.get("extras") or {}
    if extras:
        normalized["extras"] = {normalize_text(k): _squash(v) for k, v in sorted(extras.items())}
    return normalized


def booking_uid(unit: str, service: str, day: dt.date, hora: str, identity: str) -> str:
    return hashlib.sha1(
        "|".join([unit, service, day.isoformat(), hora, identity]).encode("utf-8")
    ).hexdigest()


def content_hash(normalized: dict) -> str:
    text = json.dumps(normalized, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def format_cpf(digits: str) -> str:
    return f"{digits[:3]}.{digits[3:6]}.{digits[6:9]}-{digits[9:]}" if len(digits) == 11 else digits


@dataclass
class DayRows:
    rows: list[dict] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)  # no PII: date, unit, row, reason

    @property
    def complete(self) -> bool:
        """Every booking row of the page became a slot row."""
        return not self.problems


def _problem(agenda: DayAgenda, row: int, reason: str, after: str | None) -> dict:
    return {
        "date": agenda.date.isoformat(),
        "unit": agenda.unit_code,
        "row": row,
        "after": after,
        "reason": reason,
    }


def slot_rows(
    agenda: DayAgenda, *, usuario_id: int, profession: str, now: dt.datetime, unit_label: str = ""
) -> DayRows:
    """The ``agenda_slots`` rows of one day read from the portal."""
    service = SERVICES[profession]
    out = DayRows()
    for unreadable in agenda.unreadable:
        out.problems.append(_problem(agenda, unreadable.row, unreadable.reason, unreadable.after))
    numbers = agenda.row_numbers or list(range(1, len(agenda.bookings) + 1))
    previous: str | None = None
    for number, booking in zip(numbers, agenda.bookings, strict=True):
        try:
            normalized = normalized_booking(booking)
        except PageFormatError as exc:
            out.problems.append(_problem(agenda, number, str(exc), previous))
            continue
        cpf = normalized["cpf"]
        if cpf and len(cpf) == 11:
            identity = cpf
        elif normalized["nome"]:
            identity = "nome:" + normalize_text(normalized["nome"])
        else:
            reason = "booking without CPF and without name: cannot be identified"
            out.problems.append(_problem(agenda, number, reason, previous))
            continue
        previous = normalized["hora"]
        payload = {
            **{k: v for k, v in booking.items() if k != "extras"},
            "hora": normalized["hora"],
            "cpf": format_cpf(cpf) if cpf else None,
            "unidade": agenda.unit_code,
            "unidade_nome": unit_label or agenda.unit_label or None,
        }
        if booking.get("extras"):
            payload["extras"] = booking["extras"]
        out.rows.append(
            {
                "source": SOURCE,
                "unidade_code": agenda.unit_code,
                "servico_code": service,
                "data": agenda.date,
                "hora": normalized["hora"],
                "status": "available",
                "is_current": True,
                "external_uid": booking_uid(
                    agenda.unit_code, service, agenda.date, normalized["hora"], identity
                ),
                "payload": payload,
                "content_hash": content_hash(normalized),
                "first_seen_at": now,
                "last_seen_at": now,
                "usuario_id": usuario_id,
            }
        )
    return out
