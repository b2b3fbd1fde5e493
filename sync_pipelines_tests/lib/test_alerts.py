"""The alert state store on a real PostgreSQL: one message per transition, whatever repeats."""

from __future__ import annotations

import threading

import pytest

from sync_pipelines.lib.alerts import AlertState, announce
from sync_pipelines.lib.db import Database
from sync_pipelines.lib.migrations import migrate


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
