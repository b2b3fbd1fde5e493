"""A throw-away PostgreSQL database per test module, for Dagster storage and whole-project runs.

Dagster keeps its tables in ``public`` and the roles take fixed schema names, so tests that
run the whole project get a database of their own instead of a schema.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from sync_pipelines.lib.db import normalize_url


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    url = normalize_url(server_url)
    name = f"sp_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
