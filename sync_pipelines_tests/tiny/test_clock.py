"""Tiny's date logic on a pinned clock: every calendar edge (month and year turns, 28/29 Feb,
São Paulo late evening when UTC is already the next day) and the historical Brazilian DST
days that old orders carry."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from sync_pipelines.sandbox.tiny_sim import TINY_PART, TinySimulator
from sync_pipelines.tiny.defs import monthly
from sync_pipelines.tiny.sync import sync_incremental, sync_month

from ..clock import (
    CALENDAR_EDGES,
    DST_EDGES,
    DST_IDS,
    EDGE_IDS,
    pinned_clock,
    sao_paulo_today,
    utc_today,
)
from .conftest import make_client

EVERY_EDGE = CALENDAR_EDGES + DST_EDGES
EVERY_ID = EDGE_IDS + DST_IDS


@pytest.fixture
def small_sim():
    """A small account built on the pinned day (its ``today`` is the clock's)."""
    started = []

    def make() -> TinySimulator:
        sim = TinySimulator(
            seed=7, n_orders=40, n_broken=0, per_minute_limit=10**6, burst_per_second=10**6
        )
        sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.mark.parametrize("instant", EVERY_EDGE, ids=EVERY_ID)
def test_current_month_partition_is_the_sao_paulo_month(instant):
    with pinned_clock(instant, tick=False):
        current = sao_paulo_today(instant).replace(day=1).isoformat()
        assert monthly.get_last_partition_key() == current
        assert TINY_PART.demo_partitions()["tiny/service_orders_history"][-1] == current


@pytest.mark.parametrize("instant", EVERY_EDGE, ids=EVERY_ID)
def test_incremental_window_ends_on_the_sao_paulo_day(instant, small_sim, tiny_db):
    with pinned_clock(instant):
        sim = small_sim()
        client = make_client(sim, tiny_db)
        windows = []
        original = client.list_orders

        def record(**kwargs):
            if kwargs.get("emitted_to"):
                windows.append((kwargs["emitted_from"], kwargs["emitted_to"]))
            return original(**kwargs)

        client.list_orders = record
        sync_incremental(client, tiny_db, window_days=7)
        client.close()
    today = sao_paulo_today(instant)
    assert set(windows) == {(today - dt.timedelta(days=7), today)}
    # Orders emitted today (São Paulo) are inside the window and stored.
    todays = [i for i in sim.snapshot() if sim.detail(i)["data"] == today.isoformat()]
    with tiny_db.connect() as conn:
        stored = set(conn.execute(sa.text("SELECT id FROM ordens_servico")).scalars())
        last_run = conn.execute(
            sa.text("SELECT valor FROM sync_metadata WHERE chave = 'ultima_execucao_incremental'")
        ).scalar()
    assert set(todays) <= stored
    # The run's mark comes from the (pinned) Python clock, not from PostgreSQL's now().
    assert dt.datetime.fromisoformat(last_run).date() == utc_today(instant)


# Times that exist once, never, or twice in São Paulo on the DST days.
DST_ORDERS = {
    "2018-11-04": ("2018-11-04 00:30:00", "2018-11-04"),  # 00:00-00:59 never happened
    "2019-02-16": ("2019-02-16 23:30:00", "2019-02-16"),  # 23:00-23:59 happened twice
}


@pytest.mark.parametrize("instant", DST_EDGES, ids=DST_IDS)
def test_orders_from_dst_days_keep_their_dates_and_times(instant, small_sim, tiny_db):
    with pinned_clock(instant):
        sim = small_sim()
        client = make_client(sim, tiny_db)
        ids = {}
        for day, (prevista, conclusao) in DST_ORDERS.items():
            if day > sao_paulo_today(instant).isoformat():
                continue  # not emitted yet on the pinned day
            (order_id,) = sim.add_orders(1, day=day, situacao="3")
            sim.edit(order_id, dataPrevista=prevista, dataConclusao=conclusao)
            ids[order_id] = day
            sync_month(client, tiny_db, dt.date.fromisoformat(day).replace(day=1))
        # An order seen finishing now, without a conclusion date from Tiny: concluded "now".
        (watched,) = sim.add_orders(1, day=sao_paulo_today(instant).isoformat(), situacao="6")
        month = sao_paulo_today(instant).replace(day=1)
        sync_month(client, tiny_db, month)
        sim.set_status(watched, "3", "")
        sync_month(client, tiny_db, month)
        client.close()
    assert ids
    with tiny_db.connect() as conn:
        rows = {
            r.id: r
            for r in conn.execute(
                sa.text(
                    "SELECT id, data_emissao, data_prevista, "
                    "(data_conclusao AT TIME ZONE 'America/Sao_Paulo')::date AS conclusao_sp, "
                    "data_conclusao FROM ordens_servico"
                )
            )
        }
    for order_id, day in ids.items():
        prevista, conclusao = DST_ORDERS[day]
        assert rows[order_id].data_emissao.isoformat() == day
        assert rows[order_id].data_prevista == dt.datetime.fromisoformat(prevista)
        assert rows[order_id].conclusao_sp.isoformat() == conclusao
    observed = rows[watched].data_conclusao
    start = instant.astimezone(dt.UTC)  # wall-clock arithmetic would be wrong on a DST day
    assert start <= observed < start + dt.timedelta(minutes=5)
