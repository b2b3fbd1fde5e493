"""The agenda sync against the simulator and a real PostgreSQL: dedup, zero writes on an
unchanged rerun, removals only after a successful read, the run log, the session cache and
the per-examiner lock."""

from __future__ import annotations

import datetime as dt
import os

import pytest
import sqlalchemy as sa

from sync_pipelines.detran.sync import SyncOptions, lock_name
from sync_pipelines.lib.locks import AdvisoryLock, LockNotAvailable

from .conftest import DAY, DOCTOR, PSYCHOLOGIST


def slots(db, usuario_id=DOCTOR.usuario_id, day=DAY):
    with db.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT external_uid, hora, status, is_current, payload, content_hash,"
                " first_seen_at, last_seen_at, xmin::text AS version FROM agenda_slots"
                " WHERE usuario_id = :u AND data = :d ORDER BY hora, external_uid"
            ),
            {"u": usuario_id, "d": day},
        ).all()


def runs(db):
    with db.connect() as conn:
        return conn.execute(sa.text("SELECT * FROM agenda_sync_runs ORDER BY id")).all()


def test_first_run_inserts_every_booking_and_logs_a_successful_run(detran_db, portal, run_sync):
    result = run_sync()
    expected = portal.bookings(DOCTOR.code, "1234", DAY)
    assert result.status == "success"
    assert result.totals == {"inserted": len(expected), "updated": 0, "removed": 0, "unchanged": 0}
    rows = slots(detran_db)
    assert [r.payload["cpf"] for r in rows] == [b["cpf"] for b in expected]
    assert all(r.status == "available" and r.is_current for r in rows)
    (run,) = runs(detran_db)
    assert run.status == "success" and run.totals["inserted"] == len(expected)
    assert run.window_start == run.window_end == DAY and run.finished_at is not None


def test_unchanged_rerun_writes_nothing(detran_db, portal, run_sync):
    run_sync()
    before = slots(detran_db)
    again = run_sync()
    assert again.totals == {"inserted": 0, "updated": 0, "removed": 0, "unchanged": len(before)}
    assert again.days[0].touched == 0
    # same row versions: not even a rewrite of identical values
    assert [r.version for r in slots(detran_db)] == [r.version for r in before]


def test_reordered_columns_give_the_same_rows(detran_db, portal, run_sync):
    run_sync()
    before = slots(detran_db)
    portal.columns_reordered = True
    result = run_sync()
    assert result.totals["updated"] == 0 and result.totals["inserted"] == 0
    assert [(r.external_uid, r.content_hash, r.version) for r in slots(detran_db)] == [
        (r.external_uid, r.content_hash, r.version) for r in before
    ]


def test_cancelled_booking_is_marked_removed_and_its_history_kept(detran_db, portal, run_sync):
    run_sync()
    first_read = {r.external_uid: r for r in slots(detran_db)}
    victim = portal.bookings(DOCTOR.code, "1234", DAY)[0]
    portal.cancel_booking(DOCTOR.code, "1234", DAY, victim["cpf"])
    result = run_sync()
    assert result.totals["removed"] == 1 and result.status == "success"
    removed = [r for r in slots(detran_db) if r.status == "removed"]
    assert len(removed) == 1
    gone = removed[0]
    assert gone.payload["cpf"] == victim["cpf"] and not gone.is_current
    assert gone.first_seen_at == first_read[gone.external_uid].first_seen_at
    # last seen at the previous successful read of that day
    assert gone.last_seen_at >= first_read[gone.external_uid].last_seen_at
    # it comes back: same row, current again
    portal.add_booking(
        DOCTOR.code, "1234", DAY, victim["hora"], **{k: v for k, v in victim.items() if k != "hora"}
    )
    back = run_sync()
    assert back.totals["updated"] == 1 and back.totals["inserted"] == 0
    row = next(r for r in slots(detran_db) if r.external_uid == gone.external_uid)
    assert row.status == "available" and row.is_current


def test_moved_booking_removes_the_old_slot_and_adds_the_new_one(detran_db, portal, run_sync):
    next_day = DAY + dt.timedelta(days=1)
    run_sync(days=[DAY, next_day])
    moving = portal.bookings(DOCTOR.code, "1234", DAY)[-1]
    portal.move_booking(DOCTOR.code, "1234", DAY, moving["cpf"], next_day, "06:40")
    result = run_sync(days=[DAY, next_day])
    assert result.totals["removed"] == 1 and result.totals["inserted"] == 1
    new = [r for r in slots(detran_db, day=next_day) if r.payload["cpf"] == moving["cpf"]]
    assert [(str(r.hora), r.status) for r in new] == [("06:40:00", "available")]


