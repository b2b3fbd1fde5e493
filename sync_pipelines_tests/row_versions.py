"""Provenance tests read rows as (run id, row version): xmin moves on every rewrite."""

from __future__ import annotations

import sqlalchemy as sa

from sync_pipelines.lib.db import Database


def run_ids_and_versions(
    db: Database, table: str, key: str, where: str = "TRUE", params: dict | None = None
) -> dict:
    """``key`` -> (``sync_run_id``, xmin) of each row of ``table`` matching ``where``."""
    with db.connect() as conn:
        rows = conn.execute(
            sa.text(f"SELECT {key}, sync_run_id, xmin::text FROM {table} WHERE {where}"),
            params or {},
        )
        return {r[0]: (r[1], r[2]) for r in rows}
