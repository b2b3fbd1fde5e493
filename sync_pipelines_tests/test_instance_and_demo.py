"""dagster.yaml gives a PostgreSQL-backed instance with queues, pools, retries and monitoring,
and the demo runs end to end on it (against a server URL, and on the embedded PostgreSQL);
the demo and the sandbox stop everything they started, even after an earlier one was killed."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests
import sqlalchemy as sa
from dagster import DagsterInstance, materialize

from sync_pipelines.lib.db import normalize_url
from sync_pipelines.operations.defs import database_schema
from sync_pipelines.pools import POOL_LIMITS

from .dagster_db import scratch_database
from .operations.dagster_services import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project_db(pg_url):
    with scratch_database(pg_url) as url:
        yield url


@pytest.fixture
def instance(project_db, tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", project_db)
    monkeypatch.setenv("SYNC_DATABASE_URL", project_db)
    with DagsterInstance.get() as inst:
        yield inst


def test_instance_uses_postgres_queue_retries_and_monitoring(instance):
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert instance.run_monitoring_enabled
    # The worker health check is what lets monitoring fail a run whose worker died.
    assert type(instance.run_launcher).__name__ == "LocalRunLauncher"
    assert instance.run_launcher.supports_check_run_worker_health
    assert instance.run_monitoring_poll_interval_seconds <= 60
    assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0


def test_pool_limits_are_set_on_the_instance(instance):
    from sync_pipelines.sandbox.demo import set_pool_limits

    set_pool_limits(instance)
    for pool, limit in POOL_LIMITS.items():
        assert instance.event_log_storage.get_concurrency_info(pool).slot_count == limit


def test_schema_asset_migrates_every_role_and_reports_it(instance, project_db):
    from sync_pipelines.lib.db import ROLES
    from sync_pipelines.resources import DatabaseResource

    dbs = {f"{role}_db": DatabaseResource.for_role(role) for role in ROLES}
    result = materialize([database_schema], instance=instance, resources=dbs)
    assert result.success
    mat = result.asset_materializations_for_node("database_schema")[0]
    assert mat.metadata["migrations_applied"].value >= 1
    # one row per role the project migrates, as table metadata (sortable in the UI)
    by_role = {r.data["role"]: r.data for r in mat.metadata["migrations"].records}
    assert set(by_role) == {"control", "tiny", "detran", "hubsoft", "tabuladormax"}
    assert (
        sum(r["applied_now"] for r in by_role.values()) == mat.metadata["migrations_applied"].value
    )
    engine = sa.create_engine(normalize_url(project_db))
    with engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names(schema="sync_control")
    engine.dispose()
    assert {"schema_migrations", "rate_limit_buckets", "sync_checkpoints"} <= set(tables)
    # the run and its metadata are in the PostgreSQL event log
    again = materialize([database_schema], instance=instance, resources=dbs)
    assert (
        again.asset_materializations_for_node("database_schema")[0]
        .metadata["migrations_applied"]
        .value
        == 0
    )
    assert len(instance.get_runs()) == 2


def _run_demo(env_updates: dict[str, str], sandbox_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "DAGSTER_"))}
    env.update(env_updates, SYNC_SANDBOX_DIR=str(sandbox_dir))
    return subprocess.run(
        [sys.executable, "-m", "sync_pipelines.cli", "demo", "--no-ui"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def demo_on_a_server(pg_url, tmp_path_factory):
    """One demo against a scratch database on the test server, shared by the tests that
    look at what it left (a demo takes a minute)."""
    sandbox_dir = tmp_path_factory.mktemp("demo") / "sandbox"
    with scratch_database(pg_url) as url:
        result = _run_demo({"SYNC_DATABASE_URL": url}, sandbox_dir)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        yield url, sandbox_dir, result


def test_demo_runs_against_a_configured_database(demo_on_a_server):
    _, sandbox_dir, result = demo_on_a_server
    assert "rows per table:" in result.stdout
    assert "0 failed" in result.stdout
    env_file = (sandbox_dir / "env").read_text()
    assert "export SYNC_DATABASE_URL=" in env_file and "export DAGSTER_HOME=" in env_file


def _stamped_rows(url: str) -> dict[str, dict[tuple, tuple[str | None, str]]]:
    """Every table with a ``sync_run_id`` column: primary key -> (run id, row version)."""
    engine = sa.create_engine(normalize_url(url))
    found: dict[str, dict[tuple, tuple[str | None, str]]] = {}
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                sa.text(
                    "SELECT table_schema, table_name FROM information_schema.columns "
                    "WHERE column_name = 'sync_run_id' AND table_schema <> 'public'"
                )
            ).all()
            for schema, table in tables:
                name = f'"{schema}"."{table}"'
                key = conn.execute(
                    sa.text(
                        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON "
                        "a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                        "WHERE i.indrelid = CAST(:t AS regclass) AND i.indisprimary"
                    ),
                    {"t": name},
                ).scalars()
                rows = conn.execute(
                    sa.text(f"SELECT {', '.join(key)}, sync_run_id, xmin::text FROM {name}")
                )
                found[f"{schema}.{table}"] = {tuple(r[:-2]): (r[-2], r[-1]) for r in rows}
    finally:
        engine.dispose()
    return found


# What the sandbox's syncs write; a table missing here would be a table nobody checks.
STAMPED_TABLES = {
    "tiny.ordens_servico",
    "tiny.ordem_status_history",
    "tiny.import_failures",
    "detran.agenda_slots",
    "detran.agenda_sync_runs",
    "hubsoft.support_tickets",
    "hubsoft.hubsoft_protocol_map",
    "hubsoft.hubsoft_sync_runs",
    "tabuladormax.gestao_scouter_export_errors",
}


def test_every_row_the_demo_wrote_names_a_run_of_the_instance_and_a_rerun_keeps_them(
    demo_on_a_server, monkeypatch
):
    url, sandbox_dir, _ = demo_on_a_server
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", url)
    first = _stamped_rows(url)
    assert set(first) == STAMPED_TABLES  # TabuladorMax's leads came after the migration
    for table in STAMPED_TABLES:
        assert first[table], f"the demo wrote no row into {table}"
        # Every row of these tables in the sandbox was written by a sync run.
        unstamped = [key for key, (run, _) in first[table].items() if run is None]
        assert unstamped == [], f"{table}: rows without a run id: {unstamped[:5]}"
    with DagsterInstance.from_config(str(sandbox_dir / "dagster_home")) as instance:
        run_ids = {run for rows in first.values() for run, _ in rows.values()}
        runs = {run_id: instance.get_run_by_id(run_id) for run_id in run_ids}
        assert [r for r, run in runs.items() if run is None] == []
        assert {run.status.value for run in runs.values()} == {"SUCCESS"}

        # The same demo again: the sandbox's data is the same, so what the syncs find is
        # what they wrote, and the rows (row versions included) keep their run ids.
        earlier_runs = {run.run_id for run in instance.get_runs()}
        again = _run_demo({"SYNC_DATABASE_URL": url}, sandbox_dir)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        second = _stamped_rows(url)
        for table in (
            "tiny.ordens_servico",
            "tiny.ordem_status_history",
            "detran.agenda_slots",
            "hubsoft.hubsoft_protocol_map",
        ):
            assert second[table] == first[table], f"{table} was rewritten by a no-change run"
        # The status sync records each check in synced_at (a rewrite), not in the run id.
        assert {k: run for k, (run, _) in second["hubsoft.support_tickets"].items()} == {
            k: run for k, (run, _) in first["hubsoft.support_tickets"].items()
        }
        # What the second demo did write (run logs, refused leads of its new export job,
        # failed imports attempted again) names one of its own runs.
        for table in STAMPED_TABLES - {"hubsoft.support_tickets"}:
            for key, (run, version) in second[table].items():
                if first[table].get(key, (None, None))[1] != version:
                    assert run is not None and run not in earlier_runs, (table, key)
                    assert instance.get_run_by_id(run) is not None, (table, key)


def test_demo_starts_an_embedded_postgres_when_no_database_is_set(tmp_path):
    pytest.importorskip("pgserver", reason="the embedded PostgreSQL needs the pgserver package")
    result = _run_demo({}, tmp_path / "sandbox")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "(embedded" in result.stdout
    assert "0 failed" in result.stdout


# ---- start and stop: nothing of a demo or a sandbox outlives it -----------------------------


def _processes_of(sandbox_dir: Path) -> list[str]:
    """Processes of a sandbox: PostgreSQL names its data folder on its command line; the demo's
    Dagster processes inherit SYNC_SANDBOX_DIR."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            mine = str(sandbox_dir) in cmdline
            if not mine and proc.pid != os.getpid():
                mine = proc.environ().get("SYNC_SANDBOX_DIR") == str(sandbox_dir)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if mine and proc.status() != psutil.STATUS_ZOMBIE:
            found.append(f"{proc.pid} {cmdline[:160]}")
    return found


