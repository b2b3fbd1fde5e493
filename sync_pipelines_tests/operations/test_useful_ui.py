"""What an operator sees in the UI is useful: every asset described, grouped, typed; numbers
that plot over time on every materialization; freshness on scheduled assets; operator checks.

Everything is derived from the project's Definitions, so a source that lands later is held to
the same bar without editing this file.
"""

from __future__ import annotations

import datetime as dt

from dagster import AssetKey, DagsterEventType, FloatMetadataValue, IntMetadataValue

from sync_pipelines.definitions import defs
from sync_pipelines.operations.freshness import (
    GRACE,
    scheduled_asset_intervals,
    with_schedule_freshness,
)

GRAPH = defs.resolve_asset_graph()
ASSET_KEYS = sorted(GRAPH.materializable_asset_keys, key=lambda k: k.to_user_string())


def test_every_asset_has_a_description_an_owner_facing_group_and_kinds():
    problems = []
    for key in ASSET_KEYS:
        node = GRAPH.get(key)
        name = key.to_user_string()
        if len((node.description or "").strip()) < 30:
            problems.append(f"{name}: no useful description")
        if not node.group_name or node.group_name == "default":
            problems.append(f"{name}: in the 'default' group")
        if not node.kinds:
            problems.append(f"{name}: no kinds (the UI's storage/technology badges)")
    assert not problems, "\n".join(problems)


def test_every_materialization_carries_numbers_that_plot_over_time(demo_sandbox):
    instance = demo_sandbox.instance
    missing = []
    for key in ASSET_KEYS:
        event = instance.get_latest_materialization_event(key)
        if event is None:
            missing.append(f"{key.to_user_string()}: never materialized by the demo")
            continue
        metadata = event.asset_materialization.metadata
        numeric = [
            k for k, v in metadata.items() if isinstance(v, IntMetadataValue | FloatMetadataValue)
        ]
        if not numeric:
            missing.append(f"{key.to_user_string()}: no numeric metadata")
    assert not missing, "\n".join(missing)


def test_operator_checks_ran_in_the_demo_and_report_counts(demo_sandbox):
    instance = demo_sandbox.instance
    evaluations = {}
    for run in instance.get_runs():
        for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
            data = entry.dagster_event.event_specific_data
            evaluations[(data.asset_key.to_user_string(), data.check_name)] = data
    export_errors = evaluations[("gestao_scouter/export_errors", "no_export_errors_last_24h")]
    # the sandbox seeds leads PostgREST refuses: the check warns and counts them
    assert not export_errors.passed
    assert export_errors.metadata["errors_last_24h"].value >= 1
    by_status = export_errors.metadata["by_status"].records
    assert (
        sum(r.data["errors"] for r in by_status) == export_errors.metadata["errors_last_24h"].value
    )
    duplicates = evaluations[("tiny/ordens_servico", "no_duplicate_order_numbers")]
    assert duplicates.passed and duplicates.metadata["orders"].value > 0


def test_every_scheduled_asset_gets_a_freshness_policy_from_its_fastest_schedule():
    intervals = scheduled_asset_intervals(defs)
    assert intervals[AssetKey(["tiny", "import_failure_retries"])] == dt.timedelta(minutes=5)
    assert intervals[AssetKey(["tiny", "integrity_report"])] == dt.timedelta(days=1)
    graph = with_schedule_freshness(defs).resolve_asset_graph()
    for key, interval in intervals.items():
        policy = graph.get(key).freshness_policy
        assert policy is not None, key.to_user_string()
        assert policy.warn_window.to_timedelta() == interval + GRACE
        assert policy.fail_window.to_timedelta() == 2 * interval + GRACE
    # unscheduled assets (backfilled by hand) are not declared stale
    assert graph.get(AssetKey(["tiny", "service_orders_history"])).freshness_policy is None


def test_project_definitions_apply_the_schedule_freshness_policies():
    for key in scheduled_asset_intervals(defs):
        assert GRAPH.get(key).freshness_policy is not None, (
            f"{key.to_user_string()} has a schedule but no freshness policy: "
            "definitions.py must wrap the merged Definitions in with_schedule_freshness(...)"
        )


def test_schedule_interval_sees_weekends_and_does_not_depend_on_the_load_time():
    from sync_pipelines.operations.freshness import schedule_interval

    from ..clock import CALENDAR_EDGES, pinned_clock

    # Friday 18:30 to Monday 08:00 is the longest gap of a weekday schedule.
    weekdays = "*/30 8-18 * * 1-5"
    assert schedule_interval(weekdays, "America/Sao_Paulo") == dt.timedelta(hours=61, minutes=30)
    for instant in CALENDAR_EDGES:
        with pinned_clock(instant):
            assert schedule_interval("0 */2 * * *", "America/Sao_Paulo") == dt.timedelta(hours=2)
            assert schedule_interval(weekdays, "America/Sao_Paulo") == dt.timedelta(
                hours=61, minutes=30
            )
