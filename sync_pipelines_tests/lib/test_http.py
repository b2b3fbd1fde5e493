"""The HTTP client base against a real local server: retries, waits, safety of POSTs, redaction."""

from __future__ import annotations

import logging
import socket
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from sync_pipelines.lib.http import (
    HttpClient,
    PermanentHttpError,
    RetryPolicy,
    TransientHttpError,
    UncertainOutcomeError,
    parse_retry_after,
)
from sync_pipelines.sandbox.harness import Request, Response, Simulator, route

FAST = RetryPolicy(max_attempts=4, base_backoff=0.01, max_backoff=0.05)


class Waits(list):
    """A client's sleep: records each wait it asks for, then really waits (so the server's
    clock moves on as it would), and the tests assert on the waits, never on elapsed time."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        time.sleep(seconds)


TINY_429 = {"X-Ratelimit-Limit": "60", "X-Ratelimit-Remaining": "0", "X-Ratelimit-Reset": "1"}


class ApiSimulator(Simulator):
    """Items to read and create, plus scripted replies queued per name by the test."""

    name = "api"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.items: dict[int, dict] = {1: {"id": 1, "nome": "primeiro"}}
        self.scripts: dict[str, list[Response]] = {}

    @route("GET", r"/items/(?P<item_id>\d+)")
    def get_item(self, request: Request, item_id: str) -> Response:
        item = self.items.get(int(item_id))
        return Response.json(item) if item else Response.json({"mensagem": "not found"}, 404)

    @route("POST", r"/items")
    def create_item(self, request: Request) -> Response:
        new_id = max(self.items) + 1
        self.items[new_id] = {"id": new_id, **request.json()}
        return Response.json(self.items[new_id], 201)

    @route("GET", r"/scripted/(?P<name>\w+)")
    @route("POST", r"/scripted/(?P<name>\w+)")
    def scripted(self, request: Request, name: str) -> Response:
        queue = self.scripts.get(name)
        if queue:
            return queue.pop(0)
        return Response.json({"ok": True}, headers={"X-Ratelimit-Limit": "60"})

    @route("POST", r"/echo-fail")
    def echo_fail(self, request: Request) -> Response:
        # A badly behaved server that reflects the request (secrets included) in its error.
        reflected = {
            "received_headers": {"Authorization": request.header("authorization")},
            "query": request.query,
            "body": request.body.decode(),
        }
        return Response.json(reflected, 500)


class RecordingLimiter:
    """Stands in for the PostgreSQL-backed limiter: records what the client tells it."""

    def __init__(self) -> None:
        self.acquired = 0
        self.pauses: list[float] = []
        self.limits: list[int] = []

    def acquire(self) -> None:
        self.acquired += 1

    def pause_for(self, seconds: float) -> None:
        self.pauses.append(seconds)

    def observe_limit(self, limit: int) -> None:
        self.limits.append(limit)


@pytest.fixture
def api() -> Iterator[ApiSimulator]:
    with ApiSimulator(seed=1) as sim:
        yield sim


@pytest.fixture
def waits() -> Waits:
    return Waits()


@pytest.fixture
def client(api, waits) -> Iterator[HttpClient]:
    with HttpClient(api.base_url, timeout=(1, 0.3), retry=FAST, sleep=waits) as http:
        yield http


def test_429_waits_at_least_retry_after_then_succeeds(api, client, waits) -> None:
    api.scripts["a"] = [Response.json({"error": "slow down"}, 429, {"Retry-After": "1"})]
    reply = client.request("GET", "/scripted/a")
    assert waits == [1.0]
    assert reply.json() == {"ok": True}
    assert api.count("/scripted/a") == 2
    assert client.stats["429"] == 1 and client.stats["retries"] == 1


def test_tiny_style_429_with_reset_header_and_empty_body_is_honoured(api, client, waits) -> None:
    api.scripts["tiny"] = [Response(429, b"", TINY_429)]
    assert client.request("GET", "/scripted/tiny").status_code == 200
    assert len(waits) == 1 and waits[0] >= 1.0
    assert api.count("/scripted/tiny") == 2


def test_retry_after_as_http_date_and_bogus_values() -> None:
    now = datetime(2025, 1, 28, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Tue, 28 Jan 2025 12:00:07 GMT", now=now) == 7.0
    assert parse_retry_after("Tue, 28 Jan 2025 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_a_huge_server_wait_is_capped_by_the_policy(api) -> None:
    api.scripts["huge"] = [Response(429, b"", {"Retry-After": "3600"})]
    policy = RetryPolicy(max_attempts=2, base_backoff=0.01, max_wait=0.2)
    waits = Waits()
    with HttpClient(api.base_url, retry=policy, sleep=waits) as http:
        assert http.request("GET", "/scripted/huge").status_code == 200
    assert waits == [0.2]


def test_remaining_zero_holds_back_the_next_request(api, client, waits) -> None:
    last = {"X-Ratelimit-Remaining": "0", "X-Ratelimit-Reset": "1"}
    api.scripts["quota"] = [Response.json({"ok": "last one"}, headers=last)]
    assert client.request("GET", "/scripted/quota").json() == {"ok": "last one"}
    assert waits == []  # the reply that says "0 left" is not itself held back
    client.request("GET", "/scripted/quota")
    assert len(waits) == 1 and 0.0 < waits[0] <= 1.0  # the rest of the 1 s reset


def test_5xx_burst_is_retried_until_success(api, client) -> None:
    api.set_faults(fail_next=3)
    assert client.request("GET", "/items/1").json()["nome"] == "primeiro"
    assert api.count("/items/1") == 4
    assert client.stats == {"requests": 4, "retries": 3, "503": 3, "200": 1}


def test_gives_up_after_max_attempts_with_a_transient_error(api, client) -> None:
    api.set_faults(fail_next={"count": 10, "status": 502})
    with pytest.raises(TransientHttpError) as caught:
        client.request("GET", "/items/1")
    assert caught.value.status == 502
    assert caught.value.attempts == 4 and caught.value.retryable
    assert "gave up after 4 attempts" in str(caught.value)
    assert api.count("/items/1") == 4


def test_4xx_is_permanent_and_not_retried_unless_expected(api, client) -> None:
    with pytest.raises(PermanentHttpError) as caught:
        client.request("GET", "/items/999")
    assert caught.value.status == 404 and not caught.value.retryable
    assert "not found" in caught.value.body
    assert api.count("/items/999") == 1
    assert client.request("GET", "/items/999", expected=(200, 404)).status_code == 404
    api.scripts["b"] = [Response.empty(503), Response.json({"mensagem": "no"}, 403)]
    with pytest.raises(PermanentHttpError) as caught:
        client.request("GET", "/scripted/b")
    assert caught.value.status == 403 and caught.value.attempts == 2


def test_read_timeout_is_retried_for_get(api, client) -> None:
    api.set_faults(hang=2)
    with pytest.raises(TransientHttpError) as caught:
        client.request("GET", "/items/1")
    assert caught.value.cause == "ReadTimeout" and caught.value.status is None
    assert api.count("/items/1") == 4


def test_read_timeout_on_a_create_is_not_resent(api, client) -> None:
    api.set_faults(hang={"seconds": 2, "path": "/items"})
    with pytest.raises(UncertainOutcomeError):
        client.request("POST", "/items", json={"nome": "novo"})
    assert api.count("/items", method="POST") == 1


def test_lost_reply_after_commit_is_not_resent(api, client) -> None:
    api.set_faults(drop_after_commit=1)
    with pytest.raises(UncertainOutcomeError):
        client.request("POST", "/items", json={"nome": "novo"})
    assert api.count("/items", method="POST") == 1
    assert [item["nome"] for item in api.items.values()] == ["primeiro", "novo"]


def test_retry_safe_post_is_retried(api, client) -> None:
    api.set_faults(hang={"seconds": 2, "path": "/scripted", "rate": 1.0})
    with pytest.raises(TransientHttpError):
        client.request("POST", "/scripted/upsert", json=[], retry_safe=True)
    assert api.count("/scripted/upsert") == 4


def test_5xx_on_a_create_is_raised_at_once_but_429_is_retried(api, client) -> None:
    api.set_faults(fail_next=1)
    with pytest.raises(TransientHttpError) as caught:
        client.request("POST", "/items", json={"nome": "x"})
    assert caught.value.status == 503 and caught.value.attempts == 1
    api.scripts["create"] = [Response(429, b"", {"Retry-After": "0"})]
    assert client.request("POST", "/scripted/create", json={}).status_code == 200
    assert api.count("/scripted/create") == 2


def test_outage_is_retried_then_reported(api, client) -> None:
    api.set_faults(outage="refuse")
    with pytest.raises(TransientHttpError) as caught:
        client.request("GET", "/items/1")
    assert caught.value.status is None and caught.value.cause == "ConnectionError"
    assert api.count("/items/1") == 4
    api.set_faults(outage=None)
    assert client.request("GET", "/items/1").status_code == 200


def test_connection_refused_is_retried_even_for_a_create() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with HttpClient(f"http://127.0.0.1:{port}", retry=FAST) as http:
        with pytest.raises(TransientHttpError) as caught:
            http.request("POST", "/items", json={"nome": "x"})
        assert not isinstance(caught.value, UncertainOutcomeError)
        assert http.stats["requests"] == 4 and http.stats["ConnectionError"] == 4


def test_rate_limiter_is_asked_before_every_attempt_and_told_about_waits(api) -> None:
    limiter = RecordingLimiter()
    api.scripts["tiny"] = [Response(429, b"", TINY_429)]
    with HttpClient(api.base_url, retry=FAST, rate_limiter=limiter) as http:
        assert http.request("GET", "/scripted/tiny").status_code == 200
    assert limiter.acquired == 2
    assert limiter.pauses == [1.0]
    assert limiter.limits == [60, 60]


def test_secrets_and_personal_data_never_reach_logs_or_errors(api, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = ["SECRET123", "SECRET456", "SECRET789", "ana@example.com", "86214941081"]
    with HttpClient(
        api.base_url, headers={"Authorization": "Bearer SECRET123"}, retry=FAST
    ) as http:
        with pytest.raises(TransientHttpError) as caught:
            http.request(
                "POST",
                "/echo-fail",
                params={"access_token": "SECRET456", "cpf": "86214941081"},
                data={"password": "SECRET789", "email": "ana@example.com"},
                retry_safe=True,
            )
    error = caught.value
    seen = "\n".join(
        [
            caplog.text,
            str(error),
            repr(error),
            error.url,
            error.body,
            "".join(traceback.format_exception(error)),
        ]
    )
    # The data really went through every channel, masked.
    assert "received_headers" in error.body and "password=***" in error.body
    assert "access_token=***" in error.url
    assert "urllib3.connectionpool" in caplog.text and "retry 3/4" in caplog.text
    for secret in secrets:
        assert secret not in seen


def test_429_with_room_left_in_the_window_waits_briefly_not_until_the_reset():
    from sync_pipelines.lib.http import BURST_429_WAIT_S
    from sync_pipelines.sandbox.harness import Response, Simulator, route

    class BurstLimited(Simulator):
        calls = 0

        @route("GET", r"/x")
        def x(self, request):
            type(self).calls += 1
            headers = {
                "X-RateLimit-Limit": "120",
                "X-RateLimit-Remaining": "80",
                "X-RateLimit-Reset": "55",
            }
            if type(self).calls == 1:
                return Response(status=429, body=b"", headers=headers)
            return Response.json({"ok": True}, headers=headers)

    with BurstLimited() as sim:
        waits = Waits()
        client = HttpClient(
            sim.base_url, retry=RetryPolicy(max_attempts=3, max_wait=120), sleep=waits
        )
        assert client.request("GET", "/x").json() == {"ok": True}
    # the short burst wait, not the 55 s until the window's reset
    assert waits == [BURST_429_WAIT_S]