@pytest.mark.parametrize("failure", ["unrecognised", "http_503", "expired_twice"])
def test_a_day_that_cannot_be_read_removes_nothing(detran_db, portal, run_sync, failure):
    run_sync()
    portal.cancel_booking(
        DOCTOR.code, "1234", DAY, portal.bookings(DOCTOR.code, "1234", DAY)[0]["cpf"]
    )
    if failure == "unrecognised":
        portal.broken_pages = 5
    elif failure == "http_503":
        portal.set_faults(fail_next={"count": 10, "status": 503, "path": "divisaoEquitativa"})
    else:
        # the query finds its session gone, and again after logging in once more
        portal.expire_next_queries = 2
    result = run_sync()
    assert result.status == "failed"
    assert result.totals["removed"] == 0
    assert all(r.status == "available" and r.is_current for r in slots(detran_db))
    last = runs(detran_db)[-1]
    assert last.status == "failed" and last.error
    assert last.error_details["days"][0]["date"] == DAY.isoformat()
    if failure == "unrecognised":
        assert last.error_details["days"][0]["saved_page"].endswith(".html")


def test_window_with_one_broken_day_is_partial_and_only_good_days_are_synced(
    detran_db, portal, run_sync
):
    days = [DAY, DAY + dt.timedelta(days=1)]
    portal.broken_pages = 1  # the first query (DAY) fails
    result = run_sync(days=days)
    assert result.status == "partial"
    assert [d.ok for d in result.days] == [False, True]
    assert slots(detran_db) == [] and slots(detran_db, day=days[1])
    assert runs(detran_db)[-1].status == "partial"


def test_wrong_password_fails_the_run_clearly_without_personal_data(detran_db, portal, run_sync):
    from sync_pipelines.detran.examiners import save_examiner

    save_examiner(detran_db, DOCTOR.usuario_id, password="not-the-password", env=os.environ)
    result = run_sync()
    assert result.status == "failed" and "WrongCredentials" in result.error
    assert portal.password_posts == {DOCTOR.cpf: 1}
    (run,) = runs(detran_db)
    assert "refused credentials" in run.error
    assert run.error_details["login_failure"] == "WrongCredentials"
    text = f"{run.error} {run.error_details}"
    for secret in ("not-the-password", DOCTOR.cpf, DOCTOR.cpf.replace(".", "").replace("-", "")):
        assert secret not in text


def test_cached_session_is_reused_by_the_next_run(detran_db, portal, run_sync):
    first = run_sync()
    assert first.logins == 1 and not first.session_reused
    second = run_sync()
    assert second.logins == 0 and second.session_reused
    # the portal forgot it (idle): the next run checks, finds it dead, logs in once
    portal.expire_sessions()
    third = run_sync()
    assert third.logins == 1 and not third.session_reused and third.status == "success"


def test_session_that_expires_mid_run_logs_in_again_once(detran_db, portal, run_sync):
    run_sync()
    portal.expire_next_queries = 1  # the cached session passes its check, then dies
    result = run_sync(days=[DAY, DAY + dt.timedelta(days=1)])
    assert result.session_reused and result.logins == 1
    assert result.status == "success" and all(d.ok for d in result.days)


def test_expired_cache_entry_is_not_used(detran_db, portal, run_sync):
    run_sync()
    with detran_db.begin() as conn:
        conn.execute(sa.text("UPDATE detran_sessions SET expires_at = now() - interval '1 minute'"))
    result = run_sync()
    assert result.logins == 1 and not result.session_reused


