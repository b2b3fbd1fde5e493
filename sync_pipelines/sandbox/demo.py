"""The demo: sandbox up, schema migrated, every asset materialized once, a summary printed.

Runs go through the real Dagster instance of ``.sandbox/dagster_home`` (PostgreSQL storage,
the project's dagster.yaml), so everything the demo did is visible in the UI afterwards.
Partitioned assets materialize the small representative set of partitions each source lists
in its ``SandboxPart.demo_partitions``; an asset without an entry gets its latest partition.
"""

from __future__ import annotations

import os
import sys
from collections import Counter

import sqlalchemy as sa

from ..lib.db import ROLES, database_for_role
from ..lib.migrations import migrate, migration_roles
from ..pools import POOL_LIMITS
from .parts import PARTS
from .runner import PROJECT_ROOT, PortInUse, Sandbox, check_port_free, interrupts_ignored

# Step-level DEBUG events stay in the run's log in the UI; the terminal shows INFO and up.
QUIET_RUN = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def apply_migrations(log=print) -> None:
    for role in migration_roles():
        if role not in ROLES:
            continue
        db = database_for_role(role, os.environ)
        try:
            report = migrate(db, role)
        finally:
            db.dispose()
        log(
            f"  {role:<14} {len(report.applied)} applied, {len(report.already_applied)} already there"
        )


def set_pool_limits(instance) -> None:
    for pool, limit in POOL_LIMITS.items():
        instance.event_log_storage.set_concurrency_slots(pool, limit)


def prepare_sources(env, instance, log=print) -> None:
    """Seed every source's sandbox data and register its dynamic partitions."""
    for part in PARTS:
        if part.prepare is not None:
            part.prepare(env)
        if part.dynamic_partitions is not None:
            for name, keys in part.dynamic_partitions(env).items():
                instance.add_dynamic_partitions(name, keys)
                log(f"  {part.name}: partitions {name} = {', '.join(keys)}")


def _demo_partitions() -> dict[str, list[str]]:
    merged: dict[str, list[str]] = {}
    for part in PARTS:
        merged.update(part.demo_partitions())
    return merged


def _materialization_plan(defs, instance) -> list[tuple[list, str | None]]:
    """(asset keys, partition key) pairs: unpartitioned assets first, then each partition.

    Assets share a run only when they share a partitions definition *and* a key: a month
    key ``2026-12-01`` is the same string as a day key, but not the same partition.
    """
    graph = defs.resolve_asset_graph()
    plan: list[tuple[list, str | None]] = []
    unpartitioned = sorted(graph.unpartitioned_asset_keys, key=lambda k: k.to_user_string())
    unpartitioned = [k for k in unpartitioned if graph.get(k).is_materializable]
    if unpartitioned:
        plan.append((unpartitioned, None))
    # Partitions definitions compare by value; a list keeps them without needing a hash.
    groups: list[tuple[object, str, list]] = []
    wanted = _demo_partitions()
    for key in sorted(graph.materializable_asset_keys, key=lambda k: k.to_user_string()):
        node = graph.get(key)
        if node.partitions_def is None:
            continue
        keys = wanted.get(key.to_user_string())
        if keys is None:
            existing = node.partitions_def.get_partition_keys(dynamic_partitions_store=instance)
            keys = existing[-1:] if existing else []
        for pk in keys:
            for partitions_def, group_key, members in groups:
                if group_key == pk and partitions_def == node.partitions_def:
                    members.append(key)
                    break
            else:
                groups.append((node.partitions_def, pk, [key]))
    for _, pk, members in sorted(groups, key=lambda g: (g[1], g[2][0].to_user_string())):
        plan.append((members, pk))
    return plan


def materialize_everything(defs, instance, log=print) -> Counter:
    outcomes: Counter = Counter()
    for keys, partition in _materialization_plan(defs, instance):
        job = defs.resolve_implicit_job_def_def_for_assets(keys)
        label = f"{len(keys)} asset(s)" + (f", partition {partition}" if partition else "")
        result = job.execute_in_process(
            run_config=QUIET_RUN,
            instance=instance,
            asset_selection=keys,
            partition_key=partition,
            raise_on_error=False,
        )
        outcomes["success" if result.success else "failure"] += 1
        log(f"  run {result.run_id[:8]} {label}: {'ok' if result.success else 'FAILED'}")
    # The checks on tables judge what every sync above wrote (in production each runs in
    # the job that writes its table; the plan's implicit jobs select assets only).
    result = defs.resolve_job_def("table_checks").execute_in_process(
        run_config=QUIET_RUN, instance=instance, raise_on_error=False
    )
    outcomes["success" if result.success else "failure"] += 1
    log(f"  run {result.run_id[:8]} checks on the tables: {'ok' if result.success else 'FAILED'}")
    return outcomes


