"""Tiny syncs against the simulator and real PostgreSQL: the table ends equal to Tiny."""

from __future__ import annotations

import datetime as dt
import logging
import signal
import subprocess
import sys
import textwrap

import sqlalchemy as sa

from sync_pipelines.sandbox.tiny_sim import SANDBOX_CREDENTIALS_KEY
from sync_pipelines.tiny.sync import (
    check_integrity,
    failure_counts,
    retry_failures,
    sync_incremental,
    sync_month,
)

from .conftest import make_client, oauth_settings, stored_pair

MONTH = "2023-05"
MONTH_START = dt.date(2023, 5, 1)


def truth_for_month(sim, month: str) -> dict[int, int]:
    return {
        i: int(s)
        for i, s in sim.snapshot().items()
        if sim.detail(i).get("data", "").startswith(month) and i not in sim.broken_ids
    }


def table(db, where: str = "TRUE", params=None) -> dict[int, int]:
    with db.connect() as conn:
        return dict(
            conn.execute(
                sa.text(f"SELECT id, situacao FROM ordens_servico WHERE {where}"), params or {}
            ).all()
        )


def month_rows(db, month: str) -> dict[int, int]:
    return table(db, "to_char(data_emissao, 'YYYY-MM') = :m", {"m": month})


def test_month_partition_stores_every_order_of_the_month_once(sim, tiny_db, client):
    sim.add_orders(250, month=MONTH, situacao=None)
    result = sync_month(client, tiny_db, MONTH_START)
    truth = truth_for_month(sim, MONTH)
    assert month_rows(tiny_db, MONTH) == truth
    assert result.pages == 3 and result.upserted.inserted == len(truth)
    # one list call per 100 orders, one detail per order, one quiet re-list, nothing more
    assert result.relisted_pages == result.pages
    assert result.api_calls <= result.pages + result.relisted_pages + result.details_fetched


def test_rerun_of_a_month_fetches_no_detail_and_writes_nothing(sim, tiny_db, client):
    sim.add_orders(150, month=MONTH, situacao=None)
    sync_month(client, tiny_db, MONTH_START)
    again = sync_month(client, tiny_db, MONTH_START)
    assert again.details_fetched == 0
    assert (again.upserted.inserted, again.upserted.updated) == (0, 0)
    assert again.pages == again.relisted_pages == 2
    assert again.api_calls == again.pages + again.relisted_pages


def _crashing_run(sim, db, refresh_token: str) -> str:
    url = db.engine.url.render_as_string(hide_password=False)
    return textwrap.dedent(
        f"""
        import datetime as dt, os, signal
        from sync_pipelines.lib.db import create_database
        from sync_pipelines.tiny.client import OAuthSettings, TinyClient, TokenManager
        from sync_pipelines.tiny.sync import sync_month
        db = create_database("tiny", {url!r}, {db.schema!r})
        settings = OAuthSettings({sim.base_url + "/realms/tiny/protocol/openid-connect/token"!r},
                                 "sync-pipelines-sandbox", "sandbox-tiny-client-secret",
                                 initial_refresh_token={refresh_token!r},
                                 credentials_key={SANDBOX_CREDENTIALS_KEY!r})
        client = TinyClient({sim.base_url + "/public-api/v3"!r}, TokenManager(db, settings))
        def die_after_two_pages(result, page):
            if result.pages == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        sync_month(client, db, dt.date(2023, 5, 1), on_page=die_after_two_pages)
        """
    )


