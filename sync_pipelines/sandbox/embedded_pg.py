"""An embedded PostgreSQL in a project folder, for machines that have no server to point at.

Uses the ``pgserver`` package (PostgreSQL 16 binaries shipped in a wheel; it also runs as
root). The server listens on a Unix socket inside its data folder, so nothing on the
machine's TCP ports is touched.
"""

from __future__ import annotations

import os
from pathlib import Path

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
        # platformdirs (used by pgserver) warns on every call when XDG_RUNTIME_DIR is unset.
        os.environ.setdefault("XDG_RUNTIME_DIR", str(self.folder.parent))
        try:
            import pgserver  # optional dependency: only the sandbox and tests need it
        except ImportError as exc:
            raise RuntimeError(EMBEDDED_HINT) from exc
        self.folder.parent.mkdir(parents=True, exist_ok=True)
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
