"""The demo's plan holds on every calendar edge: each run's assets share one partitions
definition and the partition exists in it (a month key ``2026-12-01`` is also a day key)."""

from __future__ import annotations

import datetime as dt

import pytest
from dagster import DagsterInstance

from sync_pipelines.sandbox.demo import _materialization_plan
from sync_pipelines.sandbox.parts import PARTS

from .clock import CALENDAR_EDGES, EDGE_IDS, pinned_clock, sao_paulo_today


@pytest.fixture(scope="module")
def defs():
    from sync_pipelines.definitions import defs

    return defs


@pytest.mark.parametrize("instant", CALENDAR_EDGES, ids=EDGE_IDS)
def test_demo_plan_groups_assets_by_partitions_definition_on_every_edge(defs, instant):
    with pinned_clock(instant), DagsterInstance.ephemeral() as instance:
        for part in PARTS:
            if part.dynamic_partitions is not None:
                for name, keys in part.dynamic_partitions({}).items():
                    instance.add_dynamic_partitions(name, keys)
        plan = _materialization_plan(defs, instance)
        graph = defs.resolve_asset_graph()
        partitioned = [(keys, pk) for keys, pk in plan if pk is not None]
        assert partitioned, "the demo materializes partitioned assets"
        for keys, pk in partitioned:
            definitions = {graph.get(k).partitions_def for k in keys}
            assert len(definitions) == 1, f"{pk}: {keys} mix partitions definitions"
            (partitions_def,) = definitions
            existing = partitions_def.get_partition_keys(dynamic_partitions_store=instance)
            assert pk in existing, (
                f"{pk} is not a partition of {[k.to_user_string() for k in keys]}"
            )
            # the job the demo builds for this group resolves (the crash of 2026-12-03 was here)
            defs.resolve_implicit_job_def_def_for_assets(keys)
        # Tiny's demo includes the São Paulo month that is current at the pinned instant.
        month = sao_paulo_today(instant).replace(day=1).isoformat()
        tiny = [pk for keys, pk in partitioned if any(k.path[0] == "tiny" for k in keys)]
        assert month in tiny


def test_month_key_and_day_key_equal_strings_run_separately(defs):
    """On the 1st of a month Tiny's month key and a Gestão Scouter day key are one string."""
    instant = dt.datetime(2026, 12, 2, 10, tzinfo=dt.timezone(dt.timedelta(hours=-3)))
    with pinned_clock(instant), DagsterInstance.ephemeral() as instance:
        plan = _materialization_plan(defs, instance)
    groups = [keys for keys, pk in plan if pk == "2026-12-01"]
    sources = sorted({k.path[0] for keys in groups for k in keys})
    assert sources == ["gestao_scouter", "tiny"]
    assert len(groups) == 2
