"""Telegram admin notifications against the Telegram simulator (a real HTTP server)."""

from __future__ import annotations

import logging

import pytest

from sync_pipelines.lib.telegram import (
    MAX_TEXT_CHARS,
    TelegramClient,
    TelegramError,
    parse_admin_ids,
)
from sync_pipelines.resources import TelegramResource
from sync_pipelines.sandbox.telegram_sim import (
    SANDBOX_BOT_TOKEN,
    TELEGRAM_PART,
    TelegramSimulator,
)

ADMINS = ["111", "222", "333"]


@pytest.fixture
def sim():
    simulator = TelegramSimulator(seed=1)
    simulator.start()
    yield simulator
    simulator.stop()


def make_client(sim: TelegramSimulator, token: str = SANDBOX_BOT_TOKEN, sleeps=None):
    return TelegramClient(
        token,
        ADMINS,
        base_url=sim.base_url,
        sleep=(sleeps.append if sleeps is not None else lambda s: None),
    )


def test_send_admins_reaches_every_admin_and_records_message_ids(sim):
    with make_client(sim) as client:
        results = client.send_admins("HubSoft offline")
    assert [r.ok for r in results] == [True, True, True]
    assert [m["chat_id"] for m in sim.messages] == ADMINS
    assert {r.message_id for r in results} == {m["message_id"] for m in sim.messages}


def test_blocked_admin_is_recorded_and_the_others_still_get_the_message(sim):
    sim.blocked_chats = {"222"}
    sim.unknown_chats = {"333"}
    with make_client(sim) as client:
        results = client.send_admins("HubSoft back online")
    by_chat = {r.chat_id: r for r in results}
    assert by_chat["111"].ok
    assert (by_chat["222"].ok, by_chat["222"].status) == (False, 403)
    assert "blocked" in by_chat["222"].error
    assert (by_chat["333"].ok, by_chat["333"].status) == (False, 400)
    assert [m["chat_id"] for m in sim.messages] == ["111"]


def test_429_waits_the_retry_after_from_the_body_then_delivers(sim):
    sim.rate_limit_next(2, retry_after=7)
    sleeps: list[float] = []
    with make_client(sim, sleeps=sleeps) as client:
        result = client.send("111", "recovery: 3 tickets synced")
    assert result.ok
    assert sleeps == [7.0, 7.0]
    assert sim.texts("111") == ["recovery: 3 tickets synced"]


def test_429_beyond_the_retry_budget_is_an_error_not_a_hang(sim):
    sim.rate_limit_next(10, retry_after=500)
    sleeps: list[float] = []
    client = TelegramClient(
        SANDBOX_BOT_TOKEN, ["111"], base_url=sim.base_url, max_429_retries=2,
        max_retry_after=3, sleep=sleeps.append,
    )  # fmt: skip
    with pytest.raises(TelegramError) as error:
        client.send("111", "x")
    assert error.value.status == 429
    assert sleeps == [3, 3]  # capped at max_retry_after


def test_wrong_token_fails_once_and_marks_every_admin_without_resending(sim, caplog):
    wrong = "7000000002:wrong-token-for-the-sandbox-bot-xxxxxxxx"
    with make_client(sim, token=wrong) as client:
        results = client.send_admins("hello")
    assert [r.status for r in results] == [401, 401, 401]
    assert sim.count("sendMessage") == 1
    assert not sim.messages
    text = " ".join(r.error for r in results) + caplog.text
    assert wrong not in text


def test_long_text_is_cut_to_4096_characters(sim):
    with make_client(sim) as client:
        assert client.send("111", "a" * 10_000).ok
    assert len(sim.messages[0]["text"]) == MAX_TEXT_CHARS


def test_bot_token_never_appears_in_errors_or_logs(sim, caplog):
    sim.set_faults(fail_next={"count": 10, "status": 503})
    caplog.set_level(logging.DEBUG)
    with make_client(sim) as client:
        with pytest.raises(TelegramError) as error:
            client.send("111", "x")
    assert error.value.status == 503
    assert SANDBOX_BOT_TOKEN not in str(error.value)
    assert SANDBOX_BOT_TOKEN not in caplog.text
    assert "/bot***" in str(error.value)


def test_parse_admin_ids_trims_and_deduplicates():
    assert parse_admin_ids(" 1, 2,,1 ,3") == ["1", "2", "3"]
    assert parse_admin_ids(None) == []


def test_resource_skips_with_a_reason_when_the_token_is_unset(monkeypatch, caplog):
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    monkeypatch.setenv("ADMIN_USER_IDS", "111")
    caplog.set_level(logging.INFO)
    outcome = (
        TelegramResource.from_env_vars()
        .process_config_and_initialize()
        .notify_admins("x", logging.getLogger("test.telegram"))
    )
    assert outcome.sent == 0 and "TELEGRAM_BOT_TOKEN is not set" in outcome.skipped_reason
    assert "TELEGRAM_BOT_TOKEN is not set" in caplog.text


def test_resource_sends_with_the_sandbox_environment(sim, monkeypatch):
    for key, value in TELEGRAM_PART.env(sim.base_url).items():
        monkeypatch.setenv(key, value)
    sim.blocked_chats = {"222222222"}
    outcome = (
        TelegramResource.from_env_vars()
        .process_config_and_initialize()
        .notify_admins("HubSoft offline")
    )
    assert (outcome.sent, outcome.failed) == (1, 1)
    assert sim.texts() == ["HubSoft offline"]


def test_resource_never_raises_when_telegram_is_unreachable(sim, monkeypatch):
    for key, value in TELEGRAM_PART.env(sim.base_url).items():
        monkeypatch.setenv(key, value)
    sim.set_faults(outage="refuse")
    outcome = TelegramResource.from_env_vars().process_config_and_initialize().notify_admins("x")
    assert outcome.sent == 0 and outcome.failed == 2


def test_5xx_and_429_for_one_chat_wait_what_telegram_asked_and_the_other_chat_is_untouched(sim):
    sim.fail_chat("222", "502", count=1, retry_after=4)
    sim.fail_chat("222", "429", count=1, retry_after=9)
    sim.fail_chat("222", "reset", count=2)  # resent by the HTTP base
    sleeps: list[float] = []
    with make_client(sim, sleeps=sleeps) as client:
        results = client.send_admins("HubSoft OFFLINE")
    assert [r.ok for r in results] == [True, True, True]
    assert sleeps == [4.0, 9.0]
    assert [sim.texts(chat) for chat in ADMINS] == [["HubSoft OFFLINE"]] * 3
