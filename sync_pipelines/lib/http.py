"""The one HTTP client every source client builds on.

``HttpClient`` keeps one keep-alive ``requests.Session`` and owns what every external API
needs: connect/read timeouts, retries with full-jitter exponential backoff (tenacity),
``Retry-After`` and ``X-RateLimit-*`` headers, an optional shared rate limiter, call
statistics for run metadata, and redaction of every URL, body snippet and log line.

Retries never duplicate writes: a call is retried after a reply (429/5xx) or a lost
connection only when it is safe to send twice (idempotent method, or ``retry_safe=True``).
A request that never left (connection refused, connect timeout) and a 429 (rejected before
processing) are always retried.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import requests
import urllib3.exceptions
from requests.models import PreparedRequest
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from sync_pipelines.lib.redact import install_log_redaction, redact

log = logging.getLogger("sync_pipelines.http")
# urllib3 logs every request line, query string and Telegram bot token included.
install_log_redaction("urllib3")
install_log_redaction("sync_pipelines.http")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
BODY_SNIPPET_CHARS = 300
BURST_429_WAIT_S = 1.0


class RateLimiter(Protocol):
    """A request budget shared by every process that uses one API account."""

    def acquire(self) -> None:
        """Block until one request may be sent."""

    def pause_for(self, seconds: float) -> None:
        """The API said wait (429 / remaining 0): every process sharing the limiter waits."""

    def observe_limit(self, limit: int) -> None:
        """The API announced its limit (``X-RateLimit-Limit``)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts, backoff bounds and which statuses are worth a retry."""

    max_attempts: int = 5
    base_backoff: float = 0.5
    max_backoff: float = 30.0
    # Cap on any single wait, including ones a server announces, so a bogus header
    # cannot hang a run.
    max_wait: float = 120.0
    retry_statuses: frozenset[int] = field(
        default_factory=lambda: frozenset({408, 429, 500, 502, 503, 504})
    )


class HttpError(Exception):
    """A call that did not give an expected reply. Everything in it is already redacted."""

    def __init__(
        self,
        message: str,
        *,
        method: str,
        url: str,
        status: int | None = None,
        body: str = "",
        retryable: bool = False,
        attempts: int = 1,
        cause: str | None = None,
    ) -> None:
        self.method = method
        self.url = redact(url)
        self.status = status
        self.body = redact(body)
        self.retryable = retryable
        self.attempts = attempts
        # The class name of a network error, never the exception itself: its message
        # holds the unredacted URL.
        self.cause = cause
        super().__init__(redact(message))


class TransientHttpError(HttpError):
    """Worth trying again later: 429/5xx/network errors after retries, or not retried."""


class UncertainOutcomeError(TransientHttpError):
    """The request may have reached the server but no reply came back (read timeout,
    connection reset). For a call that creates something, look it up before resending."""


class PermanentHttpError(HttpError):
    """A reply that retrying will not change (4xx other than 408/429, unexpected status)."""


class _RetrySignal(Exception):
    """Internal: one attempt failed in a way that may be retried."""

    def __init__(self, reason: str, error: HttpError, wait_hint: float | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error
        self.wait_hint = wait_hint


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    # requests' headers are case-insensitive, which covers X-Ratelimit-* spellings.
    value = headers.get(name)
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request provably never reached the server (safe to resend anything)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and exc.args:
        reason = exc.args[0]
        reason = getattr(reason, "reason", reason)  # MaxRetryError wraps the real one
        # NewConnectionError (refused, DNS) subclasses ConnectTimeoutError in urllib3 2.
        return isinstance(reason, urllib3.exceptions.ConnectTimeoutError)
    return False


class HttpClient:
    """One keep-alive session to one API, with timeouts, retries, rate limits and redaction.

    Source clients subclass or wrap it and call ``request``. ``stats`` counts requests,
    retries and replies by status for run metadata. Not meant to be shared between threads.
    """

    def __init__(
        self,
        base_url: str = "",
        *,
        headers: Mapping[str, str] | None = None,
        timeout: tuple[float, float] = (5.0, 30.0),
        retry: RetryPolicy | None = None,
        rate_limiter: RateLimiter | None = None,
        session: requests.Session | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.rate_limiter = rate_limiter
        self.session = session or requests.Session()
        self.session.headers.update({"User-Agent": "sync_pipelines/0.1"})
        self.session.headers.update(headers or {})
        self._rng = rng or random.Random()
        # Every wait (retry backoff, Retry-After, an exhausted quota) goes through it, so a
        # test can see the waits asked for instead of timing them.
        self._sleep = sleep
        self._stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        # Without a shared limiter, "remaining 0" holds back this client's next request.
        self._not_before = 0.0

    @property
    def stats(self) -> dict[str, int]:
        """Counts so far: ``requests``, ``retries``, one key per status (``"429"``) and per
        network error class (``"ReadTimeout"``)."""
        with self._stats_lock:
            return dict(self._stats)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        if not self.base_url:
            raise ValueError(f"relative path {redact(path_or_url)!r} but no base_url")
        return f"{self.base_url}/{path_or_url.lstrip('/')}"

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        retry_safe: bool | None = None,
        expected: Collection[int] = (200, 201, 204),
        timeout: tuple[float, float] | None = None,
    ) -> requests.Response:
        """Send one call, retrying what is safe to retry; return a reply with an expected status.

        ``retry_safe=None`` means "retry if the method is idempotent"; pass ``True`` for a
        POST that may be sent twice (an upsert), ``False`` to never resend after sending.
        Raises ``PermanentHttpError``, ``TransientHttpError`` or ``UncertainOutcomeError``.
        """
        method = method.upper()
        url = self.url(path_or_url)
        safe = method in IDEMPOTENT_METHODS if retry_safe is None else retry_safe
        prepared = PreparedRequest()
        prepared.prepare_url(url, params)
        shown_url = redact(prepared.url or url)

        attempts = 0

        def attempt() -> requests.Response:
            nonlocal attempts
            attempts += 1
            try:
                return self._attempt(
                    method,
                    url,
                    shown_url,
                    safe=safe,
                    expected=expected,
                    timeout=timeout or self.timeout,
                    params=params,
                    json=json,
                    data=data,
                    headers=headers,
                )
            except HttpError as error:
                error.attempts = attempts
                raise

        retrying = Retrying(
            stop=stop_after_attempt(self.retry.max_attempts),
            wait=self._wait_seconds,
            retry=retry_if_exception_type(_RetrySignal),
            before_sleep=self._before_retry,
            sleep=self._sleep,
            reraise=True,
        )
        failure: _RetrySignal | None = None
        try:
            return retrying(attempt)
        except _RetrySignal as signal:
            failure = signal
        # Raised outside the except block so no exception context (with its raw URL) is
        # chained onto the error.
        error = failure.error
        error.attempts = attempts
        error.args = (f"{error.args[0]} (gave up after {error.attempts} attempts)",)
        raise error

    def _attempt(
        self,
        method: str,
        url: str,
        shown_url: str,
        *,
        safe: bool,
        expected: Collection[int],
        timeout: tuple[float, float],
        **kwargs: Any,
    ) -> requests.Response:
        self._wait_for_turn()
        self._count("requests")
        network_error: requests.RequestException | None = None
        try:
            response = self.session.request(method, url, timeout=timeout, **kwargs)
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as exc:
            network_error = exc
        if network_error is not None:
            return self._network_failure(method, shown_url, network_error, safe)

        status = response.status_code
        self._count(str(status))
        server_wait = self._observe_rate_headers(response)
        if status in expected:
            return response

        body = response.text[:BODY_SNIPPET_CHARS] if response.content else ""
        message = f"{method} {shown_url} -> HTTP {status}"
        if body:
            message += f": {body}"
        if status not in self.retry.retry_statuses:
            raise PermanentHttpError(
                message, method=method, url=shown_url, status=status, body=body
            )
        error = TransientHttpError(
            message, method=method, url=shown_url, status=status, body=body, retryable=True
        )
        # A 429 was rejected before any processing, so even a create may be resent.
        if safe or status == 429:
            raise _RetrySignal(f"HTTP {status}", error, server_wait)
        raise error

    def _network_failure(
        self, method: str, shown_url: str, exc: requests.RequestException, safe: bool
    ) -> requests.Response:
        name = type(exc).__name__
        self._count(name)
        never_sent = _never_sent(exc)
        message = f"{method} {shown_url} -> {name}: {exc}"
        if safe or never_sent:
            error = TransientHttpError(
                message, method=method, url=shown_url, retryable=True, cause=name
            )
            raise _RetrySignal(name, error, None)
        raise UncertainOutcomeError(
            message + " (request may have been processed; not resent)",
            method=method,
            url=shown_url,
            retryable=True,
            cause=name,
        )

    def _observe_rate_headers(self, response: requests.Response) -> float | None:
        """Report limits to the shared limiter; return how long the server asked us to wait."""
        headers = response.headers
        limit = _header_number(headers, "X-RateLimit-Limit")
        if limit is not None and self.rate_limiter is not None:
            self.rate_limiter.observe_limit(int(limit))
        wait = parse_retry_after(headers.get("Retry-After"))
        remaining = _header_number(headers, "X-RateLimit-Remaining")
        if wait is None and remaining is not None and remaining > 0 and response.status_code == 429:
            # Refused while the announced window still has room: a shorter (burst) bucket
            # said no. Waiting for the long window's reset would idle for up to a minute.
            wait = BURST_429_WAIT_S
        if wait is None and (response.status_code == 429 or remaining == 0):
            # Tiny's X-RateLimit-Reset is seconds until the window resets, not a timestamp.
            wait = _header_number(headers, "X-RateLimit-Reset")
        if wait is None:
            return None
        wait = min(max(wait, 0.0), self.retry.max_wait)
        if response.status_code == 429 or remaining == 0:
            if self.rate_limiter is not None:
                self.rate_limiter.pause_for(wait)
            else:
                self._not_before = max(self._not_before, time.monotonic() + wait)
        return wait

    def _wait_for_turn(self) -> None:
        if self.rate_limiter is not None:
            self.rate_limiter.acquire()
            return
        delay = self._not_before - time.monotonic()
        if delay > 0:
            self._sleep(delay)

    def _wait_seconds(self, state: RetryCallState) -> float:
        signal = state.outcome.exception() if state.outcome else None
        if isinstance(signal, _RetrySignal) and signal.wait_hint is not None:
            return signal.wait_hint
        # Full jitter: uniform in [0, min(max, base * 2^n)] spreads retrying processes out.
        ceiling = self.retry.base_backoff * 2 ** (state.attempt_number - 1)
        return self._rng.uniform(0, min(self.retry.max_backoff, ceiling, self.retry.max_wait))

    def _before_retry(self, state: RetryCallState) -> None:
        self._count("retries")
        # Only _RetrySignal is retried, so that is what the outcome holds.
        signal: _RetrySignal = state.outcome.exception()  # type: ignore[union-attr,assignment]
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "retry %d/%d %s %s after %s; waiting %.2f s",
            state.attempt_number,
            self.retry.max_attempts,
            signal.error.method,
            signal.error.url,  # already redacted
            signal.reason,
            wait,
        )

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self._stats[key] += 1
