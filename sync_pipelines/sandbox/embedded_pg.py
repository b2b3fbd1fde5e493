"""An embedded PostgreSQL in a project folder, for machines that have no server to point at.

Uses the ``pgserver`` package (PostgreSQL 16 binaries shipped in a wheel; it also runs as
root). The server listens on a Unix socket inside its data folder, so nothing on the
machine's TCP ports is touched.

pgserver counts the processes using a server in ``<folder>/.handle_pids.json`` and stops the
server when the last one lets go. A process killed without cleaning up (SIGKILL) stays in that
list forever, so the server would never be stopped again: ``start`` first drops every pid
there that no longer belongs to a live holder (``clear_stale_handles``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil

HANDLES_FILE = ".handle_pids.json"

EMBEDDED_HINT = (
    "No PostgreSQL URL is set and the embedded server is not available. Either set "
    "SYNC_DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/postgres) or install the "
    "sandbox extra: pip install -e '.[sandbox]'"
)


class EmbeddedPostgres:
    """A PostgreSQL server kept in ``folder`` (created on first use, reused afterwards)."""

    def __init__(self, folder: str | Path, *, keep_running: bool = False):
        self.folder = Path(folder).resolve()
        self.keep_running = keep_running
        self._server = None

    def start(self) -> str:
        """Start (or attach to) the server and return a SQLAlchemy URL for database ``postgres``."""
        # platformdirs (used by pgserver) warns on every call when XDG_RUNTIME_DIR is unset,
        # and again when the folder is not private (0700), as a runtime dir must be.
        if not os.environ.get("XDG_RUNTIME_DIR"):
            runtime = self.folder.parent / "runtime"
            runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
            runtime.chmod(0o700)
            os.environ["XDG_RUNTIME_DIR"] = str(runtime)
        try:
            import pgserver  # optional dependency: only the sandbox and tests need it
        except ImportError as exc:
            raise RuntimeError(EMBEDDED_HINT) from exc
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        clear_stale_handles(self.folder)
        self._server = pgserver.get_server(
            self.folder, cleanup_mode=None if self.keep_running else "stop"
        )
        return self.url

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@/postgres?host={self.folder}"

    def stop(self) -> None:
        if self._server is not None and not self.keep_running:
            self._server.cleanup()
        self._server = None


def clear_stale_handles(folder: Path) -> list[int]:
    """Remove from pgserver's holder list the pids of processes that are gone; return them.

    A holder wrote itself into the file after it started, so a live process created after the
    file's last change is not a holder but a newer process that got a dead holder's pid.
    """
    handles = Path(folder) / HANDLES_FILE
    if not handles.exists():
        return []
    pids = json.loads(handles.read_text() or "[]")
    written = handles.stat().st_mtime
    stale = []
    for pid in pids:
        try:
            alive = psutil.Process(pid).create_time() <= written + 1.0
        except psutil.NoSuchProcess:
            alive = False
        if not alive:
            stale.append(pid)
    if stale:
        handles.write_text(json.dumps([pid for pid in pids if pid not in stale]))
    return stale
