"""The Tiny circuit breaker against the simulator and real PostgreSQL: a broken Tiny stops the
run after N failed calls (counted at the simulator), loses nothing, and a revoked
authorization alerts the admins once until it works again."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from dagster import DagsterEventType, DagsterInstance, materialize

from sync_pipelines.lib.db import create_database
from sync_pipelines.lib.http import PermanentHttpError, RetryPolicy, TransientHttpError
from sync_pipelines.lib.migrations import migrate
from sync_pipelines.sandbox.telegram_sim import SANDBOX_ADMIN_IDS, TELEGRAM_PART, TelegramSimulator
from sync_pipelines.sandbox.tiny_sim import API_PREFIX, TINY_PART, TinySimulator
from sync_pipelines.tiny.breaker import CircuitBreaker, CircuitOpen
from sync_pipelines.tiny.client import TinyClient, TokenManager
from sync_pipelines.tiny.defs import TinyApiResource, service_orders_history
from sync_pipelines.tiny.sync import retry_failures, sync_incremental, sync_month

from ..dagster_db import scratch_database
from .conftest import oauth_settings, resources

MONTH, MONTH_START = "2023-05", dt.date(2023, 5, 1)
ATTEMPTS = 2  # HTTP attempts per call: a failed call costs exactly this many requests
ORDER_CALLS = r"/ordem-servico"


def quick_client(sim: TinySimulator, db) -> TinyClient:
    client = TinyClient(
        sim.base_url + API_PREFIX,
        TokenManager(db, oauth_settings(sim)),
        retry=RetryPolicy(max_attempts=ATTEMPTS, base_backoff=0.01, max_backoff=0.02),
        timeout=(2.0, 5.0),
    )
    client.tokens.access_token()  # the token is not what these tests break
    return client


def month_table(db) -> dict[int, int]:
    with db.connect() as conn:
        return dict(
            conn.execute(
                sa.text(
                    "SELECT id, situacao FROM ordens_servico WHERE to_char(data_emissao, 'YYYY-MM') = :m"
                ),
                {"m": MONTH},
            ).all()
        )


def truth(sim) -> dict[int, int]:
    return {
        i: int(s)
        for i, s in sim.snapshot().items()
        if sim.detail(i).get("data", "").startswith(MONTH)
    }


def scalar(db, sql: str):
    with db.connect() as conn:
        return conn.execute(sa.text(sql)).scalar()


def test_breaker_counts_only_consecutive_transient_failures():
    breaker = CircuitBreaker(3)
    transient = TransientHttpError("GET x -> HTTP 503", method="GET", url="x", status=503)
    permanent = PermanentHttpError("GET x -> HTTP 404", method="GET", url="x", status=404)
    breaker.failed(transient)
    breaker.failed(transient)
    breaker.succeeded()
    breaker.failed(transient)
    breaker.failed(permanent)  # Tiny answered: the API is up
    breaker.failed(transient)
    breaker.failed(transient)
    with pytest.raises(CircuitOpen, match="3 consecutive errors, last: 503"):
        breaker.failed(transient)


def test_threshold_is_the_resources_field_set_from_its_variable(monkeypatch):

    assert CircuitBreaker().threshold == 5
    monkeypatch.setenv("TINY_CIRCUIT_BREAKER_FAILURES", "7")
    resource = TinyApiResource.from_env_vars()
    ready = resource.process_config_and_initialize()
    assert ready.breaker().threshold == 7
    with pytest.raises(ValueError, match="TINY_CIRCUIT_BREAKER_FAILURES"):
        CircuitBreaker(0)


def test_outage_mid_month_stops_after_n_failed_calls_and_rerun_completes_without_duplicates(
    sim, tiny_db
):
    sim.add_orders(250, month=MONTH, situacao=None)
    client = quick_client(sim, tiny_db)

    def outage_after_first_page(result, page):
        if result.pages == 1:
            sim.reset()  # an empty request log: count only what the outage costs
            sim.set_faults(outage={"mode": "503"})

    with pytest.raises(CircuitOpen) as stopped:
        sync_month(client, tiny_db, MONTH_START, on_page=outage_after_first_page)
    # Five calls (the next page's listing asked five times), each with its retries, then stop.
    assert sim.count(ORDER_CALLS) == 5 * ATTEMPTS
    assert stopped.value.reason == (
        f"Tiny API failing: 5 consecutive errors, last: 503 {stopped.value.last_error}; "
        "nothing lost, the next run resumes from page 2 (offset 100)"
    )
    assert len(month_table(tiny_db)) == 100  # the first page, nothing more
    assert scalar(tiny_db, "SELECT count(*) FROM import_failures") == 0
    with tiny_db.connect() as conn:
        checkpoint = conn.execute(
            sa.text("SELECT status, position FROM sync_checkpoints WHERE partition_key = :k"),
            {"k": MONTH},
        ).one()
    assert checkpoint.status == "failed" and checkpoint.position["offset"] == 100
    assert "5 consecutive errors" in checkpoint.position["_error"]

    sim.clear_faults()
    result = sync_month(client, tiny_db, MONTH_START)
    client.close()
    assert result.resumed_from_offset == 100
    assert month_table(tiny_db) == truth(sim)
    assert (
        scalar(
            tiny_db,
            "SELECT count(*) FROM (SELECT id_os FROM ordem_status_history GROUP BY id_os"
            " HAVING count(*) > 1) d",
        )
        == 0
    )


def test_failing_details_roll_back_their_page_so_no_order_is_marked_synced(sim, tiny_db):
    sim.add_orders(120, month=MONTH, situacao=None)
    client = quick_client(sim, tiny_db)
    sim.reset()
    sim.set_faults(error_rate={"rate": 1.0, "status": 502, "path": r"/ordem-servico/\d+"})
    with pytest.raises(CircuitOpen, match="last: 502"):
        sync_month(client, tiny_db, MONTH_START)
    assert sim.count(r"/ordem-servico/\d+") == 5 * ATTEMPTS  # five orders tried, then stop
    assert month_table(tiny_db) == {}
    assert scalar(tiny_db, "SELECT count(*) FROM import_failures") == 0
    assert scalar(tiny_db, "SELECT count(*) FROM ordem_status_history") == 0
    sim.clear_faults()
    sync_month(client, tiny_db, MONTH_START)
    client.close()
    assert month_table(tiny_db) == truth(sim)


def test_incremental_and_retries_stop_too_and_leave_failures_untouched(sim, tiny_db):
    sim.add_orders(30, month=MONTH, situacao=None)
    client = quick_client(sim, tiny_db)
    with tiny_db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO import_failures (id_ordem, erro, tentativas, resolvido,"
                " proxima_tentativa) SELECT g, 'earlier', 1, false, now() - interval '1 minute'"
                " FROM generate_series(1, 8) g"
            )
        )
    sim.set_faults(outage={"mode": "503"})
    with pytest.raises(CircuitOpen, match="next incremental run lists the window"):
        sync_incremental(client, tiny_db)
    with pytest.raises(CircuitOpen, match="stay in import_failures") as stopped:
        retry_failures(client, tiny_db)
    client.close()
    assert stopped.value.result.api_calls == 5 * ATTEMPTS
    assert scalar(tiny_db, "SELECT sum(tentativas) FROM import_failures") == 8
    assert scalar(tiny_db, "SELECT count(*) FROM sync_metadata") == 0


@pytest.fixture
def project(pg_url, monkeypatch):
    tiny = TinySimulator(seed=5, n_orders=50, per_minute_limit=100_000, burst_per_second=100_000)
    telegram = TelegramSimulator(seed=5)
    tiny.start()
    telegram.start()
    with scratch_database(pg_url) as url:
        monkeypatch.setenv("SYNC_DATABASE_URL", url)
        env = TINY_PART.env(tiny.base_url) | TELEGRAM_PART.env(telegram.base_url)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        dbs = {}
        for role, schema in (("tiny", "tiny"), ("control", "sync_control")):
            dbs[role] = create_database(role, url, schema)
            migrate(dbs[role])
        yield tiny, telegram, dbs
        for db in dbs.values():
            db.dispose()
    tiny.stop()
    telegram.stop()


def run_month(instance):
    return materialize(
        [service_orders_history],
        partition_key=f"{MONTH}-01",
        resources=resources(),
        instance=instance,
        raise_on_error=False,
    )


def test_failed_run_carries_the_reason_and_resume_point_in_its_metadata(project, monkeypatch):
    tiny, _, dbs = project
    monkeypatch.setenv("TINY_CIRCUIT_BREAKER_FAILURES", "2")
    tiny.add_orders(20, month=MONTH, situacao=None)
    with DagsterInstance.ephemeral() as instance:
        assert run_month(instance).success  # a token pair is stored
        tiny.set_faults(outage={"mode": "503"})
        with dbs["control"].begin() as conn:  # no limiter waits for the failed calls
            conn.execute(sa.text("DELETE FROM rate_limit_buckets"))
        result = run_month(instance)
        assert not result.success
        failure = next(
            e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE
        )
        info = failure.step_failure_data.user_failure_data
        assert info.description.startswith("Tiny API failing: 2 consecutive errors, last: 503")
        assert "the next run resumes from page 1 (offset 0)" in info.description
        assert info.metadata["consecutive_errors"].value == 2
        assert info.metadata["last_status"].value == 503


def test_revoked_authorization_alerts_once_and_resolves_once(project):
    tiny, telegram, dbs = project
    tiny.add_orders(5, month=MONTH, situacao=None)
    admins = len(SANDBOX_ADMIN_IDS)
    with DagsterInstance.ephemeral() as instance:
        assert run_month(instance).success
        tiny.revoke_refresh_tokens()
        tiny.expire_access_tokens()
        with dbs["tiny"].begin() as conn:
            conn.execute(sa.text("UPDATE tiny_oauth_tokens SET access_expires_at = now()"))
        for _ in range(3):
            assert not run_month(instance).success
        texts = telegram.texts(SANDBOX_ADMIN_IDS[0])
        assert len(texts) == 1 and len(telegram.messages) == admins
        assert "sync-pipelines tiny authorize" in texts[0]
        refresh = tiny.issue_initial_tokens()["refresh_token"]
        with dbs["tiny"].begin() as conn:  # what `sync-pipelines tiny authorize` stores
            conn.execute(
                sa.text(
                    "UPDATE tiny_oauth_tokens SET refresh_token = :r, access_expires_at = now()"
                ),
                {"r": refresh},
            )
        assert run_month(instance).success
        assert run_month(instance).success
    texts = telegram.texts(SANDBOX_ADMIN_IDS[0])
    assert len(texts) == 2 and "authorization works again" in texts[1]
    assert refresh not in "".join(texts)