def test_two_unit_examiner_syncs_the_days_of_both_units(detran_db, portal, run_sync):
    wednesday, thursday = DAY, DAY + dt.timedelta(days=1)
    assert (PSYCHOLOGIST.unit_on(wednesday), PSYCHOLOGIST.unit_on(thursday)) == ("2001", "2002")
    result = run_sync(PSYCHOLOGIST, days=[wednesday, thursday])
    assert result.status == "success", result.error
    for day in (wednesday, thursday):
        unit = PSYCHOLOGIST.unit_on(day)
        expected = portal.bookings(PSYCHOLOGIST.code, unit, day)
        rows = slots(detran_db, PSYCHOLOGIST.usuario_id, day)
        assert expected and [r.payload["cpf"] for r in rows] == [b["cpf"] for b in expected]
        assert {r.payload["unidade"] for r in rows} == {unit}
    assert [sorted(d.units) for d in result.days] == [["2001", "2002"]] * 2
    # A booking added at the other unit on a day is read too, and the rerun is stable.
    portal.add_booking(PSYCHOLOGIST.code, "2002", wednesday, "06:00")
    again = run_sync(PSYCHOLOGIST, days=[wednesday, thursday])
    assert again.totals == {
        "inserted": 1,
        "updated": 0,
        "removed": 0,
        "unchanged": sum(len(slots(detran_db, 2, d)) for d in (wednesday, thursday)) - 1,
    }
    assert portal.password_posts[PSYCHOLOGIST.cpf] == 4 + 2  # first run: 2 logins; then 1


def test_a_day_with_an_unreadable_row_removes_nothing_and_names_the_row(
    detran_db, portal, run_sync
):
    run_sync()
    first, second, third = list(portal.bookings(DOCTOR.code, "1234", DAY))[:3]
    cancelled = portal.cancel_booking(DOCTOR.code, "1234", DAY, first["cpf"])
    # The page now shows: second (row 1), third (row 2, unreadable), ...
    garbled = portal.garble_booking(DOCTOR.code, "1234", DAY, third["cpf"], how="time")
    result = run_sync()
    assert result.status == "partial"
    assert result.totals["removed"] == 0
    assert all(r.status == "available" and r.is_current for r in slots(detran_db))
    (day,) = result.days
    assert day.ok and day.unreadable_rows == 1
    last = runs(detran_db)[-1]
    assert last.status == "partial"
    where = f"{DAY.isoformat()} unit 1234 row 2 (after {second['hora']}): unreadable time"
    assert where in last.error
    assert "nothing was marked removed" in last.error
    assert last.error_details["rows"] == [
        {
            "date": DAY.isoformat(),
            "unit": "1234",
            "row": 2,
            "after": second["hora"],
            "reason": "unreadable time (not HH:MM)",
        }
    ]
    text = f"{last.error} {last.error_details}"
    for personal in (garbled["cpf"], garbled["nome"], cancelled["cpf"], cancelled["nome"]):
        assert personal not in text
    # Readable again: now the read is complete and the cancelled booking is removed.
    garbled.pop("_garbled")
    fixed = run_sync()
    assert fixed.status == "success" and fixed.totals["removed"] == 1
    (gone,) = [r for r in slots(detran_db) if r.status == "removed"]
    assert gone.payload["cpf"] == cancelled["cpf"]


def test_second_sync_of_the_same_examiner_stops_at_once(detran_db, portal, run_sync):
    with AdvisoryLock(detran_db, lock_name(DOCTOR.usuario_id)):
        with pytest.raises(LockNotAvailable, match="held by another run"):
            run_sync(options=SyncOptions(holder_hint="run abc"))
        # another examiner is not blocked
        assert run_sync(PSYCHOLOGIST).status == "success"
    # only the psychologist's day queries, one per unit
    assert portal.count(r"divisaoEquitativa") == 2
    assert len(runs(detran_db)) == 1


def test_stale_running_row_of_a_crashed_run_is_closed_by_the_next_run(detran_db, run_sync):
    with detran_db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO agenda_sync_runs (usuario_id, window_start, window_end, status,"
                " started_at) VALUES (1, :d, :d, 'running', now())"
            ),
            {"d": DAY},
        )
    run_sync()
    statuses = [(r.status, r.error) for r in runs(detran_db)]
    assert statuses[0][0] == "failed" and "interrupted" in statuses[0][1]
    assert statuses[1][0] == "success"


def test_two_concurrent_syncs_of_one_examiner_one_runs_one_stops(detran_db, portal, run_sync):
    import threading

    # slow replies keep the first sync inside its lock while the second one starts
    portal.set_faults(latency={"seconds": 0.3})
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def worker():
        barrier.wait()
        try:
            outcomes.append(run_sync().status)
        except LockNotAvailable:
            outcomes.append("stopped")

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["stopped", "success"]
    assert len(runs(detran_db)) == 1
