"""The checkpoint store on a real PostgreSQL: resume points commit with the data they describe."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from sync_pipelines.lib.checkpoints import CheckpointStore
from sync_pipelines.lib.db import Database
from sync_pipelines.lib.migrations import migrate

PIPELINE = "tiny_service_orders"


class PageWriteCrashed(RuntimeError):
    pass


@pytest.fixture
def store(pg_db: Database) -> CheckpointStore:
    migrate(pg_db, role="control")
    with pg_db.begin() as conn:
        conn.execute(sa.text("CREATE TABLE orders (id integer PRIMARY KEY)"))
    return CheckpointStore(pg_db)


def _write_page(conn: sa.Connection, ids: range) -> None:
    conn.execute(sa.text("INSERT INTO orders (id) VALUES (:id)"), [{"id": i} for i in ids])


def _order_count(db: Database) -> int:
    with db.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM orders")).scalar_one()


def test_saved_position_reads_back(store: CheckpointStore, pg_db: Database) -> None:
    assert store.get(PIPELINE, "2024-01") is None
    position = {"page": 3, "cursor": "abc", "seen": [1, 2], "nested": {"since": "2024-01-01"}}
    with pg_db.begin() as conn:
        store.save(conn, PIPELINE, "2024-01", position)

    checkpoint = store.get(PIPELINE, "2024-01")
    assert checkpoint is not None
    assert (checkpoint.status, checkpoint.position, checkpoint.error) == ("running", position, None)

    with pg_db.begin() as conn:
        store.save(conn, PIPELINE, "2024-01", {"page": 4})
    assert store.get(PIPELINE, "2024-01").position == {"page": 4}


def test_page_and_checkpoint_commit_together(store: CheckpointStore, pg_db: Database) -> None:
    with pg_db.begin() as conn:
        _write_page(conn, range(0, 10))
        store.save(conn, PIPELINE, "2024-01", {"page": 1})

    # A crash after the second page was written but before the transaction committed: neither
    # the rows nor the new position may survive, so the re-run redoes page 2 exactly once.
    with pytest.raises(PageWriteCrashed):
        with pg_db.begin() as conn:
            _write_page(conn, range(10, 20))
            store.save(conn, PIPELINE, "2024-01", {"page": 2})
            raise PageWriteCrashed

    assert _order_count(pg_db) == 10
    assert store.get(PIPELINE, "2024-01").position == {"page": 1}


def test_rolled_back_first_save_leaves_no_checkpoint(
    store: CheckpointStore, pg_db: Database
) -> None:
    with pytest.raises(PageWriteCrashed):
        with pg_db.begin() as conn:
            _write_page(conn, range(0, 5))
            store.save(conn, PIPELINE, "2024-02", {"page": 1})
            raise PageWriteCrashed
    assert store.get(PIPELINE, "2024-02") is None
    assert _order_count(pg_db) == 0


def test_failed_keeps_position_and_error_until_next_save(
    store: CheckpointStore, pg_db: Database
) -> None:
    with pg_db.begin() as conn:
        store.save(conn, PIPELINE, "2024-01", {"page": 7})
    store.mark_failed(PIPELINE, "2024-01", "HTTP 500 on page 8")

    failed = store.get(PIPELINE, "2024-01")
    assert (failed.status, failed.position, failed.error) == (
        "failed",
        {"page": 7},
        "HTTP 500 on page 8",
    )

    # The re-run resumes from page 7; its next save clears the failure.
    with pg_db.begin() as conn:
        store.save(conn, PIPELINE, "2024-01", {"page": 8})
    resumed = store.get(PIPELINE, "2024-01")
    assert (resumed.status, resumed.position, resumed.error) == ("running", {"page": 8}, None)


def test_done_clears_error_and_can_set_final_position(store: CheckpointStore) -> None:
    store.mark_failed(PIPELINE, "2024-03", "timeout")
    assert store.get(PIPELINE, "2024-03").position == {}

    store.mark_done(PIPELINE, "2024-03")
    done = store.get(PIPELINE, "2024-03")
    assert (done.status, done.done, done.error) == ("done", True, None)

    store.mark_done(PIPELINE, "2024-03", {"page": 12})
    assert store.get(PIPELINE, "2024-03").position == {"page": 12}


def test_reset_forgets_only_that_partition(store: CheckpointStore, pg_db: Database) -> None:
    with pg_db.begin() as conn:
        store.save(conn, PIPELINE, "2024-01", {"page": 1})
        store.save(conn, PIPELINE, "2024-02", {"page": 9})
        store.save(conn, "other_pipeline", "2024-01", {"page": 5})
    store.mark_done(PIPELINE, "2024-02")

    assert store.reset(PIPELINE, "2024-01") is True
    assert store.reset(PIPELINE, "2024-01") is False

    assert store.get(PIPELINE, "2024-01") is None
    assert [(c.partition_key, c.status, c.position) for c in store.list(PIPELINE)] == [
        ("2024-02", "done", {"page": 9})
    ]
    assert store.get("other_pipeline", "2024-01").position == {"page": 5}


def test_partitions_are_listed_in_key_order_and_independent(
    store: CheckpointStore, pg_db: Database
) -> None:
    with pg_db.begin() as conn:
        store.save(conn, PIPELINE, "2024-02", {"page": 2})
        store.save(conn, PIPELINE, "2024-01", {"page": 1})
    store.mark_failed(PIPELINE, "2024-01", "boom")

    listed = store.list(PIPELINE)
    assert [(c.partition_key, c.status, c.position) for c in listed] == [
        ("2024-01", "failed", {"page": 1}),
        ("2024-02", "running", {"page": 2}),
    ]
    assert store.list("unknown_pipeline") == []


def test_unknown_status_and_non_json_position_are_refused(
    store: CheckpointStore, pg_db: Database
) -> None:
    with pg_db.begin() as conn:
        with pytest.raises(ValueError, match="status"):
            store.save(conn, PIPELINE, "2024-01", {"page": 1}, status="paused")
        with pytest.raises(TypeError):
            store.save(conn, PIPELINE, "2024-01", {"page": object()})
    assert store.get(PIPELINE, "2024-01") is None
