"""The project's Definitions load, every asset is presentable, and the CLI tools accept them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import Definitions

from sync_pipelines.definitions import defs

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_load_and_validate():
    Definitions.validate_loadable(defs)
    assert defs.resolve_all_asset_keys(), "the project defines no asset"


def test_every_asset_has_a_group_a_description_and_kinds():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name and node.group_name != "default", f"{key} has no group"
        assert node.description, f"{key} has no description"
        assert node.kinds, f"{key} has no kinds"


def test_database_resources_exist_for_every_role():
    from sync_pipelines.lib.db import ROLES

    resources = defs.resources or {}
    for role in ROLES:
        assert f"{role}_db" in resources


def test_dagster_cli_loads_the_workspace(tmp_path):
    # Outside the repo root: there the CLI would pick up dagster.yaml, which needs a database.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    # Loading needs a database variable (never connected to by `validate`).
    env.setdefault("SYNC_DATABASE_URL", "postgresql+psycopg2://validate@127.0.0.1:9/none")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "definitions",
            "validate",
            "-w",
            str(ROOT / "workspace.yaml"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_job_runs_its_steps_in_its_run_worker():
    # A process per step loads the whole code location again for each step (seconds of CPU
    # for steps of milliseconds); README "Dagster overhead per run". The implicit job of a UI
    # launch counts too.
    repository = defs.get_repository_def()
    executors = {job.name: job.executor_def.name for job in repository.get_all_jobs()}
    assert len(executors) > 1
    assert set(executors.values()) == {"in_process"}, executors


def _pool_probe_job():
    """A one-step job on the DETRAN portal's pool with the executor of the project's jobs."""
    from dagster import asset, define_asset_job

    executor = defs.get_repository_def().get_job("detran_agenda_sync").executor_def

    @asset(pool="detran_portal")
    def pool_probe():
        return 1

    probe_job = define_asset_job("pool_probe_job", selection=[pool_probe])
    return Definitions(assets=[pool_probe], jobs=[probe_job], executor=executor).resolve_job_def(
        "pool_probe_job"
    )


def test_pools_still_hold_steps_back_with_the_projects_executor(tmp_path):
    # The pools of dagster.yaml (granularity: op) limit steps, and the executor is what claims
    # the slots: a step must wait while another run holds its pool's only slot.
    import threading
    import time

    from dagster import DagsterEventType, execute_job, instance_for_test, reconstructable

    pools = {"concurrency": {"pools": {"granularity": "op", "default_limit": 1}}}
    with instance_for_test(overrides=pools, temp_dir=str(tmp_path)) as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots("detran_portal", 1)
        assert storage.claim_concurrency_slot("detran_portal", "other-run", "step").is_claimed
        freed: list[float] = []

        def free_the_slot():
            time.sleep(1)  # any delay: the order of events is asserted, not a duration
            freed.append(time.time())
            storage.free_concurrency_slots_for_run("other-run")

        threading.Thread(target=free_the_slot, daemon=True).start()
        with execute_job(reconstructable(_pool_probe_job), instance=instance) as result:
            assert result.success
            started = instance.all_logs(result.run_id, of_type=DagsterEventType.STEP_START)
        assert freed and started[0].timestamp >= freed[0]
