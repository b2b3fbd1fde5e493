"""The README's `dagster asset|job …` commands run verbatim against the sandbox and succeed.

Every such command in the README (in ``sh`` blocks and inline) is read from the file itself,
so an example that stops working fails here: the shell is pointed at a running sandbox by
``source .sandbox/env`` as the README says, a daemon runs the queued launches through
``workspace.yaml``, and every run the commands started must end SUCCESS.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .dagster_db import scratch_database

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
COMMAND = re.compile(r"^dagster (asset|job) (materialize|launch|backfill|execute) .*-[mw] ")


def readme_commands() -> list[str]:
    """Each `dagster asset|job` command of the README, continuation lines joined."""
    text = README.read_text()
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = " ".join(line.split())
            if COMMAND.match(line):
                commands.append(line)
    for inline in re.findall(r"`(dagster [^`]+)`", text):
        if COMMAND.match(inline):
            commands.append(inline)
    # A command that needs a file the reader writes first (`-c control.yaml`) is not runnable
    # as it stands; it is checked by the Gestão Scouter control tests instead.
    runnable = [c for c in commands if " -c " not in c and " --config " not in c]
    return list(dict.fromkeys(runnable))


def test_the_readme_names_no_queued_launch_by_module():
    """The daemon only knows workspace.yaml's location: a queued launch with -m fails later."""
    for command in readme_commands():
        if re.match(r"dagster job (launch|backfill) ", command):
            assert " -w workspace.yaml" in command and " -m " not in command, command
    assert any(c.startswith("dagster job backfill") for c in readme_commands())


def _env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export ") and not line.startswith("export PATH="):
            key, _, value = line[len("export ") :].partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


def test_every_readme_command_runs_against_the_sandbox_and_its_runs_succeed(pg_url, tmp_path):
    from dagster import DagsterRunStatus, RunsFilter

    commands = readme_commands()
    assert len(commands) >= 6, commands
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "DAGSTER_"))}
    # The reader's checkout, as the README assumes it: .sandbox/ and workspace.yaml in the
    # current directory (links, so the real checkout's .sandbox is left alone).
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    sandbox_dir = tmp_path / "sandbox"
    (checkout / ".sandbox").symlink_to(sandbox_dir)
    (checkout / "workspace.yaml").symlink_to(ROOT / "workspace.yaml")
    with scratch_database(pg_url) as url:
        sandbox = subprocess.Popen(
            [sys.executable, "-m", "sync_pipelines.cli", "sandbox"],
            cwd=ROOT,
            env={**clean, "SYNC_DATABASE_URL": url, "SYNC_SANDBOX_DIR": str(sandbox_dir)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        daemon = None
        try:
            first = sandbox.stdout.readline()
            assert first.startswith("sandbox running"), first + sandbox.stdout.read()
            env = {**clean, **_env_file(sandbox_dir / "env")}

            def run(command: str) -> None:
                # Verbatim, in a shell that sourced the env file as the README says (which
                # also puts this venv's `dagster` on PATH).
                done = subprocess.run(
                    ["bash", "-c", f"source .sandbox/env && {command}"],
                    cwd=checkout,
                    env=clean,
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                assert done.returncode == 0, (
                    f"{command}\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
                )

            # Commands that run in the terminal first, then the queued ones with a daemon: a
            # queued run of a tenant would otherwise hold that tenant's lock while the next
            # example syncs it, and the second sync stops (correctly) on the lock.
            queued = [c for c in commands if re.match(r"dagster job (launch|backfill) ", c)]
            for command in commands:
                if command not in queued:
                    run(command)
            daemon = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "dagster-daemon"),
                    "run",
                    "-w",
                    "workspace.yaml",
                ],
                cwd=checkout,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            for command in queued:
                run(command)
            with _instance(env) as instance:
                runs = _wait_for_command_runs(instance, DagsterRunStatus, RunsFilter)
            statuses = {r.run_id[:8]: (r.job_name, r.status.value) for r in runs}
            assert all(r.status == DagsterRunStatus.SUCCESS for r in runs), statuses
            # 4 materializations in-process + 1 launch + 2 backfill runs, at least
            assert len(runs) >= len(commands) + 1, statuses
        finally:
            if daemon is not None:
                os.killpg(daemon.pid, 15)
                daemon.wait(timeout=60)
            sandbox.send_signal(2)
            sandbox.communicate(timeout=60)


def _instance(env: dict[str, str]):
    from dagster import DagsterInstance

    saved = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "DAGSTER_POSTGRES_URL")}
    os.environ.update({k: env[k] for k in saved})
    try:
        return DagsterInstance.get()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _wait_for_command_runs(instance, DagsterRunStatus, RunsFilter, timeout: float = 300.0):
    """Every run the commands started (not the sandbox's schedules or sensors), once ended."""
    deadline = time.monotonic() + timeout
    while True:
        runs = [
            r
            for r in instance.get_runs()
            if not any(t in r.tags for t in ("dagster/schedule_name", "dagster/sensor_name"))
        ]
        if all(r.status.value in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
            return runs
        if time.monotonic() > deadline:
            pytest.fail(f"runs still going after {timeout:.0f} s: {[r.status for r in runs]}")
        time.sleep(2)
