"""Slots become clinic appointments exactly once, and the users' monitoring SQL (seed 001,
verbatim) runs unchanged against the tables the sync fills."""

from __future__ import annotations

import sqlalchemy as sa

from sync_pipelines.detran.appointments import create_appointments

from .conftest import DAY, DOCTOR

# The four queries of the users' plan ("Consultas Úteis"), copied verbatim.
SEED_MONITORING_SQL = {
    "last_syncs": """
SELECT 
  id,
  window_start,
  window_end,
  status,
  totals,
  started_at,
  finished_at - started_at AS duracao
FROM agenda_sync_runs
WHERE usuario_id = 1
ORDER BY started_at DESC
LIMIT 10;
""",
    "current_available": """
SELECT 
  data,
  hora,
  payload->>'nome' AS nome,
  payload->>'cpf' AS cpf,
  status,
  first_seen_at,
  last_seen_at
FROM agenda_slots
WHERE usuario_id = 1
  AND is_current = TRUE
  AND status = 'available'
  AND data >= CURRENT_DATE
ORDER BY data, hora;
""",
    "removed": """
SELECT 
  data,
  hora,
  payload->>'nome' AS nome,
  first_seen_at,
  last_seen_at
FROM agenda_slots
WHERE usuario_id = 1
  AND status = 'removed'
  AND is_current = FALSE
ORDER BY last_seen_at DESC;
""",
    "daily_stats": """
SELECT 
  DATE_TRUNC('day', started_at) AS dia,
  COUNT(*) AS total_syncs,
  SUM((totals->>'inserted')::int) AS total_inseridos,
  SUM((totals->>'updated')::int) AS total_atualizados,
  SUM((totals->>'removed')::int) AS total_removidos,
  COUNT(*) FILTER (WHERE status = 'success') AS sucessos,
  COUNT(*) FILTER (WHERE status = 'failed') AS falhas
FROM agenda_sync_runs
WHERE usuario_id = 1
  AND started_at >= NOW() - INTERVAL '30 days'
GROUP BY DATE_TRUNC('day', started_at)
ORDER BY dia DESC;
""",
}


def appointments(db):
    with db.connect() as conn:
        return conn.execute(
            sa.text("SELECT id, cpf, data, hora, origem FROM agendamentos ORDER BY hora, cpf")
        ).all()


def test_seed_monitoring_queries_run_unchanged_and_see_the_sync(detran_db, portal, run_sync):
    run_sync()
    victim = portal.bookings(DOCTOR.code, "1234", DAY)[0]
    portal.cancel_booking(DOCTOR.code, "1234", DAY, victim["cpf"])
    run_sync()
    with detran_db.connect() as conn:
        out = {
            name: conn.exec_driver_sql(sql.strip().replace("%", "%%")).all()
            for name, sql in SEED_MONITORING_SQL.items()
        }
    assert len(out["last_syncs"]) == 2 and out["last_syncs"][0].status == "success"
    expected = portal.bookings(DOCTOR.code, "1234", DAY)
    assert [r.cpf for r in out["current_available"]] == [b["cpf"] for b in expected]
    assert [r.nome for r in out["removed"]] == [victim["nome"]]
    (day,) = out["daily_stats"]
    assert day.total_syncs == 2 and day.total_removidos == 1 and day.sucessos == 2


def test_available_slots_become_appointments_once(detran_db, portal, run_sync):
    run_sync()
    bookings = portal.bookings(DOCTOR.code, "1234", DAY)
    first = create_appointments(detran_db, DOCTOR.usuario_id, DAY)
    assert first.created == len(bookings) and first.linked_existing == 0
    made = appointments(detran_db)
    assert sorted(a.cpf for a in made) == sorted(b["cpf"] for b in bookings)
    assert {a.origem for a in made} == {"DETRAN"}
    again = create_appointments(detran_db, DOCTOR.usuario_id, DAY)
    assert (again.created, again.linked_existing, again.already_linked) == (0, 0, len(bookings))
    assert appointments(detran_db) == made
    with detran_db.connect() as conn:
        unlinked = conn.execute(
            sa.text("SELECT count(*) FROM agenda_slots WHERE agendamento_id IS NULL")
        ).scalar()
    assert unlinked == 0