def _start(args: list[str], sandbox_dir: Path, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "DAGSTER_"))}
    env["SYNC_SANDBOX_DIR"] = str(sandbox_dir)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "sync_pipelines.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait_until(proc: subprocess.Popen, log: Path, ready, what: str) -> None:
    deadline = time.monotonic() + 300  # a generous polling deadline for a loaded machine
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited {proc.returncode} before {what}:\n{log.read_text()}"
        if ready():
            return
        time.sleep(1)
    raise AssertionError(f"gave up waiting for {what}:\n{log.read_text()[-3000:]}")


def _ui_answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/server_info", timeout=5).ok
    except requests.RequestException:
        return False


def _stopped(proc: subprocess.Popen, sig: int, log: Path) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"did not stop on signal {sig}:\n{log.read_text()[-3000:]}") from None


def test_demo_ui_killed_then_restarted_then_interrupted_leaves_nothing_running(tmp_path):
    pytest.importorskip("pgserver", reason="the embedded PostgreSQL needs the pgserver package")
    sandbox_dir, port = tmp_path / "sandbox", free_port()
    args = ["demo", "--no-runs", "--port", str(port)]
    log1, log2 = tmp_path / "demo1.log", tmp_path / "demo2.log"
    first = _start(args, sandbox_dir, log1)
    _wait_until(first, log1, lambda: _ui_answers(port), "the first demo's UI")
    first.kill()  # SIGKILL: no clean-up at all
    first.wait()
    left = _processes_of(sandbox_dir)
    # What a killed demo leaves behind: its PostgreSQL and its Dagster processes (UI included).
    assert any("postgres" in p for p in left) and any("dagster" in p for p in left), left
    assert _ui_answers(port)

    second = _start(args, sandbox_dir, log2)
    try:
        # Its own webserver: the leftover one held the port and must have been stopped first.
        _wait_until(
            second,
            log2,
            lambda: "Serving dagster-webserver" in log2.read_text() and _ui_answers(port),
            "the second demo's UI",
        )
        assert _stopped(second, signal.SIGINT, log2) == 0
    finally:
        second.kill()
    assert "stopping the demo" in log2.read_text()
    assert _processes_of(sandbox_dir) == []
    assert not _ui_answers(port)


