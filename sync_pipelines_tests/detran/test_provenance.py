"""Every slot the agenda sync writes names the Dagster run that last changed it
(``sync_run_id``): upsert, removal, appointment link and correction; the run log row names
its run; a rerun that finds nothing new leaves the slots and their run id as they were."""

from __future__ import annotations

import sqlalchemy as sa

from sync_pipelines.detran.appointments import create_appointments
from sync_pipelines.detran.sync import SyncOptions

from ..row_versions import run_ids_and_versions
from .conftest import DAY, DOCTOR


def stamped(db) -> dict[str, tuple]:
    return run_ids_and_versions(
        db, "agenda_slots", "external_uid", "usuario_id = :u AND data = :d",
        {"u": DOCTOR.usuario_id, "d": DAY},
    )  # fmt: skip


def removed(db) -> set[str]:
    with db.connect() as conn:
        return set(
            conn.execute(
                sa.text("SELECT external_uid FROM agenda_slots WHERE status = 'removed'")
            ).scalars()
        )


def cpf_of(db, uid: str) -> str:
    with db.connect() as conn:
        return conn.execute(
            sa.text("SELECT payload->>'cpf' FROM agenda_slots WHERE external_uid = :x"), {"x": uid}
        ).scalar_one()


def test_slots_carry_the_run_that_last_changed_them(detran_db, portal, run_sync):
    run_sync(options=SyncOptions(run_id="run-a"))
    first = stamped(detran_db)
    assert first and {run for run, _ in first.values()} == {"run-a"}
    create_appointments(detran_db, DOCTOR.usuario_id, DAY, "run-a")
    linked = stamped(detran_db)

    # Nothing changed on the portal: another run writes nothing, the ids stay.
    again = run_sync(options=SyncOptions(run_id="run-b"))
    assert again.totals["inserted"] == again.totals["updated"] == again.totals["removed"] == 0
    create_appointments(detran_db, DOCTOR.usuario_id, DAY, "run-b")
    assert stamped(detran_db) == linked

    bookings = portal.bookings(DOCTOR.code, "1234", DAY)
    cancelled, corrected = bookings[0]["cpf"], bookings[1]["cpf"]
    portal.cancel_booking(DOCTOR.code, "1234", DAY, cancelled)
    portal.edit_booking(DOCTOR.code, "1234", DAY, corrected, telefone="(11) 90000-0000")
    run_sync(options=SyncOptions(run_id="run-c"))
    create_appointments(detran_db, DOCTOR.usuario_id, DAY, "run-c")
    after = stamped(detran_db)
    changed = {uid for uid, (run, _) in after.items() if run == "run-c"}
    assert {cpf_of(detran_db, uid) for uid in changed} == {cancelled, corrected}
    assert {cpf_of(detran_db, uid) for uid in removed(detran_db)} == {cancelled}
    assert {u: v for u, v in after.items() if u not in changed} == {
        u: v for u, v in linked.items() if u not in changed
    }
    with detran_db.connect() as conn:
        logged = conn.execute(sa.text("SELECT sync_run_id FROM agenda_sync_runs ORDER BY id"))
        assert logged.scalars().all() == ["run-a", "run-b", "run-c"]


def test_an_appointment_link_stamps_the_slot_with_the_linking_run(detran_db, portal, run_sync):
    run_sync(options=SyncOptions(run_id="run-a"))
    made = create_appointments(detran_db, DOCTOR.usuario_id, DAY, "run-link")
    assert made.created > 0
    with detran_db.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT agendamento_id IS NOT NULL AS linked, sync_run_id FROM agenda_slots"
                " WHERE usuario_id = :u AND data = :d"
            ),
            {"u": DOCTOR.usuario_id, "d": DAY},
        ).all()
    assert {r.sync_run_id for r in rows if r.linked} == {"run-link"}
    assert {r.sync_run_id for r in rows if not r.linked} <= {"run-a"}
