"""`sync-pipelines migrate`: applies every role once, says what to do when nothing is configured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .dagster_db import scratch_database

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "DAGSTER_"))}
    return subprocess.run(
        [sys.executable, "-m", "sync_pipelines.cli", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrate_applies_once_then_reports_nothing_new(pg_url):
    with scratch_database(pg_url) as url:
        first = _cli("migrate", env={"SYNC_DATABASE_URL": url})
        assert first.returncode == 0, first.stderr
        assert "0001_" in first.stdout
        second = _cli("migrate", env={"SYNC_DATABASE_URL": url})
        assert second.returncode == 0, second.stderr
        assert "nothing new" in second.stdout
        assert "password" not in first.stdout.lower()


def test_migrate_without_a_database_tells_what_to_set():
    result = _cli("migrate", "--role", "control", env={})
    assert result.returncode == 2
    assert "SYNC_DATABASE_URL" in result.stderr


def test_env_file_is_read(pg_url, tmp_path):
    with scratch_database(pg_url) as url:
        env_file = tmp_path / "env"
        env_file.write_text(f"# comment\nexport SYNC_DATABASE_URL='{url}'\n")
        result = _cli("--env-file", str(env_file), "migrate", "--role", "control", env={})
        assert result.returncode == 0, result.stderr


def test_sandbox_runs_until_interrupted_and_writes_its_env_file(pg_url, tmp_path):
    import signal
    import time

    with scratch_database(pg_url) as url:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "DAGSTER_"))}
        env = {**clean, "SYNC_DATABASE_URL": url, "SYNC_SANDBOX_DIR": str(tmp_path)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "sync_pipelines.cli", "sandbox"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # Wait until it says it is up (migrations and seeding done), then press Ctrl-C.
            first_line = proc.stdout.readline()
            assert first_line.startswith("sandbox running"), first_line + proc.stderr.read()
            assert (tmp_path / "env").exists(), "the sandbox wrote no env file"
            time.sleep(0.5)
            assert proc.poll() is None, "the sandbox exited on its own"
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
        assert proc.returncode == 0, err
        assert "stopping the sandbox" in out
        assert f"export SYNC_DATABASE_URL={url}" in (tmp_path / "env").read_text().replace("'", "")
