"""The demo, as a new user runs it, ends green on pinned dates at a month and a year boundary.

Debian's ``faketime`` moves the clock of the whole process tree, the embedded PostgreSQL
included, so this is the demo exactly as it would run on that day (no database server is
configured: the demo starts its own). The faketime string is UTC, the machine's zone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (faketime UTC instant, São Paulo month Tiny's demo must load, a partition that must not run)
PINNED_DEMOS = {
    # 2 January, 07:00 SP: Tiny's month key 2027-01-01 is also a Gestão Scouter day key.
    "2nd-of-january": ("2027-01-02 10:00:00", "2027-01-01", None),
    # 1 January 02:30 UTC is still 31 December 23:30 in São Paulo: December is current.
    "31dec-2330-sp": ("2027-01-01 02:30:00", "2026-12-01", "2027-01-01"),
}


@pytest.mark.parametrize("when", list(PINNED_DEMOS), ids=list(PINNED_DEMOS))
def test_demo_runs_green_on_a_pinned_month_boundary(when, tmp_path):
    if shutil.which("faketime") is None:
        pytest.skip("needs Debian's faketime (apt-get install faketime; .ci/run installs it)")
    pytest.importorskip("pgserver", reason="the embedded PostgreSQL needs the pgserver package")
    instant, tiny_month, absent = PINNED_DEMOS[when]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "DAGSTER_"))}
    env.update(SYNC_SANDBOX_DIR=str(tmp_path / "sandbox"), TZ="UTC")
    result = subprocess.run(
        ["faketime", instant, sys.executable, "-m", "sync_pipelines.cli", "demo", "--no-ui"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-4000:]
    assert re.search(r"demo: \d+ run\(s\) succeeded, 0 failed", out), out[-2000:]
    # A quiet console: no Beta/Preview notices, no runtime-dir warning from the embedded DB.
    for noise in ("BetaWarning", "PreviewWarning", "RuntimeDirWarning", "XDG_RUNTIME_DIR"):
        assert noise not in out + result.stderr, noise
    # Every failure the summary shows is one the sandbox planted, and says so.
    assert "failed checks:" in out
    assert "not planted" not in out.lower(), out[out.index("rows per table:") :]
    # The run log's timestamps show the pinned clock really reached the demo's runs.
    assert instant[:10] in out
    runs = re.findall(r"run \w{8} .*partition (\S+): ok", out)
    assert tiny_month in runs, runs
    if absent is not None:
        assert absent not in runs, f"{absent} is not yet a partition in São Paulo: {runs}"
