"""DETRAN's "today" on a pinned clock at the calendar edges: the schedules' window is today
.. today+13 in São Paulo (not UTC), across month and year ends and near midnight, and the
portal is asked about São Paulo's date."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from dagster import PartitionKeyRange, build_schedule_context, instance_for_test

from sync_pipelines.detran.client import Credentials, PortalClient
from sync_pipelines.detran.defs import (
    EXAMINERS_PARTITIONS,
    agenda_partitions,
    detran_days_4_to_14,
    detran_next_3_days,
)
from sync_pipelines.resources import DatabaseResource

from ..clock import CALENDAR_EDGES, EDGE_IDS, pinned_clock, sao_paulo_today
from .conftest import DOCTOR, PSYCHOLOGIST

WINDOW_DAYS = 14  # the users' plan: today and the next 13 days


def on_a_utc_machine(instant: dt.datetime) -> dt.datetime:
    """The same instant with the process's local zone pinned to UTC, as on a server: a
    São Paulo instant would make time-machine set the local zone to São Paulo and hide a
    ``date.today()`` that ignores it."""
    return instant.astimezone(ZoneInfo("UTC"))


@pytest.fixture
def env(monkeypatch, detran_db, pg_url, pg_schema):
    monkeypatch.setenv("DETRAN_DATABASE_URL", pg_url)
    monkeypatch.setenv("DETRAN_DATABASE_SCHEMA", pg_schema)
    return detran_db


def _requested_days(schedule, instance) -> dict[str, set[dt.date]]:
    # As the daemon does: the tick's time is an instant (UTC); the schedule finds its day.
    with build_schedule_context(
        instance=instance,
        scheduled_execution_time=dt.datetime.now(dt.UTC),
        resources={"detran_db": DatabaseResource(role="detran")},
    ) as context:
        requests = list(schedule(context))
    days: dict[str, set[dt.date]] = {}
    work_days = {str(e.usuario_id): e.work_days for e in (DOCTOR, PSYCHOLOGIST)}
    for request in requests:
        # One run over a range (a box) of date × examiner partitions; the run syncs the
        # examiners with auto-sync on their work days.
        keys = agenda_partitions.get_partition_keys_in_range(
            PartitionKeyRange(
                request.tags["dagster/asset_partition_range_start"],
                request.tags["dagster/asset_partition_range_end"],
            ),
            dynamic_partitions_store=instance,
        )
        for key in keys:
            dims = key.keys_by_dimension
            day = dt.date.fromisoformat(dims["date"])
            if day.isoweekday() in work_days[dims["examiner"]]:
                days.setdefault(dims["examiner"], set()).add(day)
    return days


@pytest.mark.parametrize("instant", CALENDAR_EDGES, ids=EDGE_IDS)
def test_schedules_cover_today_to_today_plus_13_in_sao_paulo(env, instant):
    today = sao_paulo_today(instant)
    window = [today + dt.timedelta(days=i) for i in range(WINDOW_DAYS)]
    with instance_for_test() as instance, pinned_clock(on_a_utc_machine(instant)):
        instance.add_dynamic_partitions(EXAMINERS_PARTITIONS, ["1", "2"])
        near = _requested_days(detran_next_3_days, instance)
        far = _requested_days(detran_days_4_to_14, instance)
    for examiner in (DOCTOR, PSYCHOLOGIST):
        key = str(examiner.usuario_id)
        works = [d for d in window if d.isoweekday() in examiner.work_days]
        assert sorted(near.get(key, set())) == [d for d in works if d <= window[2]]
        assert sorted(far.get(key, set())) == [d for d in works if d > window[2]]


@pytest.mark.parametrize(
    "instant",
    [i for i, name in zip(CALENDAR_EDGES, EDGE_IDS, strict=True) if "sp" in name],
    ids=[name for name in EDGE_IDS if "sp" in name],
)
def test_session_check_asks_the_portal_about_sao_paulos_date(portal, settings, instant):
    client = PortalClient(
        settings, Credentials(DOCTOR.cpf, DOCTOR.password, DOCTOR.profession, DOCTOR.unit)
    )
    with pinned_clock(on_a_utc_machine(instant)):
        client.login()
        assert client.session_alive()
    assert portal.helper_references == [f"{sao_paulo_today(instant):%d/%m/%Y}"]
