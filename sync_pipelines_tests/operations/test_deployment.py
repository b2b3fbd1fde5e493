"""The production shape, locally: code server, webserver and daemon as separate processes.

No Docker engine or cluster runs here, so this is the proof that deploy/ describes a working
deployment: the code location is served over gRPC by ``dagster code-server start`` (what the
image runs), the webserver and the daemon only know it through a ``grpc_server:`` workspace,
all three share the PostgreSQL instance of the repository's dagster.yaml, and a run submitted
through the webserver's GraphQL API is queued, dequeued by the daemon and finished by a run
worker the code server launched.
"""

from __future__ import annotations

import shutil
import time

import pytest
import sqlalchemy as sa
import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

from sync_pipelines.lib.db import normalize_url

from ..dagster_db import scratch_database
from .dagster_services import (
    BIN,
    LAUNCH,
    LOCATION,
    ROOT,
    Services,
    clean_env,
    free_port,
    graphql,
    wait_until_loaded,
)

RUN_STATUS = """
query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }
"""
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


@pytest.fixture
def distributed(pg_url, tmp_path):
    with scratch_database(pg_url) as db_url:
        home = tmp_path / "dagster_home"
        home.mkdir()
        shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
        env = clean_env(
            {"DAGSTER_HOME": str(home), "DAGSTER_POSTGRES_URL": db_url, "SYNC_DATABASE_URL": db_url}
        )
        env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
        grpc_port, web_port = free_port(), free_port()
        # deploy/workspace.yaml with the code server's address on this machine.
        workspace = yaml.safe_load((ROOT / "deploy" / "workspace.yaml").read_text())
        workspace["load_from"][0]["grpc_server"].update(host="127.0.0.1", port=grpc_port)
        workspace_file = tmp_path / "workspace.yaml"
        workspace_file.write_text(yaml.safe_dump(workspace))
        services = Services(tmp_path, env)
        try:
            # As the image starts it: deploy/entrypoint.sh migrates and sets the pool limits,
            # then execs the code server (the rollout step of deploy/values.yaml).
            services.start(
                "code-server",
                [
                    "sh", str(ROOT / "deploy" / "entrypoint.sh"),
                    "dagster", "code-server", "start", "-h", "127.0.0.1", "-p", str(grpc_port),
                    "-m", "sync_pipelines.definitions", "--location-name", LOCATION,
                ],
            )  # fmt: skip
            url = services.webserver(workspace_file, web_port)
            services.daemon(workspace_file)
            wait_until_loaded(services, url)
            yield services, url, db_url, home
        finally:
            services.stop()


def test_run_submitted_to_webserver_is_dequeued_by_daemon_and_succeeds(distributed, monkeypatch):
    services, url, db_url, home = distributed
    # The rollout step ran before the code server served: every role's migrations are in
    # and the pool limits of sync_pipelines/pools.py are in the instance, before any run.
    from sync_pipelines.pools import POOL_LIMITS

    engine = sa.create_engine(normalize_url(db_url))
    with engine.connect() as conn:
        ledger_roles = set(
            conn.execute(sa.text("SELECT DISTINCT role FROM sync_control.schema_migrations"))
            .scalars()
            .all()
        )
    engine.dispose()
    assert "control" in ledger_roles
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", db_url)
    with DagsterInstance.get() as instance:
        assert instance.get_run_records() == []
        for pool, limit in POOL_LIMITS.items():
            assert instance.event_log_storage.get_concurrency_info(pool).slot_count == limit
    params = {
        "selector": {
            "repositoryLocationName": LOCATION,
            "repositoryName": "__repository__",
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": ["database_schema"]}],
        },
        "runConfigData": {},
        "executionMetadata": {"tags": [{"key": "submitted_by", "value": "test_deployment"}]},
    }
    launched = graphql(url, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    # The webserver only queues it; starting it is the daemon's job (queued run coordinator).
    assert launched["run"]["status"] in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")

    deadline = time.monotonic() + 150
    status = launched["run"]["status"]
    while status not in FINISHED and time.monotonic() < deadline:
        services.assert_alive()
        time.sleep(1)
        status = graphql(url, RUN_STATUS, {"id": run_id})["runOrError"]["status"]
    assert status == "SUCCESS", f"run {run_id} ended {status}\n{services.tail()}"

    # The shared PostgreSQL instance holds the whole story: queued by the webserver, launched
    # by the daemon, materialized by the run worker the code server started.
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", db_url)
    with DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        assert run.status == DagsterRunStatus.SUCCESS
        assert run.tags["submitted_by"] == "test_deployment"
        types = [e.dagster_event.event_type for e in instance.all_logs(run_id) if e.dagster_event]
        # ENQUEUED then STARTING: only the daemon's queued-run coordinator launches a queued run.
        for expected in (
            DagsterEventType.RUN_ENQUEUED,
            DagsterEventType.RUN_STARTING,
            DagsterEventType.RUN_START,
            DagsterEventType.ASSET_MATERIALIZATION,
            DagsterEventType.RUN_SUCCESS,
        ):
            assert expected in types, f"{expected} missing from {types}"
        assert types.index(DagsterEventType.RUN_ENQUEUED) < types.index(
            DagsterEventType.RUN_STARTING
        )
        assert "QUEUED_RUN_COORDINATOR" in instance.get_daemon_heartbeats()
        materialized = [
            e.dagster_event.asset_key.to_user_string()
            for e in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
        ]
        assert materialized == ["database_schema"]

    # The run worker got the code location's environment: the migrations reached the database.
    engine = sa.create_engine(normalize_url(db_url))
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names(schema="sync_control"))
    engine.dispose()
    assert "schema_migrations" in tables
