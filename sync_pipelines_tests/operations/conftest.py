"""One demo of the whole project for the operations tests (leak scan, UI checks, browser).

The demo's own functions run once for this package: the sandbox (simulators, credentials,
personal data) on a scratch PostgreSQL database, the migrations, every source's seed data and
partitions, and one materialization of every asset into a real PostgreSQL-backed instance.
The process environment is the sandbox's only while this package runs (package scope), so
the other test packages never see its variables.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..dagster_db import scratch_database

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DemoSandbox:
    env: dict[str, str]  # the sandbox's variables (secrets included)
    database_url: str
    dagster_home: Path
    instance: object  # DagsterInstance
    outcomes: dict[str, int]
    log: list[str]


@pytest.fixture(scope="package")
def demo_sandbox(pg_url, tmp_path_factory) -> Iterator[DemoSandbox]:
    from dagster import DagsterInstance

    from sync_pipelines.definitions import build_defs
    from sync_pipelines.sandbox import demo
    from sync_pipelines.sandbox.runner import Sandbox

    root = tmp_path_factory.mktemp("operations-sandbox")
    saved = dict(os.environ)
    log: list[str] = []
    with scratch_database(pg_url) as db_url:
        os.environ["SYNC_SANDBOX_DIR"] = str(root)
        sandbox = Sandbox(root, database_url=db_url)
        try:
            env = sandbox.start()
            os.environ.update(env)
            demo.apply_migrations(log.append)
            with DagsterInstance.get() as instance:
                demo.set_pool_limits(instance)
                demo.prepare_sources(env, instance, log.append)
                outcomes = demo.materialize_everything(build_defs(), instance, log.append)
                yield DemoSandbox(
                    env=env,
                    database_url=db_url,
                    dagster_home=Path(env["DAGSTER_HOME"]),
                    instance=instance,
                    outcomes=dict(outcomes),
                    log=log,
                )
        finally:
            sandbox.stop()
            os.environ.clear()
            os.environ.update(saved)
            shutil.rmtree(root, ignore_errors=True)
