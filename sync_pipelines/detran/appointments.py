"""Current available slots → the clinic's ``agendamentos``, idempotently.

For one examiner and day: a slot that already has an appointment with the same CPF, date and
time (made by hand, or by an earlier run) is linked to it; every other current available
slot with a CPF gets a new appointment (``origem = 'DETRAN'``) and is linked to it through
``agenda_slots.agendamento_id``. Both steps are set-based statements inside the database,
in one transaction under a per-examiner transaction lock, so re-running never creates a
second appointment. Slots without a CPF cannot be matched safely and are only counted.
A slot that was later removed keeps its appointment: cancelling a clinic appointment is the
users' decision, so the count of such slots is reported instead.

Corrections: when the portal corrects a booking (its name, phone or e-mail; date, time and
CPF make the slot itself), the appointment the sync created gets the corrected values,
field by field, unless the clinic edited that field. ``agenda_slots.agendamento_synced``
holds what the sync last wrote; an appointment field that differs from it was edited
locally and is kept (counted in ``kept_local_edits``). Appointments made by hand and only
linked have no such record and are never changed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from ..lib.db import Database
from ..lib.locks import lock_key
from .slots import SOURCE

_CPF_DIGITS = "regexp_replace(coalesce({}, ''), '[^0-9]', '', 'g')"
# The booking fields an appointment copies and the portal may correct.
CORRECTABLE = ("nome", "telefone", "email")
_SLOT_VALUES = (
    "jsonb_build_object(" + ", ".join(f"'{f}', s.payload->>'{f}'" for f in CORRECTABLE) + ")"
)


@dataclass
class AppointmentsResult:
    linked_existing: int = 0
    created: int = 0
    already_linked: int = 0
    without_cpf: int = 0
    removed_with_appointment: int = 0
    corrected: int = 0  # appointments that took a correction from the portal
    kept_local_edits: int = 0  # corrected fields left as the clinic edited them


def create_appointments(
    db: Database, usuario_id: int, day: dt.date, run_id: str | None = None
) -> AppointmentsResult:
    """``run_id`` (the Dagster run) goes on every slot linked or corrected (``sync_run_id``)."""
    result = AppointmentsResult()
    key = {"s": SOURCE, "u": usuario_id, "d": day, "run": run_id}
    current = (
        "s.source = :s AND s.usuario_id = :u AND s.data = :d AND s.is_current"
        " AND s.status = 'available'"
    )
    slot_cpf = _CPF_DIGITS.format("s.payload->>'cpf'")
    with db.begin() as conn:
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:k)"),
            {"k": lock_key(f"{db.schema or ''}/detran:appointments:{usuario_id}")},
        )
        result.linked_existing = conn.execute(
            sa.text(
                f"UPDATE agenda_slots s SET agendamento_id = a.id, sync_run_id = :run"
                f" FROM agendamentos a"
                f" WHERE {current} AND s.agendamento_id IS NULL AND a.usuario_id = s.usuario_id"
                f" AND a.data = s.data AND a.hora = s.hora"
                f" AND {_CPF_DIGITS.format('a.cpf')} = {slot_cpf} AND {slot_cpf} <> ''"
            ),
            key,
        ).rowcount
        result.created = conn.execute(
            sa.text(
                f"WITH candidates AS ("
                f"  SELECT DISTINCT ON ({slot_cpf}, s.hora) s.usuario_id, s.data, s.hora,"
                f"    s.payload->>'nome' AS nome, s.payload->>'cpf' AS cpf,"
                f"    s.payload->>'telefone' AS telefone, s.payload->>'email' AS email,"
                f"    lower(s.servico_code) AS tipo_exame"
                f"  FROM agenda_slots s WHERE {current} AND s.agendamento_id IS NULL"
                f"    AND {slot_cpf} <> ''"
                f"  ORDER BY {slot_cpf}, s.hora, s.id),"
                f" created AS ("
                f"  INSERT INTO agendamentos (usuario_id, nome, cpf, telefone, email, data, hora,"
                f"    tipo_exame, origem, status)"
                f"  SELECT usuario_id, nome, cpf, telefone, email, data, hora, tipo_exame,"
                f"    'DETRAN', 'agendado' FROM candidates"
                f"  RETURNING id, usuario_id, data, hora, {_CPF_DIGITS.format('cpf')} AS cpf)"
                f" UPDATE agenda_slots s SET agendamento_id = c.id, sync_run_id = :run,"
                f"   agendamento_synced = {_SLOT_VALUES} FROM created c"
                f" WHERE {current} AND s.agendamento_id IS NULL AND s.usuario_id = c.usuario_id"
                f" AND s.data = c.data AND s.hora = c.hora AND {slot_cpf} = c.cpf"
                f" RETURNING c.id"
            ),
            key,
        ).rowcount
        corrections = _apply_corrections(conn, current, key)
        result.corrected = sum(1 for row in corrections if row.took)
        result.kept_local_edits = sum(row.kept for row in corrections)
        counts = conn.execute(
            sa.text(
                "SELECT"
                " count(*) FILTER (WHERE s.is_current AND s.status = 'available'"
                "   AND s.agendamento_id IS NOT NULL) AS linked,"
                f" count(*) FILTER (WHERE s.is_current AND s.status = 'available'"
                f"   AND {slot_cpf} = '') AS without_cpf,"
                " count(*) FILTER (WHERE s.status = 'removed' AND s.agendamento_id IS NOT NULL)"
                "   AS removed_linked"
                " FROM agenda_slots s WHERE s.source = :s AND s.usuario_id = :u AND s.data = :d"
            ),
            key,
        ).one()
    result.already_linked = counts.linked - result.linked_existing - result.created
    result.without_cpf = counts.without_cpf
    result.removed_with_appointment = counts.removed_linked
    return result


def _apply_corrections(conn, current: str, key: dict) -> list:
    """Bring the portal's corrections to the appointments the sync created; one row per
    appointment looked at: corrected fields it took (``took``) and kept as edited (``kept``)."""
    # Per field: the appointment still holds what the sync wrote → take the portal's value;
    # otherwise the clinic edited it → keep it. Evaluated on the row being updated, so an
    # edit committed meanwhile is seen (READ COMMITTED re-reads a concurrently updated row).
    sets = ", ".join(
        f"{f} = CASE WHEN a.{f} IS NOT DISTINCT FROM c.old->>'{f}' THEN c.new->>'{f}'"
        f" ELSE a.{f} END"
        for f in CORRECTABLE
    )
    # RETURNING sees the updated row: a corrected field that does not hold the portal's
    # value now was kept as edited locally.
    took, kept = (
        " + ".join(
            f"(c.old->>'{f}' IS DISTINCT FROM c.new->>'{f}'"
            f" AND a.{f} IS {'NOT ' if held else ''}DISTINCT FROM c.new->>'{f}')::int"
            for f in CORRECTABLE
        )
        for held in (True, False)
    )
    return conn.execute(
        sa.text(
            f"WITH linked AS ("
            f"  SELECT DISTINCT ON (s.agendamento_id) s.id AS slot_id, s.agendamento_id,"
            f"    s.agendamento_synced AS old, {_SLOT_VALUES} AS new"
            f"  FROM agenda_slots s WHERE {current} AND s.agendamento_id IS NOT NULL"
            f"    AND s.agendamento_synced IS NOT NULL"
            f"  ORDER BY s.agendamento_id, s.id),"
            f" corrected AS ("
            f"  UPDATE agendamentos a SET {sets} FROM linked c"
            f"  WHERE a.id = c.agendamento_id AND c.old IS DISTINCT FROM c.new"
            f"  RETURNING c.slot_id, c.new, {took} AS took, {kept} AS kept)"
            f" UPDATE agenda_slots s SET agendamento_synced = c.new, sync_run_id = :run"
            f" FROM corrected c"
            f" WHERE s.id = c.slot_id RETURNING c.took, c.kept"
        ),
        key,
    ).all()
