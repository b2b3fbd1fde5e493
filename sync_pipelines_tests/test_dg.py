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
