"""Bring the whole sandbox up: a PostgreSQL, every simulator, a Dagster home, and .sandbox/env.

With ``SYNC_DATABASE_URL`` set the sandbox uses that database; otherwise it starts the
embedded PostgreSQL in ``.sandbox/pg``. Dagster's own storage lives in the same database
(its tables in ``public``, each sync role in a schema of its own).
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

from sqlalchemy.engine import make_url

from ..lib.db import normalize_url
from .embedded_pg import EmbeddedPostgres
from .parts import PARTS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SANDBOX_SEED = 20241105


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

    def start(self) -> dict[str, str]:
        self.root.mkdir(parents=True, exist_ok=True)
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
        (self.root / "env").write_text("\n".join(lines) + "\n")

    def describe(self) -> list[str]:
        db = make_url(self.env["SYNC_DATABASE_URL"]).render_as_string(hide_password=True)
        lines = [f"database: {db}" + (f" (embedded, in {self._pg.folder})" if self._pg else "")]
        lines += [f"{sim.name} simulator: {sim.base_url}" for sim in self._simulators]
        lines.append(f"environment: {self.root / 'env'}")
        return lines

    def stop(self) -> None:
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
