"""Bring the whole sandbox up: a PostgreSQL, every simulator, a Dagster home, and .sandbox/env.

With ``SYNC_DATABASE_URL`` set the sandbox uses that database; otherwise it starts the
embedded PostgreSQL in ``.sandbox/pg``. Dagster's own storage lives in the same database
(its tables in ``public``, each sync role in a schema of its own).

Everything the sandbox starts, it stops: the simulators (threads of this process), the
embedded PostgreSQL, and the processes started with ``spawn`` (``dagster dev`` and what it
starts), each in a process group of its own, recorded in ``.sandbox/processes.json``. A
sandbox killed without a chance to clean up (SIGKILL, a closed terminal) leaves that record
behind, and the next ``start`` stops those leftovers before anything else (``clear_leftovers``).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
from sqlalchemy.engine import make_url

from ..lib.db import normalize_url
from .embedded_pg import EmbeddedPostgres
from .parts import PARTS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SANDBOX_SEED = 20241105
# How long a process group gets to stop after SIGINT before it is killed.
STOP_GRACE_SECONDS = 30


class PortInUse(RuntimeError):
    """The UI's port is taken: say which and how to choose another."""


def check_port_free(host: str, port: int) -> None:
    """Raise ``PortInUse`` when nothing could listen on ``host:port`` (checked before the demo
    starts anything, so a busy port is an error instead of a UI that never comes up)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # What the webserver does too: a closed socket in TIME_WAIT does not count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortInUse(
                f"port {port} on {host} is already in use ({exc.strerror}); stop what uses it "
                f"or choose another port: make demo PORT={port + 1}  (or: sync-pipelines demo "
                f"--port {port + 1})"
            ) from exc


@contextmanager
def interrupts_ignored() -> Iterator[None]:
    """While stopping: a second Ctrl-C must not cut the clean-up short (leaving PostgreSQL)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process_group(pgid: int, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGINT to the group (what Ctrl-C in a terminal does), then SIGKILL after ``grace``."""
    try:
        os.killpg(pgid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Sandbox:
    def __init__(
        self, root: Path | None = None, *, database_url: str | None = None, seed: int = SANDBOX_SEED
    ):
        default_root = os.environ.get("SYNC_SANDBOX_DIR") or PROJECT_ROOT / ".sandbox"
        self.root = Path(root or default_root).resolve()
        self.database_url = (
            database_url if database_url is not None else os.environ.get("SYNC_DATABASE_URL", "")
        )
        self.seed = seed
        self.env: dict[str, str] = {}
        self._pg: EmbeddedPostgres | None = None
        self._simulators: list = []
        self._processes: list[subprocess.Popen] = []

    @property
    def processes_file(self) -> Path:
        return self.root / "processes.json"

    def clear_leftovers(self) -> list[int]:
        """Stop the process groups an earlier sandbox in this folder recorded and never
        stopped (it was killed); return their ids. Identity is checked by start time, so a
        pid the kernel has since given to another process is left alone."""
        if not self.processes_file.exists():
            return []
        stopped = []
        for entry in json.loads(self.processes_file.read_text() or "[]"):
            pid, started = int(entry["pid"]), float(entry["create_time"])
            try:
                if abs(psutil.Process(pid).create_time() - started) > 1.0:
                    continue  # the pid is reused: the group it led is gone (a pgid in use is never reused)
            except psutil.NoSuchProcess:
                pass  # the leader is gone, but members of its group may remain
            if _group_alive(pid):
                stop_process_group(pid, grace=10)
                stopped.append(pid)
        self.processes_file.unlink()
        return stopped

    def _record_processes(self) -> None:
        entries = []
        for proc in self._processes:
            try:
                entries.append(
                    {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time()}
                )
            except psutil.NoSuchProcess:
                continue
        self.processes_file.write_text(json.dumps(entries))

    def spawn(self, args: list[str], **popen_kwargs) -> subprocess.Popen:
        """Start a process (and whatever it starts) that ``stop`` will stop: in a process
        group of its own, recorded in processes.json until then."""
        proc = subprocess.Popen(args, start_new_session=True, **popen_kwargs)
        self._processes.append(proc)
        self._record_processes()
        return proc

    def start(self) -> dict[str, str]:
        self.root.mkdir(parents=True, exist_ok=True)
        self.clear_leftovers()
        url = self.database_url.strip()
        if not url:
            self._pg = EmbeddedPostgres(self.root / "pg")
            url = self._pg.start()
        sa_url = normalize_url(url).render_as_string(hide_password=False)
        env = {
            "SYNC_DATABASE_URL": sa_url,
            # dagster-postgres needs the psycopg2 scheme spelled out (see dagster.yaml).
            "DAGSTER_POSTGRES_URL": sa_url,
            "DAGSTER_HOME": str(self._dagster_home()),
        }
        for part in PARTS:
            base_url = ""
            if part.simulator is not None:
                sim = part.simulator(self.seed)
                base_url = sim.start()
                self._simulators.append(sim)
            env.update(part.env(base_url))
        for part in PARTS:
            if part.env_from_sandbox is not None:
                env.update(part.env_from_sandbox(env))
        self.env = env
        self._write_env_file()
        return env

    def _dagster_home(self) -> Path:
        home = self.root / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        # The same dagster.yaml as production: copied so the demo never edits the real one.
        shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
        return home

    def _write_env_file(self) -> None:
        lines = [
            "# Written by `sync-pipelines sandbox`: source it to point the CLI at the sandbox."
        ]
        lines += [f"export {key}={shlex.quote(value)}" for key, value in sorted(self.env.items())]
        # The venv's `dagster`, `dg` and `sync-pipelines` on PATH, as an activated venv would.
        venv_bin = shlex.quote(str(Path(sys.executable).parent))
        lines.append(f'export PATH={venv_bin}:"$PATH"')
        (self.root / "env").write_text("\n".join(lines) + "\n")

    def describe(self) -> list[str]:
        db = make_url(self.env["SYNC_DATABASE_URL"]).render_as_string(hide_password=True)
        lines = [f"database: {db}" + (f" (embedded, in {self._pg.folder})" if self._pg else "")]
        lines += [f"{sim.name} simulator: {sim.base_url}" for sim in self._simulators]
        lines.append(f"environment: {self.root / 'env'}")
        return lines

    def stop(self) -> None:
        """Stop everything ``start`` and ``spawn`` started: processes first (they use the
        database and the simulators), then the simulators, then the embedded PostgreSQL."""
        for proc in self._processes:
            stop_process_group(proc.pid)
            proc.wait()
        self._processes.clear()
        if self.processes_file.exists():
            self.processes_file.unlink()
        for sim in self._simulators:
            sim.stop()
        self._simulators.clear()
        if self._pg is not None:
            self._pg.stop()
            self._pg = None

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
