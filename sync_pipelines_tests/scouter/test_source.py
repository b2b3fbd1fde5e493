"""TabuladorMax leads are read per São Paulo day with a keyset: every lead once, in order."""

from __future__ import annotations

import datetime as dt
import random

from sync_pipelines.sandbox.scouter_data import insert_leads, make_lead
from sync_pipelines.scouter.source import count_between, iter_day_pages, source_columns

from .conftest import DAY, seed_day

UTC = dt.UTC


def test_keyset_pages_read_every_lead_of_the_day_once_even_with_shared_timestamps(source_db):
    leads = seed_day(source_db, DAY, 1000)
    available = source_columns(source_db)
    pages = list(iter_day_pages(source_db, DAY, ["name"], available, page_size=64))
    ids = [row["id"] for page in pages for row in page]
    assert len(pages) == 16
    assert sorted(ids) == sorted(lead["id"] for lead in leads)
    assert len(set(ids)) == len(ids) == 1000
    keys = [(row["updated_at"], row["id"]) for page in pages for row in page]
    assert keys == sorted(keys)


def test_day_boundaries_are_sao_paulo_midnights(source_db):
    rng = random.Random(1)
    moments = {
        1: dt.datetime(2024, 11, 5, 3, 0, tzinfo=UTC),  # 00:00 in São Paulo: inside
        2: dt.datetime(2024, 11, 6, 2, 59, tzinfo=UTC),  # 23:59 on the 5th: inside
        3: dt.datetime(2024, 11, 6, 3, 0, tzinfo=UTC),  # 00:00 on the 6th: next day
        4: dt.datetime(2024, 11, 5, 2, 59, tzinfo=UTC),  # 23:59 on the 4th: previous day
    }
    insert_leads(source_db, [make_lead(i, m, rng) for i, m in moments.items()])
    available = source_columns(source_db)
    ids = [r["id"] for p in iter_day_pages(source_db, DAY, [], available) for r in p]
    assert ids == [1, 2]
    assert count_between(source_db, DAY, DAY + dt.timedelta(days=1)) == 3


def test_source_columns_come_from_the_catalog_with_their_types(source_db):
    columns = source_columns(source_db)
    assert len(columns) == 45
    assert columns["valor_ficha"] == "numeric(10,2)"
    assert columns["updated_at"] == "timestamp with time zone"
    assert columns["ficha_confirmada"] == "boolean"
