"""`dg check defs` and `dg list defs` work from the repository root (a `dg` project), with the
variables of `.env.example` (the sandbox's) and an instance of their own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _example_env() -> dict[str, str]:
    env = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        env[key.strip()] = value.split("#", 1)[0].strip()
    return env


def _dg(*args: str, home: Path) -> subprocess.CompletedProcess:
    dg = Path(sys.executable).parent / "dg"
    if not dg.exists() and shutil.which("dg") is None:
        pytest.skip("dg is not installed (pip install -e '.[dev]' installs dagster-dg-cli)")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "DAGSTER_"))}
    env = {**clean, **_example_env(), "DAGSTER_HOME": str(home)}
    return subprocess.run(
        [str(dg if dg.exists() else "dg"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def home(tmp_path) -> Path:
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return tmp_path


def test_dg_check_defs_passes(home):
    result = _dg("check", "defs", home=home)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "All definitions loaded successfully" in result.stdout + result.stderr


def test_dg_list_defs_lists_every_source(home):
    result = _dg("list", "defs", "--json", home=home)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    for key in (
        "tiny/service_orders_history",
        "detran/agenda_slots",
        "hubsoft_ticket_sync",
        "gestao_scouter/leads_export",
        "local_sync/wpp_contacts",
    ):
        assert key in result.stdout, key


def test_dg_dev_serves_the_project_with_its_code_location_loaded(home):
    """`dg dev` from the repository root: the webserver answers and the project's code
    location (named by [tool.dg]) loads with every asset group."""
    import signal
    import socket
    import time

    import requests

    dg = Path(sys.executable).parent / "dg"
    if not dg.exists():
        pytest.skip("dg is not installed (pip install -e '.[dev]' installs dagster-dg-cli)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "DAGSTER_"))}
    env = {**clean, **_example_env(), "DAGSTER_HOME": str(home)}
    log = home / "dg-dev.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(dg), "dev", "--port", str(port), "--host", "127.0.0.1"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    query = (
        "query { workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
        "locationOrLoadError { __typename ... on RepositoryLocation { repositories { "
        "assetGroups { groupName } } } ... on PythonError { message } } } } } }"
    )
    loaded = None
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and loaded is None:
            assert proc.poll() is None, (
                f"dg dev exited {proc.returncode}: {log.read_text()[-3000:]}"
            )
            try:
                reply = requests.post(
                    f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=10
                ).json()
            except requests.RequestException:
                time.sleep(1)
                continue
            for entry in reply["data"]["workspaceOrError"].get("locationEntries") or []:
                outcome = entry["locationOrLoadError"] or {}
                if outcome.get("__typename") == "RepositoryLocation":
                    loaded = entry
                elif outcome.get("__typename") == "PythonError":
                    raise AssertionError(f"{entry['name']} failed to load: {outcome['message']}")
            time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert loaded is not None, f"no code location loaded: {log.read_text()[-3000:]}"
    assert loaded["name"] == "sync_pipelines"
    groups = {
        g["groupName"]
        for repo in loaded["locationOrLoadError"]["repositories"]
        for g in repo["assetGroups"]
    }
    assert {"tiny", "detran", "hubsoft", "gestao_scouter", "local_sync", "operations"} <= groups
