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
