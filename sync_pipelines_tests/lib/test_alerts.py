"""The alert state store on a real PostgreSQL: one message per transition, whatever repeats."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
import sqlalchemy as sa

from sync_pipelines.lib.alerts import MAX_DELIVERY_AGE, AlertState, announce
from sync_pipelines.lib.db import Database
from sync_pipelines.lib.migrations import migrate
from sync_pipelines.lib.telegram import SendResult, TelegramClient
from sync_pipelines.sandbox.telegram_sim import SANDBOX_BOT_TOKEN


@pytest.fixture
def state(pg_db: Database) -> AlertState:
    migrate(pg_db, role="control")
    return AlertState(pg_db)


def test_condition_raises_once_and_resolves_once_over_repeated_evaluations(state):
    seen = [state.transition("x", active) for active in (False, True, True, True, False, False)]
    assert seen == [None, "raised", None, None, "resolved", None]
    assert state.transition("x", True) == "raised"  # a new episode is a new alert


def test_details_of_the_raise_are_kept_while_the_condition_stays_active(state):
    state.transition("detran:removals:1", True, {"before": 10, "vanished": 6})
    state.transition("detran:removals:1", True, {"before": 4, "vanished": 0})
    record = state.get("detran:removals:1")
    assert record.active and record.details == {"before": 10, "vanished": 6}
    assert [r.condition_key for r in state.active("detran:")] == ["detran:removals:1"]
    state.transition("detran:removals:1", False, {"share": 0.0})
    assert state.get("detran:removals:1").details == {"share": 0.0}
    assert state.active() == []


def test_a_new_store_object_sees_the_state_so_a_restart_does_not_resend(state, pg_db):
    sent: list[str] = []
    first = announce(state, "k", True, raised="up", resolved="down", send=sent.append)
    again = announce(AlertState(pg_db), "k", True, raised="up", resolved="down", send=sent.append)
    assert (first, again, sent) == ("raised", None, ["up"])


def test_racing_callers_raise_a_condition_exactly_once(state):
    results: list[object] = []
    barrier = threading.Barrier(6)

    def worker():
        barrier.wait()
        results.append(state.transition("race", True))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, results)) == ["None"] * 5 + ["raised"]


def test_announced_messages_are_redacted(state):
    sent: list[str] = []
    announce(
        state,
        "leak",
        True,
        raised=lambda: "examiner 123.456.789-09 token access_token=abcdef1234567890",
        resolved="",
        send=sent.append,
    )
    assert "123.456.789-09" not in sent[0] and "abcdef1234567890" not in sent[0]


def test_a_failed_send_is_retried_on_the_next_evaluation_and_then_never_again(state):
    sent: list[str] = []

    def telegram_down(text: str) -> None:
        raise ConnectionResetError("connection reset by peer")

    first = announce(state, "k", True, raised="up", resolved="down", send=telegram_down)
    again = announce(state, "k", True, raised="up", resolved="down", send=sent.append)
    later = announce(state, "k", True, raised="up", resolved="down", send=sent.append)
    assert (first, again, later) == ("raised", None, None)
    assert sent == ["up"]


class Outcome:
    """The shape of TelegramResource.notify_admins's outcome (per-chat results)."""

    def __init__(self, *oks: bool) -> None:
        self.results = [
            SendResult(str(n), ok, status=None if ok else 502) for n, ok in enumerate(oks)
        ]
        self.skipped_reason = ""


def test_a_send_function_reaching_no_admin_is_retried_and_one_reaching_any_is_not(state):
    calls: list[str] = []

    def nobody(text: str) -> Outcome:
        calls.append(text)
        return Outcome(False, False)

    def someone(text: str) -> Outcome:
        calls.append(text)
        return Outcome(True, False)

    announce(state, "k", True, raised="up", resolved="down", send=nobody)
    announce(state, "k", True, raised="up", resolved="down", send=someone)
    announce(state, "k", True, raised="up", resolved="down", send=someone)
    assert calls == ["up", "up"]


@pytest.fixture
def telegram_client(telegram):
    with TelegramClient(
        SANDBOX_BOT_TOKEN, ["111", "222"], base_url=telegram.base_url, sleep=lambda s: None
    ) as client:
        yield client


def test_each_admin_is_told_once_even_when_telegram_resets_one_chat(
    state, telegram, telegram_client
):
    # More resets than the client's own retries: this evaluation cannot reach chat 222.
    telegram.fail_chat("222", "reset", count=3)
    announce(state, "hubsoft:offline", True, raised="OFF", resolved="ON", send=telegram_client)
    assert (telegram.texts("111"), telegram.texts("222")) == (["OFF"], [])
    with state.db.connect() as conn:
        pending = conn.execute(
            sa.text("SELECT recipient, attempts FROM alert_deliveries WHERE delivered_at IS NULL")
        ).all()
    assert [tuple(r) for r in pending] == [("222", 1)]

    report = state.deliver_pending(telegram_client, prefix="hubsoft:")
    assert (report.delivered, report.failed) == (1, 0)
    assert state.deliver_pending(telegram_client).delivered == 0
    announce(state, "hubsoft:offline", False, raised="OFF", resolved="ON", send=telegram_client)
    assert (telegram.texts("111"), telegram.texts("222")) == (["OFF", "ON"], ["OFF", "ON"])


def test_an_admin_who_blocked_the_bot_is_given_up_not_retried_forever(
    state, telegram, telegram_client
):
    telegram.blocked_chats = {"222"}
    announce(state, "k", True, raised="up", resolved="down", send=telegram_client)
    report = state.deliver_pending(telegram_client)
    assert (report.delivered, report.failed, report.gave_up) == (0, 0, 0)
    assert telegram.count("sendMessage") == 2  # one per admin, no resend to the blocked one
    with state.db.connect() as conn:
        [row] = conn.execute(
            sa.text(
                "SELECT recipient, gave_up_at IS NOT NULL, last_error FROM alert_deliveries"
                " WHERE delivered_at IS NULL"
            )
        ).all()
    assert row[0] == "222" and row[1] and "blocked" in row[2]


def test_an_undelivered_message_older_than_a_day_is_given_up(state):
    now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    state.transition_with_message(
        "k", True, message=lambda change: change, recipients=["*"], now=now
    )
    sent: list[str] = []
    report = state.deliver_pending(
        sent.append, now=now + MAX_DELIVERY_AGE + dt.timedelta(minutes=1)
    )
    assert (report.gave_up, sent) == (1, [])


def test_two_deliverers_at_once_send_each_pending_message_once(state):
    state.transition_with_message("k", True, message=lambda change: change, recipients=["*"])
    sent: list[str] = []
    barrier = threading.Barrier(4)

    def slow_send(text: str) -> None:
        time.sleep(0.2)  # holds the delivery while the others look for it
        sent.append(text)

    def worker():
        barrier.wait()
        state.deliver_pending(slow_send)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sent == ["raised"]
