"""Tiny under concurrent runs, changes while paging and short-lived tokens (issue 14, 12-16):
against the simulator's rotation races, status changes between pages and replies without
paging, on real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa

from sync_pipelines.lib.migrations import SQL_ROOT
from sync_pipelines.lib.redact import registered_secret_count
from sync_pipelines.tiny.client import (
    RACE_HINT,
    TinyApiError,
    TinyReauthorizationRequired,
    TinyTokenRace,
    TokenManager,
    renew_margin,
)
from sync_pipelines.tiny.sync import check_integrity, sync_incremental, sync_month

from .conftest import make_client, oauth_settings, stored_pair
from .test_sync import MONTH, MONTH_START, month_rows, table, truth_for_month


def history(db, order_id: int) -> list[tuple]:
    with db.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.text(
                    "SELECT status_antigo, status_novo FROM ordem_status_history "
                    "WHERE id_os = :id ORDER BY changed_at, id"
                ),
                {"id": order_id},
            )
        ]


def first_listed(sim, *, month: str | None = None, situacao: str | None = None) -> int:
    """The first order of an ascending listing (page 1)."""
    ids = [
        i
        for i, s in sim.snapshot().items()
        if (situacao is None or s == situacao)
        and (month is None or sim.detail(i)["data"].startswith(month))
        and i not in sim.broken_ids
    ]
    return min(ids, key=lambda i: (sim.detail(i)["data"], i))


# ---- 12: concurrent first runs --------------------------------------------------------------


def test_three_month_runs_started_together_on_an_empty_token_table_all_succeed(sim, tiny_db):
    months = [dt.date(2023, 3, 1), dt.date(2023, 4, 1), dt.date(2023, 5, 1)]
    for month in months:
        sim.add_orders(30, month=f"{month:%Y-%m}", situacao=None)
    settings = oauth_settings(sim)  # one bootstrap refresh token, as TINY_INITIAL_REFRESH_TOKEN
    # A token endpoint as slow as Keycloak under load: every worker asks while the first
    # renewal is still in flight.
    sim.set_faults(latency={"seconds": 0.5, "path": "openid-connect/token"})
    start = threading.Barrier(len(months))
    outcomes: dict[dt.date, object] = {}

    def run(month: dt.date) -> None:
        client = make_client(sim, tiny_db, settings=settings)
        try:
            start.wait()
            outcomes[month] = sync_month(client, tiny_db, month)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcomes[month] = exc
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(m,)) for m in months]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    failures = {m: repr(o) for m, o in outcomes.items() if isinstance(o, Exception)}
    assert failures == {} and len(outcomes) == 3
    assert sim.stats().get("invalid_grants", 0) == 0
    assert sim.stats().get("token_renewals", 0) == 1  # the bootstrap token spent exactly once
    for month in months:
        assert month_rows(tiny_db, f"{month:%Y-%m}") == truth_for_month(sim, f"{month:%Y-%m}")


def test_refused_token_that_another_worker_replaced_is_a_race_not_a_lost_authorization(
    sim, tiny_db
):
    """A renewal outside our lock (another deployment, an older version) spends the stored
    refresh token just before ours: we use the newest pair, and if that too is spent under
    us the error says a rerun will do, never "authorize again"."""
    settings = oauth_settings(sim)
    worker = TokenManager(tiny_db, settings)
    other = TokenManager(tiny_db, settings)
    first_access = worker.access_token()
    original = worker._renew_locked
    spent_elsewhere = []

    def renew_elsewhere_first(rejected):
        _, refresh = stored_pair(tiny_db)
        reply = other._token_request(
            {"grant_type": "refresh_token", "refresh_token": refresh}, spent=refresh
        )
        spent_elsewhere.append(reply)
        try:
            return original(rejected)  # spends the stored, now dead, refresh token
        finally:
            with tiny_db.begin() as conn:  # the other worker stores its pair, access expired
                other._store(conn, reply, previous_refresh=refresh)
                conn.execute(sa.text("UPDATE tiny_oauth_tokens SET access_expires_at = now()"))

    worker._renew_locked = renew_elsewhere_first
    with pytest.raises(TinyTokenRace) as raised:
        worker.renew(rejected=first_access)
    assert str(raised.value) == RACE_HINT and "rerun will do" in str(raised.value)
    assert "authorize" not in str(raised.value).replace("re-authorization", "")
    assert len(spent_elsewhere) == 2
    # Nothing is broken: the next run renews with the newest stored refresh token.
    worker._renew_locked = original
    assert worker.renew(rejected=None) != first_access


def test_refused_token_nobody_replaced_still_asks_for_reauthorization(sim, tiny_db):
    settings = oauth_settings(sim)
    TokenManager(tiny_db, settings).access_token()
    sim.revoke_refresh_tokens()
    with tiny_db.begin() as conn:
        conn.execute(sa.text("UPDATE tiny_oauth_tokens SET access_expires_at = now()"))
    with pytest.raises(TinyReauthorizationRequired, match="sync-pipelines tiny authorize"):
        TokenManager(tiny_db, settings).renew(rejected=None)


# ---- 13: changes between pages ----------------------------------------------------------


def test_a_3_to_7_change_between_two_pages_of_a_month_is_stored_by_that_months_run(
    sim, tiny_db, client
):
    sim.add_orders(250, month=MONTH, situacao=None)
    moved = first_listed(sim, month=MONTH)
    sim.set_status(moved, "3")
    sim.change_status_when_listed(moved, "7")  # once page 1 is read, before page 2
    sync_month(client, tiny_db, MONTH_START)
    assert sim.stats()["changed_while_listed"] == 1
    assert month_rows(tiny_db, MONTH) == truth_for_month(sim, MONTH)
    assert table(tiny_db)[moved] == 7
    assert history(tiny_db, moved) == [(None, 3), (3, 7)]


def test_integrity_report_misses_no_order_while_one_changes_status_between_its_pages(
    sim, tiny_db, client
):
    finished = sorted(i for i, s in sim.snapshot().items() if s == "3")
    assert len(finished) > 100, "the status-3 listing must span two pages for this test"
    sim.change_status_when_listed(first_listed(sim, situacao="3"), "7")
    report = check_integrity(client, tiny_db)
    truth = {i: int(s) for i, s in sim.snapshot().items() if i not in sim.broken_ids}
    assert sim.stats()["changed_while_listed"] == 1
    assert table(tiny_db) == truth
    assert report.api_total == len(sim.snapshot())


# ---- 14: transactions and history -----------------------------------------------------------


def test_no_transaction_is_open_while_details_are_fetched(sim, tiny_db, client):
    sim.add_orders(20, month=MONTH, situacao=None)
    original = client.get_order
    blocked = []

    def get_order_while_probing(order_id):
        # ACCESS EXCLUSIVE conflicts with every lock, even the ACCESS SHARE a plain SELECT
        # holds until its transaction ends: NOWAIT fails if the sync has one open.
        with tiny_db.engine.connect() as probe:
            try:
                probe.execute(sa.text("SET LOCAL lock_timeout = '1ms'"))
                probe.execute(sa.text("LOCK TABLE ordens_servico IN ACCESS EXCLUSIVE MODE NOWAIT"))
            except sa.exc.OperationalError:
                blocked.append(order_id)
            probe.rollback()
        return original(order_id)

    client.get_order = get_order_while_probing
    result = sync_month(client, tiny_db, MONTH_START)
    assert result.details_fetched >= 20
    assert blocked == []


def test_a_change_seen_by_a_month_run_and_an_incremental_run_is_recorded_once(sim, tiny_db):
    sim.add_orders(5, month=MONTH, situacao="0")
    month_client = make_client(sim, tiny_db)
    incremental_client = make_client(sim, tiny_db, settings=month_client.tokens.settings)
    sync_month(month_client, tiny_db, MONTH_START)
    order = first_listed(sim, month=MONTH)
    sim.set_status(order, "3")
    original = month_client.get_order

    def detail_then_incremental_runs(order_id):
        detail = original(order_id)
        if order_id == order:
            # While the month run holds this page's details, the incremental run sees the
            # same change (the order is open in the table) and records it.
            sync_incremental(incremental_client, tiny_db)
        return detail

    month_client.get_order = detail_then_incremental_runs
    sync_month(month_client, tiny_db, MONTH_START)
    month_client.close()
    incremental_client.close()
    assert history(tiny_db, order) == [(None, 0), (0, 3)]


def test_history_migration_keeps_everything_but_exact_duplicates(tiny_db):
    """0002 run on rows as 0001 left them: exact duplicates go, every other row stays."""
    with tiny_db.begin() as conn:
        conn.execute(
            sa.text(
                "ALTER TABLE ordem_status_history DROP CONSTRAINT ordem_status_history_os_seq_key"
            )
        )
        conn.execute(sa.text("ALTER TABLE ordem_status_history DROP COLUMN seq"))
        conn.execute(
            sa.text(
                "INSERT INTO ordem_status_history (id_os, status_antigo, status_novo, changed_at, origem) VALUES "
                "(1, NULL, 0, '2024-01-01 10:00Z', 'historical'), "
                "(1, NULL, 0, '2024-01-01 10:00Z', 'historical'), "  # exact duplicate
                "(1, 0, 3, '2024-01-02 10:00Z', 'incremental'), "
                "(1, 0, 3, '2024-01-02 10:05Z', 'historical'), "  # same change, seen twice
                "(2, NULL, 7, '2024-01-01 10:00Z', 'integrity')"
            )
        )
        conn.exec_driver_sql(
            (SQL_ROOT / "tiny" / "0002_status_history_unique_key.sql")
            .read_text()
            .replace("%", "%%")
        )
        rows = conn.execute(
            sa.text(
                "SELECT id_os, seq, status_antigo, status_novo, origem FROM ordem_status_history "
                "ORDER BY id_os, seq"
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        (1, 1, None, 0, "historical"),
        (1, 2, 0, 3, "incremental"),
        (1, 3, 0, 3, "historical"),
        (2, 1, None, 7, "integrity"),
    ]


# ---- 15: a reply without paginacao ------------------------------------------------------------


def test_a_list_reply_without_paginacao_is_an_error_naming_the_request(sim, tiny_db, client):
    sim.add_orders(150, month=MONTH, situacao=None)
    sim.configure(omit_paginacao=True)
    with pytest.raises(TinyApiError, match=r"paginacao.*GET /ordem-servico\?offset=0&limit=100"):
        sync_month(client, tiny_db, MONTH_START)
    with tiny_db.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM sync_checkpoints")).scalars().all()
    assert "done" not in status  # the month is not marked complete


# ---- 16: short-lived tokens, bounded redaction, encryption at rest -----------------------------


def test_renewal_margin_is_proportional_to_the_token_lifetime():
    assert renew_margin(dt.timedelta(hours=4)) == dt.timedelta(minutes=5)
    assert renew_margin(dt.timedelta(seconds=60)) == dt.timedelta(seconds=6)


def test_short_lived_tokens_are_renewed_once_per_lifetime_not_on_every_call(sim, tiny_db):
    sim.configure(access_token_ttl_s=120)  # shorter than the old fixed 5-minute margin
    client = make_client(sim, tiny_db)
    for _ in range(20):
        client.list_orders(limit=1)
    client.close()
    assert client.tokens.renewals == 1
    assert sim.stats()["token_renewals"] == 1


def test_600_renewals_keep_the_redaction_set_bounded(sim, tiny_db):
    manager = TokenManager(tiny_db, oauth_settings(sim))
    token = manager.access_token()
    before = registered_secret_count()
    for _ in range(600):
        token = manager.renew(rejected=token)
    assert manager.renewals == 601
    # The newest pair and the one before it, nothing older.
    assert registered_secret_count() - before <= 2


def test_token_pair_is_encrypted_at_rest_and_clear_rows_are_encrypted_in_place(sim, tiny_db):
    manager = TokenManager(tiny_db, oauth_settings(sim))
    access = manager.access_token()
    stored_access, stored_refresh = stored_pair(tiny_db)  # asserts the clear columns are empty
    assert stored_access == access
    with tiny_db.connect() as conn:
        raw = " ".join(
            str(v) for v in conn.execute(sa.text("SELECT * FROM tiny_oauth_tokens")).one()
        )
    assert access not in raw and stored_refresh not in raw

    # A row as an earlier version stored it, in clear: kept, moved to the encrypted columns.
    legacy = sim.issue_initial_tokens()
    with tiny_db.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE tiny_oauth_tokens SET access_token = :at, refresh_token = :rt, "
                "access_token_encrypted = NULL, refresh_token_encrypted = NULL, "
                "access_expires_at = now() + interval '4 hours', renewed_at = now()"
            ),
            {"at": legacy["access_token"], "rt": legacy["refresh_token"]},
        )
    assert TokenManager(tiny_db, oauth_settings(sim)).access_token() == legacy["access_token"]
    assert stored_pair(tiny_db) == (legacy["access_token"], legacy["refresh_token"])
