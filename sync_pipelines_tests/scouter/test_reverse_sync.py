"""Reverse sync (Gestão Scouter → TabuladorMax) with the export: no ping-pong over 3 cycles,
a newer TabuladorMax row is never overwritten."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from sync_pipelines.scouter import jobs
from sync_pipelines.scouter.export import export_job
from sync_pipelines.scouter.mapping import resolve_mapping
from sync_pipelines.scouter.reverse import reverse_sync
from sync_pipelines.scouter.source import TZ, source_columns, today_sao_paulo

from .conftest import DAY, seed_day


def _cycle(db, client, today):
    """One reverse-sync poll (its sensor polls every minute), then an export of every day."""
    mapping = resolve_mapping()
    result = reverse_sync(db, client, mapping)
    job = jobs.create_job(db, DAY, today, {})
    after_today = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(2), tzinfo=TZ)
    export_job(db, client, job.id, mapping, source_columns(db), client.columns(), now=after_today)
    return result


def _source(db, lead_id):
    with db.connect() as conn:
        return conn.execute(
            sa.text("SELECT etapa, sync_source, updated_at, last_sync_at FROM leads WHERE id = :i"),
            {"i": lead_id},
        ).one()


def test_three_cycles_change_each_side_at_most_once(source_db, client, sim):
    seed_day(source_db, DAY, 20, first_id=1)
    today = DAY + dt.timedelta(days=1)
    assert _cycle(source_db, client, today).seen == 0  # Gestão Scouter was empty
    # A Gestão Scouter user edits lead 4 (newer), and lead 5 with an older timestamp.
    with sim.engine.begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE {sim.table} SET etapa = 'Aprovado', sync_source = 'gestao_scouter', "
            "updated_at = '2024-11-06T12:00:00-03:00' WHERE id = 4"
        )
        conn.exec_driver_sql(
            f"UPDATE {sim.table} SET etapa = 'Velho', sync_source = NULL, "
            "updated_at = '2024-11-01T12:00:00-03:00' WHERE id = 5"
        )
    sim.reset()
    source_writes, dest_writes = [], []
    for _ in range(3):
        result = _cycle(source_db, client, today)
        source_writes.append(result.written)
        dest_writes.append(sum(sim.written.values()))
    # Lead 4 reached TabuladorMax once; lead 5 (older than TabuladorMax's row) never did.
    assert source_writes == [1, 0, 0]
    row = _source(source_db, 4)
    assert row.etapa == "Aprovado" and row.sync_source == "gestao_scouter"
    assert _source(source_db, 5).etapa != "Velho"
    # The export re-sent the unchanged days each cycle (a new job per cycle) but never lead 4
    # back: it was last written by the reverse sync and not changed since.
    assert sim.written[4] == 0
    again = reverse_sync(source_db, client, resolve_mapping())
    assert again.written == 0
    assert dest_writes[1] - dest_writes[0] == dest_writes[2] - dest_writes[1]
    # A TabuladorMax edit after that is exported again, once.
    with source_db.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE leads SET etapa = 'Confirmado', updated_at = now() WHERE id = 4"
        )
    today_sp = today_sao_paulo()
    job = jobs.create_job(source_db, today_sp, today_sp, {})
    mapping = resolve_mapping()
    export_job(source_db, client, job.id, mapping, source_columns(source_db), client.columns())
    assert sim.written[4] == 1
    assert reverse_sync(source_db, client, resolve_mapping()).written == 0


def test_a_page_cut_short_by_the_servers_max_rows_is_not_taken_for_the_end(source_db, client, sim):
    seed_day(source_db, DAY, 7, first_id=1)
    with sim.engine.begin() as conn:
        for lead_id in range(1, 8):
            conn.exec_driver_sql(
                f"INSERT INTO {sim.table} (id, etapa, sync_source, updated_at) VALUES "
                f"({lead_id}, 'Aprovado', 'gestao_scouter', '2024-11-06T12:00:0{lead_id}-03:00')"
            )
    sim.max_rows = 3  # Supabase's "Max rows": fewer than the page size asked for
    sim.paging_headers = False
    result = reverse_sync(source_db, client, resolve_mapping(), page_size=5)
    assert result.written == 7
    with source_db.connect() as conn:
        assert (
            conn.exec_driver_sql("SELECT count(*) FROM leads WHERE etapa = 'Aprovado'").scalar_one()
            == 7
        )