def test_sandbox_killed_then_restarted_then_terminated_leaves_nothing_running(tmp_path):
    pytest.importorskip("pgserver", reason="the embedded PostgreSQL needs the pgserver package")
    sandbox_dir, log1, log2 = tmp_path / "sandbox", tmp_path / "one.log", tmp_path / "two.log"
    first = _start(["sandbox"], sandbox_dir, log1)
    _wait_until(first, log1, lambda: "sandbox running" in log1.read_text(), "the first sandbox")
    first.kill()
    first.wait()
    assert any("postgres" in p for p in _processes_of(sandbox_dir))

    second = _start(["sandbox"], sandbox_dir, log2)
    try:
        _wait_until(second, log2, lambda: "sandbox running" in log2.read_text(), "the second one")
        assert _stopped(second, signal.SIGTERM, log2) == 0
    finally:
        second.kill()
    assert "stopping the sandbox" in log2.read_text()
    assert _processes_of(sandbox_dir) == []


def test_demo_with_a_busy_port_says_so_and_starts_nothing(tmp_path):
    sandbox_dir, log = tmp_path / "sandbox", tmp_path / "demo.log"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _start(["demo", "--port", str(port)], sandbox_dir, log)
        try:
            assert proc.wait(timeout=120) == 2
        finally:
            if proc.poll() is None:  # it carried on: stop it and what it started
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=120)
    output = log.read_text()
    assert f"port {port} on 127.0.0.1 is already in use" in output
    assert "make demo PORT=" in output and "--port" in output
    assert not (sandbox_dir / "pg").exists()
    assert not (sandbox_dir / "env").exists()
