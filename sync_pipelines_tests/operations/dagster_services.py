"""Start Dagster's own processes (code server, webserver, daemon) for a test, and talk GraphQL.

Each process gets its own session (process group) so teardown stops it and whatever it
spawned (run workers, the code server's loader) without touching anything else on the
machine. Output goes to files under the test's folder; ``tail()`` puts it in failure messages.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCATION = "sync_pipelines"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(updates: dict[str, str]) -> dict[str, str]:
    """This process's environment without any SYNC_/DAGSTER_ setting, plus ``updates``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "DAGSTER_"))}
    env.update(updates)
    return env


@dataclass
class Services:
    workdir: Path
    env: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def code_server(self, port: int) -> None:
        self.start(
            "code-server",
            [
                str(BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(port),
                "-m", "sync_pipelines.definitions", "--location-name", LOCATION,
            ],
        )  # fmt: skip

    def webserver(self, workspace: Path, port: int) -> str:
        self.start(
            "webserver",
            [
                str(BIN / "dagster-webserver"),
                "-w",
                str(workspace),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
        )
        return f"http://127.0.0.1:{port}"

    def daemon(self, workspace: Path) -> None:
        self.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)])

    def tail(self, chars: int = 2500) -> str:
        parts = []
        for name in self.procs:
            path = self.workdir / f"{name}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {name} (last {chars} chars) ---\n{text[-chars:]}")
        return "\n".join(parts)

    def assert_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        assert not dead, f"Dagster process(es) exited early: {dead}\n{self.tail()}"

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def graphql(base_url: str, query: str, variables: dict | None = None) -> dict:
    response = requests.post(
        f"{base_url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30
    )
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


LOCATION_STATUS = """
query { workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""
RELOAD = """
mutation($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name) { __typename } }
"""


def wait_until_loaded(services: Services, base_url: str, timeout_s: float = 120) -> None:
    """Until the webserver answers and shows the code location loaded (reloading it while
    the code server was still starting)."""
    deadline = time.monotonic() + timeout_s
    last = "webserver not answering"
    while time.monotonic() < deadline:
        services.assert_alive()
        try:
            data = graphql(base_url, LOCATION_STATUS)
        except requests.RequestException as exc:
            last = str(exc)
            time.sleep(1)
            continue
        entries = data["workspaceOrError"].get("locationEntries") or []
        entry = next((e for e in entries if e["name"] == LOCATION), None)
        if entry and entry["loadStatus"] == "LOADED":
            outcome = entry["locationOrLoadError"] or {}
            if outcome.get("__typename") == "RepositoryLocation":
                return
            last = str(outcome)
            graphql(base_url, RELOAD, {"name": LOCATION})
        else:
            last = str(entry)
        time.sleep(1)
    raise AssertionError(f"code location never loaded: {last}\n{services.tail()}")


def wait_for(services: Services, what: str, probe, timeout_s: float):
    """Poll ``probe`` every second until it returns something truthy (returned), the
    Dagster processes alive throughout; after ``timeout_s`` fail with their logs' tails."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        services.assert_alive()
        found = probe()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"gave up waiting ({timeout_s:.0f} s): {what}\n{services.tail()}")


# The webserver's GraphQL mutation that queues a run (the UI's "Launch run").
LAUNCH = """
mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename
  ... on LaunchRunSuccess { run { runId status } }
  ... on PythonError { message }
  ... on InvalidSubsetError { message }
  ... on RunConfigValidationInvalid { errors { message } }
} }
"""


@dataclass
class SandboxDeployment:
    services: Services
    url: str  # the webserver
    instance: object  # the DagsterInstance every process shares
    sandbox: object  # sync_pipelines.sandbox.runner.Sandbox
    env: dict[str, str]  # the sandbox's variables (database and simulator URLs)
    grpc_port: int


@contextmanager
def sandbox_deployment(pg_url: str, workdir: Path, monkeypatch) -> Iterator[SandboxDeployment]:
    """The sandbox (simulators, seeded sources) on a scratch database, and Dagster's own
    processes as in production: code server, webserver and daemon with the repository's
    dagster.yaml, every schedule and sensor at its default status."""
    from dagster import DagsterInstance

    from sync_pipelines.sandbox.demo import apply_migrations, prepare_sources
    from sync_pipelines.sandbox.runner import Sandbox

    from ..dagster_db import scratch_database

    with scratch_database(pg_url) as db_url:
        sandbox = Sandbox(workdir / "sandbox", database_url=db_url)
        services = Services(workdir, {})
        try:
            env = sandbox.start()
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            apply_migrations(lambda msg: None)
            instance = DagsterInstance.get()
            prepare_sources(env, instance, log=lambda msg: None)
            services.env = clean_env(env)
            grpc_port, web_port = free_port(), free_port()
            workspace = yaml.safe_load((ROOT / "deploy" / "workspace.yaml").read_text())
            workspace["load_from"][0]["grpc_server"].update(host="127.0.0.1", port=grpc_port)
            workspace_file = workdir / "workspace.yaml"
            workspace_file.write_text(yaml.safe_dump(workspace))
            services.code_server(grpc_port)
            url = services.webserver(workspace_file, web_port)
            services.daemon(workspace_file)
            wait_until_loaded(services, url)
            yield SandboxDeployment(services, url, instance, sandbox, dict(env), grpc_port)
            instance.dispose()
        finally:
            services.stop()
            sandbox.stop()
            shutil.rmtree(workdir / "sandbox", ignore_errors=True)
