"""Freshness policies for every asset a schedule keeps current, derived from the schedules.

An operator wants the UI to say "this should have been refreshed by now" without anyone
keeping a second list of intervals next to the cron strings. So the policy of each scheduled
asset comes from the schedules that target it: the longest gap between two ticks of its
fastest schedule, plus a grace for queueing and run time, is the warning window; two missed
ticks is the failure window. The daemon's freshness evaluation then marks the asset
degraded/failing in the catalog. An asset that sets its own policy keeps it.

Applied once to the merged Definitions (``sync_pipelines/definitions.py``):
``defs = with_schedule_freshness(Definitions.merge(...))``.
"""

import datetime as dt

from dagster import AssetKey, Definitions, FreshnessPolicy, apply_freshness_policy

# Time a scheduled run may spend queued (pools, per-examiner limit) and running.
GRACE = dt.timedelta(minutes=10)
# Ticks are sampled from a fixed Monday, so the policy does not depend on when the code
# loads: over one day (plus a tick) when the cron repeats daily, over a week otherwise.
SAMPLE_FROM = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


def schedule_interval(cron_schedule: str, timezone: str | None) -> dt.timedelta:
    """The longest gap between consecutive ticks of a cron schedule."""
    # The daemon's own tick iterator, so a cron string means exactly what the scheduler does
    # with it (time zone). Private module of the pinned Dagster release.
    from dagster._utils.schedules import cron_string_iterator

    day_of_month, month, day_of_week = cron_schedule.split()[2:5]
    daily = (day_of_month, month, day_of_week) == ("*", "*", "*")
    # Every load of the code location (each run's too) computes this: a day of ticks, not
    # thousands, keeps it cheap.
    horizon = SAMPLE_FROM + (dt.timedelta(days=1) if daily else dt.timedelta(days=8))
    ticks: list[dt.datetime] = []
    for tick in cron_string_iterator(SAMPLE_FROM.timestamp(), cron_schedule, timezone):
        ticks.append(tick)
        if tick > horizon:
            break
    gaps = [later - earlier for earlier, later in zip(ticks, ticks[1:], strict=False)]
    return max(gaps)


def policy_for_interval(interval: dt.timedelta) -> FreshnessPolicy:
    return FreshnessPolicy.time_window(
        warn_window=interval + GRACE, fail_window=2 * interval + GRACE
    )


def scheduled_asset_intervals(defs: Definitions) -> dict[AssetKey, dt.timedelta]:
    """Asset key -> interval of the fastest schedule that materializes it."""
    repository = defs.get_repository_def()
    intervals: dict[AssetKey, dt.timedelta] = {}
    for schedule in repository.schedule_defs:
        if not schedule.has_job:
            continue
        job = repository.get_job(schedule.job_name)
        keys = job.asset_layer.executable_asset_keys if job.asset_layer else set()
        if not keys:
            continue  # an op job (e.g. a purge): nothing in the catalog to keep fresh
        interval = schedule_interval(schedule.cron_schedule, schedule.execution_timezone)
        for key in keys:
            intervals[key] = min(intervals.get(key, interval), interval)
    return intervals


def with_schedule_freshness(defs: Definitions) -> Definitions:
    """``defs`` with a time-window freshness policy on every scheduled asset without one."""
    intervals = scheduled_asset_intervals(defs)
    if not intervals:
        return defs
    policies = {key: policy_for_interval(interval) for key, interval in intervals.items()}
    return defs.map_resolved_asset_specs(
        func=lambda spec: apply_freshness_policy(
            spec, policies[spec.key], overwrite_existing=False
        ),
        selection=list(policies),
    )