def test_killed_month_resumes_at_its_checkpoint_without_duplicates_or_gaps(sim, tiny_db):
    sim.add_orders(420, month=MONTH, situacao=None)
    refresh = sim.issue_initial_tokens()["refresh_token"]
    child = subprocess.run(
        [sys.executable, "-c", _crashing_run(sim, tiny_db, refresh)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert len(month_rows(tiny_db, MONTH)) == 200  # two committed pages, nothing of the third

    sim.reset()  # clear the request log: see where the rerun starts
    client = make_client(sim, tiny_db, settings=oauth_settings(sim, refresh))
    result = sync_month(client, tiny_db, MONTH_START)
    client.close()
    assert result.resumed_from_offset == 200
    first_list = next(r for r in sim.requests_log() if r["path"].endswith("/ordem-servico"))
    assert first_list["query"]["offset"] == "200"
    assert month_rows(tiny_db, MONTH) == truth_for_month(sim, MONTH)
    with tiny_db.connect() as conn:
        dupes = conn.execute(
            sa.text(
                "SELECT count(*) FROM (SELECT id_os FROM ordem_status_history GROUP BY id_os HAVING count(*) > 1) d"
            )
        ).scalar()
    assert dupes == 0


def test_with_injected_5xx_timeouts_and_429s_the_table_equals_tiny(sim, tiny_db):
    sim.add_orders(200, month=MONTH, situacao=None)
    # Tiny's own burst bucket refuses with an empty-bodied 429 whenever the client outruns it
    sim.configure(burst_per_second=12)
    sim.set_faults(
        error_rate={"rate": 0.05, "status": 503}, timeout_rate={"rate": 0.03, "seconds": 1.5}
    )
    client = make_client(sim, tiny_db, timeout=(2.0, 0.5))
    result = sync_month(client, tiny_db, MONTH_START)
    client.close()
    sim.clear_faults()
    stats = client.stats
    assert stats.get("503", 0) > 0 and stats.get("ReadTimeout", 0) > 0 and stats.get("429", 0) > 0
    assert result.failures == 0
    assert month_rows(tiny_db, MONTH) == truth_for_month(sim, MONTH)


def test_broken_detail_lands_in_import_failures_with_payload_and_backs_off(sim, tiny_db, client):
    broken = sorted(sim.broken_ids)[0]
    month = (
        sim.detail(broken)["data"][:7] if sim.detail(broken).get("data", "")[:4].isdigit() else None
    )
    month_start = dt.date.fromisoformat(month + "-01") if month else None
    if month_start is None:  # the broken field is the date itself: find the month by the list item
        month_start = dt.date.fromisoformat(sim.list_item(broken)["data"][:7] + "-01")
    result = sync_month(client, tiny_db, month_start)
    assert result.failures >= 1
    with tiny_db.connect() as conn:
        row = conn.execute(
            sa.text("SELECT * FROM import_failures WHERE id_ordem = :i"), {"i": broken}
        ).one()
    assert row.tentativas == 1 and not row.resolvido and row.dados_api is not None
    assert "field" in row.erro and str(broken) in row.erro
    assert broken not in table(tiny_db)
    # not due yet: the 30 s backoff holds the retry back
    assert retry_failures(client, tiny_db).details_fetched == 0
    for attempt in range(2, 6):
        with tiny_db.begin() as conn:
            conn.execute(
                sa.text("UPDATE import_failures SET proxima_tentativa = now() - interval '1 s'")
            )
        retry_failures(client, tiny_db)
        with tiny_db.connect() as conn:
            assert (
                conn.execute(
                    sa.text("SELECT tentativas FROM import_failures WHERE id_ordem = :i"),
                    {"i": broken},
                ).scalar()
                == attempt
            )
    with tiny_db.begin() as conn:
        conn.execute(
            sa.text("UPDATE import_failures SET proxima_tentativa = now() - interval '1 s'")
        )
    assert retry_failures(client, tiny_db).details_fetched == 0  # 5 attempts: a person decides now
    assert failure_counts(tiny_db)["manual_review"] >= 1


def test_incremental_sees_a_change_on_an_old_open_order(sim, tiny_db, client):
    sync_incremental(client, tiny_db)
    stored = table(tiny_db)
    old_open = min(i for i, s in stored.items() if s in (0, 1, 2, 5, 6))
    sim.set_status(old_open, "3")  # finished, and Tiny gives no conclusion date
    result = sync_incremental(client, tiny_db)
    assert result.status_changes == 1
    with tiny_db.connect() as conn:
        order = conn.execute(
            sa.text("SELECT situacao, data_conclusao FROM ordens_servico WHERE id = :i"),
            {"i": old_open},
        ).one()
        history = conn.execute(
            sa.text(
                "SELECT status_antigo, status_novo FROM ordem_status_history WHERE id_os = :i ORDER BY id"
            ),
            {"i": old_open},
        ).all()
    assert order.situacao == 3
    assert abs((dt.datetime.now(dt.UTC) - order.data_conclusao).total_seconds()) < 120
    assert history[-1] == (stored[old_open], 3)


def test_incremental_with_nothing_changed_only_lists(sim, tiny_db, client):
    sync_incremental(client, tiny_db)
    quiet = sync_incremental(client, tiny_db)
    assert quiet.details_fetched == 0 and quiet.status_changes == 0
    assert quiet.api_calls == quiet.pages


def test_order_changing_status_between_two_pages_is_neither_lost_nor_duplicated(
    sim, tiny_db, client
):
    sim.add_orders(230, situacao="0")
    sync_incremental(client, tiny_db)
    first_open = sorted(i for i, s in sim.snapshot().items() if s == "0")
    moved = first_open[0]
    original = client.list_orders

    def list_then_change(**kwargs):
        page = original(**kwargs)
        if kwargs.get("situacao") == 0 and kwargs.get("offset") == 0:
            sim.set_status(moved, "6")  # every later order of status 0 shifts one place back
        return page

    client.list_orders = list_then_change
    sync_incremental(client, tiny_db)
    truth = {i: int(s) for i, s in sim.snapshot().items() if i not in sim.broken_ids}
    stored = table(tiny_db)
    open_truth = {i: s for i, s in truth.items() if s in (0, 1, 2, 5, 6)}
    assert {i: stored.get(i) for i in open_truth} == open_truth
    assert stored[moved] == 6


def test_integrity_check_restores_missing_orders_and_stale_statuses(sim, tiny_db, client):
    sync_month(client, tiny_db, MONTH_START)
    sim.add_orders(120, month=MONTH, situacao=None)
    sync_month(client, tiny_db, MONTH_START)
    ids = sorted(month_rows(tiny_db, MONTH))
    with tiny_db.begin() as conn:
        conn.execute(sa.text("DELETE FROM ordens_servico WHERE id = ANY(:ids)"), {"ids": ids[:5]})
        conn.execute(
            sa.text("UPDATE ordens_servico SET situacao = (situacao + 1) % 8 WHERE id = ANY(:ids)"),
            {"ids": ids[5:8]},
        )
    report = check_integrity(client, tiny_db)
    assert report.recovered >= 5 and report.stale_fixed == 3
    assert month_rows(tiny_db, MONTH) == truth_for_month(sim, MONTH)


def test_concurrent_workers_renew_the_token_once(sim, tiny_db):
    from concurrent.futures import ThreadPoolExecutor

    from sync_pipelines.tiny.client import TokenManager

    settings = oauth_settings(sim)
    TokenManager(tiny_db, settings).access_token()
    with tiny_db.begin() as conn:
        conn.execute(sa.text("UPDATE tiny_oauth_tokens SET access_expires_at = now()"))
    before = sim.stats().get("token_renewals", 0)
    workers = [TokenManager(tiny_db, settings) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        tokens = list(pool.map(lambda tm: tm.access_token(), workers))
    assert len(set(tokens)) == 1
    assert sum(tm.renewals for tm in workers) == 1
    # Tiny saw exactly one renewal: with rotation, a second racing one would have failed
    assert sim.stats().get("token_renewals", 0) - before == 1
    assert sim.stats().get("invalid_grants", 0) == 0


def test_revoked_authorization_stops_with_instructions(sim, tiny_db):
    import pytest

    from sync_pipelines.tiny.client import TinyReauthorizationRequired, TokenManager

    settings = oauth_settings(sim)
    TokenManager(tiny_db, settings).access_token()
    sim.revoke_refresh_tokens()
    with tiny_db.begin() as conn:
        conn.execute(sa.text("UPDATE tiny_oauth_tokens SET access_expires_at = now()"))
    with pytest.raises(TinyReauthorizationRequired, match="sync-pipelines tiny authorize"):
        TokenManager(tiny_db, settings).access_token()


def test_expired_access_token_is_renewed_on_401(sim, tiny_db, client):
    client.list_orders(limit=1)
    sim.expire_access_tokens()
    assert client.list_orders(limit=1).total > 0
    assert client.tokens.renewals == 2  # the first pair, then the renewal after the 401


def test_no_token_secret_or_customer_data_in_logs(sim, tiny_db, client, caplog):
    caplog.set_level(logging.DEBUG)
    sim.add_orders(120, month=MONTH, situacao=None)
    sim.set_faults(fail_next={"count": 2, "status": 503})
    sync_month(client, tiny_db, MONTH_START)
    access, refresh = stored_pair(tiny_db)
    with tiny_db.connect() as conn:
        people = conn.execute(
            sa.text("SELECT cliente_email, cliente_celular, cliente_cpf_cnpj FROM ordens_servico")
        ).all()
    secrets = {access, refresh, "sandbox-tiny-client-secret"}
    personal = {v for row in people for v in row if v and len(v) > 5}
    logged = caplog.text
    assert personal, "the simulator seeded no personal data to look for"
    assert not [s for s in secrets if s in logged]
    assert not [p for p in personal if p in logged]
