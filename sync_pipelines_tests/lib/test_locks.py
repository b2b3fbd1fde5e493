"""AdvisoryLock: one holder at a time, fail fast, freed on release and when the holder dies;
a holder whose session dropped finds out before its next write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import sqlalchemy as sa

from sync_pipelines.lib.db import create_database
from sync_pipelines.lib.locks import AdvisoryLock, LockLostError, LockNotAvailable


@pytest.fixture(params=["postgresql", "mysql"])
def db(request):
    return request.getfixturevalue("pg_db" if request.param == "postgresql" else "mysql_db")


def test_second_holder_fails_fast_with_the_lock_name(db):
    with AdvisoryLock(db, "examiner:ABC12"):
        # try-only: it raises at once (a waiting acquire would hang here until the timeout)
        with pytest.raises(LockNotAvailable, match="examiner:ABC12"):
            AdvisoryLock(db, "examiner:ABC12").acquire()
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


def kill_session(db, session_id: int) -> None:
    """Drop a session from another connection, the way an admin, a failover or a network cut
    would: the server ends it and frees what it held."""
    admin = sa.create_engine(db.engine.url, poolclass=sa.pool.NullPool)
    try:
        with admin.begin() as conn:
            if db.is_postgres:
                holds = conn.execute(
                    sa.text(
                        "SELECT COUNT(*) FROM pg_locks WHERE pid = :p AND locktype = 'advisory'"
                    ),
                    {"p": session_id},
                ).scalar()
                assert holds == 1, "the session to kill should be the one holding the lock"
                conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": session_id})
            else:
                conn.execute(sa.text(f"KILL {int(session_id)}"))
    finally:
        admin.dispose()


def test_killed_lock_session_is_noticed_before_the_next_write(db):
    lock = AdvisoryLock(db, "examiner:ABC12").acquire()
    try:
        lock.ensure_held()  # alive: no false alarm
        if not db.is_postgres:
            with db.connect() as conn:
                holder = conn.execute(
                    sa.text("SELECT IS_USED_LOCK(:n)"),
                    {"n": f"{db.engine.url.database}/examiner:ABC12"},
                ).scalar()
            assert holder == lock.session_id
        kill_session(db, lock.session_id)

        with pytest.raises(LockLostError, match="lock 'examiner:ABC12' was lost"):
            lock.ensure_held()
        # by name too (write points that only know the name), and it stays lost
        with pytest.raises(LockLostError, match="examiner:ABC12"):
            AdvisoryLock.ensure_held_by(db, "examiner:ABC12")
        assert not lock.held
        # the lock really was gone: another run can take it at once
        with AdvisoryLock(db, "examiner:ABC12") as other:
            assert other.held
    finally:
        lock.release()  # releasing a lost lock is harmless


def test_check_by_name_passes_while_held_and_fails_after_release(db):
    with AdvisoryLock(db, "job"):
        AdvisoryLock.ensure_held_by(db, "job")
        with pytest.raises(LockLostError, match="'other' is not held by this process"):
            AdvisoryLock.ensure_held_by(db, "other")
    with pytest.raises(LockLostError, match="'job' is not held by this process"):
        AdvisoryLock.ensure_held_by(db, "job")