def test_existing_appointment_with_same_cpf_and_time_is_linked_not_duplicated(
    detran_db, portal, run_sync
):
    run_sync()
    booking = portal.bookings(DOCTOR.code, "1234", DAY)[0]
    digits = booking["cpf"].replace(".", "").replace("-", "")
    with detran_db.begin() as conn:
        manual_id = conn.execute(
            sa.text(
                "INSERT INTO agendamentos (usuario_id, nome, cpf, data, hora, origem)"
                " VALUES (1, 'manual', :cpf, :d, :h, 'manual') RETURNING id"
            ),
            {"cpf": digits, "d": DAY, "h": booking["hora"]},
        ).scalar()
    result = create_appointments(detran_db, DOCTOR.usuario_id, DAY)
    assert result.linked_existing == 1
    with detran_db.connect() as conn:
        linked = conn.execute(
            sa.text("SELECT agendamento_id FROM agenda_slots WHERE payload->>'cpf' = :cpf"),
            {"cpf": booking["cpf"]},
        ).scalar()
        same_cpf = conn.execute(
            sa.text(
                "SELECT count(*) FROM agendamentos WHERE regexp_replace(cpf, '\\D', '', 'g') = :c"
            ),
            {"c": digits},
        ).scalar()
    assert linked == manual_id and same_cpf == 1


def test_removed_slot_keeps_its_appointment_and_is_counted(detran_db, portal, run_sync):
    run_sync()
    create_appointments(detran_db, DOCTOR.usuario_id, DAY)
    victim = portal.bookings(DOCTOR.code, "1234", DAY)[0]
    portal.cancel_booking(DOCTOR.code, "1234", DAY, victim["cpf"])
    run_sync()
    result = create_appointments(detran_db, DOCTOR.usuario_id, DAY)
    assert result.removed_with_appointment == 1 and result.created == 0


def appointment_of(db, cpf: str):
    with db.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT a.id, a.nome, a.telefone, a.email FROM agendamentos a"
                " JOIN agenda_slots s ON s.agendamento_id = a.id"
                " WHERE s.payload->>'cpf' = :cpf AND s.is_current"
            ),
            {"cpf": cpf},
        ).one()


def test_a_corrected_name_or_phone_reaches_the_appointment_unless_edited_locally(
    detran_db, portal, run_sync
):
    run_sync()
    create_appointments(detran_db, DOCTOR.usuario_id, DAY)
    first, second, third = list(portal.bookings(DOCTOR.code, "1234", DAY))[:3]
    # The clinic edits the second appointment's name by hand.
    with detran_db.begin() as conn:
        conn.execute(
            sa.text("UPDATE agendamentos SET nome = 'NOME CORRIGIDO NA CLÍNICA' WHERE id = :id"),
            {"id": appointment_of(detran_db, second["cpf"]).id},
        )
    # The portal corrects the names and phones of the first two bookings.
    for booking, name in ((first, "ANA MARIA CORRIGIDA"), (second, "JOSÉ DA SILVA NOVO")):
        portal.edit_booking(
            DOCTOR.code, "1234", DAY, booking["cpf"], nome=name, telefone="(11) 98888-7777"
        )
    synced = run_sync()
    assert synced.totals["updated"] == 2 and synced.totals["inserted"] == 0
    result = create_appointments(detran_db, DOCTOR.usuario_id, DAY)
    a = appointment_of(detran_db, first["cpf"])
    assert (a.nome, a.telefone) == ("ANA MARIA CORRIGIDA", "(11) 98888-7777")
    b = appointment_of(detran_db, second["cpf"])
    assert (b.nome, b.telefone) == ("NOME CORRIGIDO NA CLÍNICA", "(11) 98888-7777")
    c = appointment_of(detran_db, third["cpf"])
    assert (c.nome, c.telefone) == (third["nome"], third["telefone"])
    assert (result.corrected, result.kept_local_edits, result.created) == (2, 1, 0)
    # Nothing left to do: the next pass changes nothing, the local edit stays.
    again = create_appointments(detran_db, DOCTOR.usuario_id, DAY)
    assert (again.corrected, again.kept_local_edits) == (0, 0)
    assert appointment_of(detran_db, second["cpf"]).nome == "NOME CORRIGIDO NA CLÍNICA"


def test_a_hand_made_appointment_is_linked_but_never_corrected(detran_db, portal, run_sync):
    run_sync()
    booking = portal.bookings(DOCTOR.code, "1234", DAY)[0]
    with detran_db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO agendamentos (usuario_id, nome, cpf, telefone, data, hora, origem)"
                " VALUES (1, 'FEITO À MÃO', :cpf, '(11) 1111-1111', :d, :h, 'manual')"
            ),
            {"cpf": booking["cpf"], "d": DAY, "h": booking["hora"]},
        )
    assert create_appointments(detran_db, DOCTOR.usuario_id, DAY).linked_existing == 1
    portal.edit_booking(DOCTOR.code, "1234", DAY, booking["cpf"], nome="OUTRO NOME")
    run_sync()
    assert create_appointments(detran_db, DOCTOR.usuario_id, DAY).corrected == 0
    made = appointment_of(detran_db, booking["cpf"])
    assert (made.nome, made.telefone) == ("FEITO À MÃO", "(11) 1111-1111")
