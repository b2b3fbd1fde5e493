"""AdvisoryLock: one holder at a time, fail fast, freed on release and when the holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from sync_pipelines.lib.db import create_database
from sync_pipelines.lib.locks import AdvisoryLock, LockNotAvailable


@pytest.fixture(params=["postgresql", "mysql"])
def db(request):
    return request.getfixturevalue("pg_db" if request.param == "postgresql" else "mysql_db")


def test_second_holder_fails_fast_with_the_lock_name(db):
    with AdvisoryLock(db, "examiner:ABC12"):
        started = time.monotonic()
        with pytest.raises(LockNotAvailable, match="examiner:ABC12"):
            AdvisoryLock(db, "examiner:ABC12").acquire()
        assert time.monotonic() - started < 2
        # a different name is independent
        with AdvisoryLock(db, "examiner:ZZZ99"):
            pass


def test_lock_is_free_again_after_the_block_even_on_error(db):
    with pytest.raises(RuntimeError, match="boom"):
        with AdvisoryLock(db, "job"):
            raise RuntimeError("boom")
    with AdvisoryLock(db, "job") as lock:
        assert lock.held


def _holder_script(url: str, schema: str | None) -> str:
    return textwrap.dedent(
        f"""
        import sys, time
        from sync_pipelines.lib.db import create_database
        from sync_pipelines.lib.locks import AdvisoryLock
        db = create_database("test", {url!r}, {schema!r})
        AdvisoryLock(db, "held-by-child").acquire()
        print("locked", flush=True)
        time.sleep(120)
        """
    )


def test_lock_is_freed_by_the_server_when_the_holder_process_is_killed(db):
    url = db.engine.url.render_as_string(hide_password=False)
    child = subprocess.Popen(
        [sys.executable, "-c", _holder_script(url, db.schema)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(LockNotAvailable):
            AdvisoryLock(db, "held-by-child").acquire()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        # The server notices the dead session within moments; retry briefly.
        deadline = time.monotonic() + 10
        while True:
            try:
                with AdvisoryLock(db, "held-by-child"):
                    break
            except LockNotAvailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        child.kill()
        child.wait()


def test_separate_engines_see_the_same_lock(pg_url, pg_db):
    other = create_database("test", pg_url, pg_db.schema)
    try:
        with AdvisoryLock(pg_db, "shared"):
            with pytest.raises(LockNotAvailable):
                AdvisoryLock(other, "shared").acquire()
    finally:
        other.dispose()


def test_same_name_in_two_schemas_does_not_collide(pg_url, pg_db, pg_admin):
    import uuid

    other_schema = f"t_{uuid.uuid4().hex[:10]}"
    with pg_admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{other_schema}"')
    other = create_database("test", pg_url, other_schema)
    try:
        with AdvisoryLock(pg_db, "examiner:1"), AdvisoryLock(other, "examiner:1") as second:
            assert second.held
    finally:
        other.dispose()
        with pg_admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{other_schema}" CASCADE')