def _planted() -> dict[str, str]:
    merged: dict[str, str] = {}
    for part in PARTS:
        merged.update(part.planted)
    return merged


def _failed_checks(instance) -> list[str]:
    """``asset/key:check`` of every check whose latest evaluation failed."""
    from dagster import DagsterEventType, EventRecordsFilter

    latest: dict[str, bool] = {}
    records = instance.get_event_records(
        EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION), ascending=True
    )
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
        latest[name] = evaluation.passed
    return sorted(name for name, passed in latest.items() if not passed)


def summary_lines(instance) -> list[str]:
    """Rows per table, the runs and the failed checks, each planted failure with its reason."""
    planted = _planted()
    lines = ["rows per table:"]
    for role in ROLES:
        try:
            db = database_for_role(role, os.environ)
        except Exception:  # noqa: BLE001 - an unconfigured role is simply not shown
            continue
        try:
            with db.connect() as conn:
                tables = sa.inspect(conn).get_table_names(schema=db.schema)
                for table in sorted(tables):
                    count = conn.execute(
                        sa.text(f"SELECT count(*) FROM {db.table(table)}")
                    ).scalar()
                    name = f"{role}.{table}"
                    marker = ""
                    if count and name in planted:
                        marker = f"  <- planted: {planted[name]}"
                    elif count and any(w in table for w in ("failure", "error")):
                        marker = "  <- failures: not planted by the sandbox, look at them"
                    lines.append(f"  {name:<48} {count:>8}{marker}")
        finally:
            db.dispose()
    statuses = Counter(run.status.value for run in instance.get_runs())
    lines.append(
        "dagster runs: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(statuses.items()))
    )
    failed = _failed_checks(instance)
    lines.append(f"failed checks: {len(failed)}" + (" (red in the UI):" if failed else ""))
    for name in failed:
        why = planted.get(name, "NOT planted by the sandbox: open the check in the UI")
        lines.append(f"  {name}: {why}")
    return lines


def run_demo(*, ui: bool, host: str = "127.0.0.1", port: int = 3000, runs: bool = True) -> int:
    """The demo; ``runs=False`` serves the UI on the sandbox as an earlier demo left it.

    Ctrl-C (SIGINT) and SIGTERM (the CLI turns it into the same interrupt) stop everything it
    started, whatever it is doing: ``dagster dev`` with its webserver, daemon and code
    servers, the simulators and the embedded PostgreSQL. Leftovers of a demo that was killed
    are stopped first.
    """
    sandbox = Sandbox()
    try:
        from dagster import DagsterInstance

        # Leftovers first: a killed demo's `dagster dev` may still hold the port.
        sandbox.clear_leftovers()
        if ui:
            check_port_free(host, port)
        print("starting the sandbox…")
        env = sandbox.start()
        os.environ.update(env)
        # Imported only now: the definitions need the sandbox's database variables to load.
        from ..definitions import build_defs

        for line in sandbox.describe():
            print(f"  {line}")
        print("applying migrations…")
        apply_migrations(lambda msg: print(msg))
        instance = DagsterInstance.get()
        set_pool_limits(instance)
        print("preparing source data…")
        prepare_sources(env, instance)
        failed = 0
        if runs:
            print("materializing every asset once…")
            outcomes = materialize_everything(build_defs(), instance)
            print()
            for line in summary_lines(instance):
                print(line)
            failed = outcomes["failure"]
            print(f"\ndemo: {outcomes['success']} run(s) succeeded, {failed} failed")
            if failed:
                print("open the UI (make demo) and look at the failed runs' logs for the reason.")
        if not ui:
            return 1 if failed else 0
        print(f"\nDagster UI on http://{host}:{port} (webserver + daemon; Ctrl-C stops everything)")
        proc = sandbox.spawn(
            [
                sys.executable,
                "-m",
                "dagster",
                "dev",
                "-w",
                str(PROJECT_ROOT / "workspace.yaml"),
                "-h",
                host,
                "-p",
                str(port),
            ],
            cwd=PROJECT_ROOT,
            env={**os.environ},
        )
        return proc.wait()
    except PortInUse as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nstopping the demo…")
        return 0
    finally:
        with interrupts_ignored():
            sandbox.stop()
