"""A day is exported for good only once it has ended in São Paulo plus a margin: passes over
it before that leave it open, and the next pass re-reads it from an overlap, so a lead
updated late that day, or committed late with an earlier updated_at, still reaches Gestão
Scouter. Pinned-clock checks of the day-completion rule on the calendar edges."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from sync_pipelines.lib.upsert import bulk_upsert
from sync_pipelines.sandbox.scouter_data import SOURCE_COLUMNS, insert_leads, make_lead
from sync_pipelines.scouter import jobs
from sync_pipelines.scouter.export import export_day, export_job
from sync_pipelines.scouter.mapping import resolve_mapping
from sync_pipelines.scouter.source import (
    FINAL_MARGIN,
    TZ,
    is_day_final,
    now_sao_paulo,
    source_columns,
    today_sao_paulo,
)
from sync_pipelines_tests.clock import CALENDAR_EDGES, EDGE_IDS, pinned_clock

from .conftest import DAY, dest_rows, seed_day


def _at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=TZ)


def _ctx(source_db, client):
    return resolve_mapping(), source_columns(source_db), client.columns()


def test_a_lead_updated_at_2350_is_exported_by_the_next_pass_after_the_day_ended(
    source_db, client, sim
):
    seed_day(source_db, DAY, 10)  # 08:00 .. 20:00
    job = jobs.create_job(source_db, DAY, DAY, {})
    first = export_job(source_db, client, job.id, *_ctx(source_db, client), now=_at(DAY, 21))
    assert [(r.day, r.exported, r.final) for r in first] == [(DAY, 10, False)]
    open_day = jobs.get_job(source_db, job.id)
    assert open_day.status == "running" and open_day.last_completed_date is None
    assert open_day.next_pass_at == _at(DAY, 21, 30)

    late = make_lead(500, _at(DAY, 23, 50), random.Random(5))
    insert_leads(source_db, [late])
    # Not due yet: nothing is sent.
    assert (
        export_job(source_db, client, job.id, *_ctx(source_db, client), now=_at(DAY, 21, 10)) == []
    )
    nxt = DAY + dt.timedelta(days=1)
    [second] = export_job(source_db, client, job.id, *_ctx(source_db, client), now=_at(nxt, 1, 30))
    assert second.final and 500 in dest_rows(sim)
    done = jobs.get_job(source_db, job.id)
    assert done.status == "completed" and done.last_completed_date == DAY
    # The re-read overlaps the first pass by the margin only (from 20:00), idempotently.
    assert sim.received[500] == 1 and len(dest_rows(sim)) == 11


def test_a_lead_committed_late_with_an_earlier_updated_at_is_not_skipped(source_db, client, sim):
    leads = seed_day(source_db, DAY, 20)  # 08:00 .. ~19:30
    rng = random.Random(9)
    insert_leads(source_db, [make_lead(901, _at(DAY, 21, 50), rng)])
    job = jobs.create_job(source_db, DAY, DAY, {})
    table = f"{source_db.schema}.leads"
    with source_db.engine.connect() as writer:
        # A transaction that began at 21:40 (its updated_at) and commits after a pass at 22:00
        # has read past 21:40: the keyset of that pass has gone by it.
        transaction = writer.begin()
        late = make_lead(900, _at(DAY, 21, 40), rng)
        bulk_upsert(writer, table, [late], ["id"], columns=[c for c, _ in SOURCE_COLUMNS])
        first = export_day(
            source_db, client, job.id, DAY, *_ctx(source_db, client), now=_at(DAY, 22)
        )
        transaction.commit()
    assert first.exported == 21 and 900 not in dest_rows(sim) and not first.final
    nxt = DAY + dt.timedelta(days=1)
    export_job(source_db, client, job.id, *_ctx(source_db, client), now=_at(nxt, 2))
    assert set(dest_rows(sim)) == {lead["id"] for lead in leads} | {900, 901}
    assert jobs.get_job(source_db, job.id).status == "completed"


def test_a_refused_lead_met_again_by_a_re_read_stays_one_error_row(source_db, client, sim):
    insert_leads(source_db, [make_lead(700, _at(DAY, 21, 30), random.Random(7), bad="number")])
    job = jobs.create_job(source_db, DAY, DAY, {})
    export_job(source_db, client, job.id, *_ctx(source_db, client), now=_at(DAY, 22))
    nxt = DAY + dt.timedelta(days=1)
    export_job(source_db, client, job.id, *_ctx(source_db, client), now=_at(nxt, 2))
    assert sim.received[700] == 2  # both passes sent it (the second re-read from 21:00)
    with source_db.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT lead_id FROM gestao_scouter_export_errors WHERE job_id = %s", (job.id,)
        ).all()
    assert rows == [(700,)]
    assert jobs.get_job(source_db, job.id).error_leads == 1


def test_a_lead_changed_between_two_pages_is_sent_with_its_new_value(source_db, client, sim):
    leads = seed_day(source_db, DAY, 120)
    job = jobs.create_job(source_db, DAY, DAY, {})
    first_id = leads[0]["id"]

    def edit_after_first_batch(result):
        if result.batches == 1:
            insert_leads(source_db, [leads[0] | {"etapa": "Editado", "updated_at": _at(DAY, 22)}])

    export_day(
        source_db, client, job.id, DAY, *_ctx(source_db, client), now=_at(DAY + dt.timedelta(days=3), 9),
        page_size=50, progress=edit_after_first_batch,
    )  # fmt: skip
    assert dest_rows(sim)[first_id]["etapa"] == "Editado"
    assert len(dest_rows(sim)) == 120


@pytest.mark.parametrize("instant", CALENDAR_EDGES, ids=EDGE_IDS)
def test_day_completion_on_the_calendar_edges(instant):
    with pinned_clock(instant, tick=False):
        now = now_sao_paulo()
        today = today_sao_paulo()
    local = instant.astimezone(TZ)
    assert today == local.date()  # the São Paulo day, not the UTC one
    yesterday = today - dt.timedelta(days=1)
    midnight = dt.datetime(local.year, local.month, local.day, tzinfo=TZ)
    # Today is never final; yesterday only once the margin after midnight has passed
    # (23:30: yes; 00:30: not yet, across a month or year boundary too).
    assert not is_day_final(today, now)
    assert is_day_final(yesterday, now) == (local - midnight >= FINAL_MARGIN)
    assert is_day_final(yesterday - dt.timedelta(days=1), now)
