"""Versioned DDL: applies ``sql/<role>/NNNN_name.sql`` in order, once each, checksum-guarded.

A file may exist in dialect variants (``0001_x.postgresql.sql`` / ``0001_x.mysql.sql``);
the variant for the target's dialect is used, otherwise the plain ``.sql`` file. Each applied
file is recorded in ``schema_migrations`` with its SHA-256; changing a file that was already
applied is refused, because the database would silently differ from what the file says.
"""

from __future__ import annotations

import hashlib
import re
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from .db import Database, quote_ident

# sync_pipelines/sql: in a checkout a link to the repository's sql/, in a wheel (the image's
# non-editable install) the files themselves (pyproject.toml, package-data).
SQL_ROOT = Path(__file__).resolve().parents[1] / "sql"
_FILE = re.compile(
    r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+?)(?:\.(?P<dialect>postgresql|mysql))?\.sql$"
)
LEDGER = "schema_migrations"


class MigrationError(RuntimeError):
    """A migration cannot be applied, or an applied one was changed afterwards."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass
class MigrationReport:
    role: str
    applied: list[str] = field(default_factory=list)
    already_applied: list[str] = field(default_factory=list)


def discover(role: str, dialect: str, root: Path = SQL_ROOT) -> list[Migration]:
    """The role's migrations for one dialect, in version order."""
    folder = root / role
    if not folder.is_dir():
        return []
    by_version: dict[str, Migration] = {}
    specific: set[str] = set()
    for path in sorted(folder.iterdir()):
        m = _FILE.match(path.name)
        if not m:
            if path.suffix == ".sql":
                raise MigrationError(
                    f"{path}: migration files are named NNNN_lower_snake[.dialect].sql"
                )
            continue
        if m["dialect"] and m["dialect"] != dialect:
            continue
        version = m["version"]
        if m["dialect"]:
            specific.add(version)
        elif version in specific:
            continue
        if version in by_version and not m["dialect"]:
            raise MigrationError(f"{folder}: two migrations share version {version}")
        by_version[version] = Migration(version, m["name"], path)
    return [by_version[v] for v in sorted(by_version)]


def _split_statements(sql: str) -> list[str]:
    """Split on semicolons outside quotes, comments and dollar-quoted bodies."""
    statements, buf, i, n = [], [], 0, len(sql)
    dollar: str | None = None
    while i < n:
        ch = sql[i]
        if dollar:
            if sql.startswith(dollar, i):
                buf.append(dollar)
                i += len(dollar)
                dollar = None
                continue
            buf.append(ch)
            i += 1
            continue
        if ch == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end
            continue
        if ch == "/" and sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        if ch in ("'", '"', "`"):
            end = i + 1
            while end < n:
                if sql[end] == ch:
                    if end + 1 < n and sql[end + 1] == ch:
                        end += 2
                        continue
                    break
                end += 1
            buf.append(sql[i : end + 1])
            i = end + 1
            continue
        if ch == "$":
            m = re.match(r"\$[A-Za-z_]*\$", sql[i:])
            if m:
                dollar = m.group(0)
                buf.append(dollar)
                i += len(dollar)
                continue
        if ch == ";":
            stmt = "".join(buf).strip()
            if stmt:
                statements.append(stmt)
            buf = []
            i += 1
            continue
        buf.append(ch)
        i += 1
    tail = "".join(buf).strip()
    if tail:
        statements.append(tail)
    return statements


def _ensure_ledger(db: Database, conn: sa.Connection) -> str:
    if db.is_postgres:
        if db.schema:
            conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(db.schema)}"))
        ledger = db.table(LEDGER)
        conn.execute(
            sa.text(
                f"CREATE TABLE IF NOT EXISTS {ledger} (role text NOT NULL, version text NOT NULL,"
                " name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (role, version))"
            )
        )
    else:
        ledger = db.table(LEDGER)
        conn.execute(
            sa.text(
                f"CREATE TABLE IF NOT EXISTS {ledger} (role VARCHAR(64) NOT NULL,"
                " version VARCHAR(16) NOT NULL, name VARCHAR(255) NOT NULL,"
                " checksum CHAR(64) NOT NULL,"
                " applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (role, version))"
            )
        )
    return ledger


def migrate(db: Database, role: str | None = None, root: Path = SQL_ROOT) -> MigrationReport:
    """Apply every pending migration of ``role`` (default: the database's own role).

    On PostgreSQL the whole run holds a transaction-scoped advisory lock, so two processes
    migrating at once (a demo and a test, two pods) apply each file exactly once; every file
    runs in its own transaction together with its ledger row.
    """
    role = role or db.role
    report = MigrationReport(role=role)
    migrations = discover(role, db.dialect, root)
    with db.begin() as conn:
        if db.is_postgres:
            conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"migrate:{db.schema}"}
            )
        ledger = _ensure_ledger(db, conn)
        # Keyed by role too: two roles may share one schema (e.g. one database, no schemas).
        done = {
            row.version: row
            for row in conn.execute(
                sa.text(f"SELECT version, name, checksum FROM {ledger} WHERE role = :r"),
                {"r": role},
            )
        }
        for mig in migrations:
            applied = done.get(mig.version)
            if applied is not None:
                if applied.checksum != mig.checksum:
                    raise MigrationError(
                        f"{mig.path.name} was changed after it was applied to the {role} database "
                        f"(recorded checksum {applied.checksum[:12]}…, file now {mig.checksum[:12]}…). "
                        f"Applied migrations are immutable: restore the file and add a new NNNN_ file "
                        f"with the change."
                    )
                report.already_applied.append(mig.path.name)
                continue
            # A savepoint per file: a failing file leaves nothing of itself behind. MySQL
            # commits implicitly around DDL, so there the file's statements stand alone.
            with conn.begin_nested() if db.is_postgres else nullcontext():
                for stmt in _split_statements(mig.sql):
                    try:
                        conn.exec_driver_sql(stmt.replace("%", "%%"))
                    except sa.exc.DBAPIError as exc:
                        raise MigrationError(
                            f"{mig.path.name} failed on the {role} database: {exc.orig}"
                        ) from None
                conn.execute(
                    sa.text(
                        f"INSERT INTO {ledger} (role, version, name, checksum) VALUES (:r, :v, :n, :c)"
                    ),
                    {"r": role, "v": mig.version, "n": mig.name, "c": mig.checksum},
                )
            report.applied.append(mig.path.name)
    return report


def migration_roles(root: Path = SQL_ROOT) -> list[str]:
    """Every role that has a folder under ``sql/``."""
    if not root.is_dir():
        # Migrating nothing and exiting 0 would leave a rollout with an empty database.
        raise MigrationError(f"{root}: migrations folder not found (sql/ missing from the install)")
    return sorted(p.name for p in root.iterdir() if p.is_dir())
