"""From a run to its rows: what a sync run reports about the rows it last changed.

Every table a sync writes (tenant tables excepted, README "From a row to its run") has a
``sync_run_id`` column: the id of the Dagster run that last changed the row, written by the
plain sync code (``bulk_upsert(stamp=...)`` and its own UPDATEs) with the run id the Dagster
layer hands it. This module is the way back, for an asset's ``MaterializeResult``: per table,
how many rows carry the run's id, and the query that lists them, ready to paste.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from dagster import MetadataValue

from .lib.db import Database

RUN_ID_COLUMN = "sync_run_id"


def rows_of_run_query(db: Database, table: str, run_id: str) -> str:
    literal = run_id.replace("'", "''")
    return f"SELECT * FROM {db.table(table)} WHERE {RUN_ID_COLUMN} = '{literal}';"


def run_rows_metadata(db: Database, run_id: str, tables: Sequence[str]) -> dict:
    """``run_rows/<table>``: rows whose last change is this run; ``run_rows_query``: the SQL
    that lists them. Counted when the asset ends, so a row a later run changed again counts
    for that later run only."""
    counts = {}
    with db.connect() as conn:
        for table in tables:
            counts[table] = conn.execute(
                sa.text(f"SELECT count(*) FROM {db.table(table)} WHERE {RUN_ID_COLUMN} = :run"),
                {"run": run_id},
            ).scalar_one()
    queries = "\n".join(rows_of_run_query(db, table, run_id) for table in tables)
    return {
        **{f"run_rows/{table}": MetadataValue.int(n) for table, n in counts.items()},
        "run_rows_query": MetadataValue.md(
            f"Rows this run wrote (and no later run changed), by table:\n\n```sql\n{queries}\n```"
        ),
    }
