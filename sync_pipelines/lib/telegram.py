"""Telegram Bot API client for admin notifications (``sendMessage`` only).

Built on the project's HTTP base. What Telegram adds on top of it:
- the bot token is part of the URL path (``/bot<token>/sendMessage``), so it is registered
  with ``register_secret`` and every URL that may reach a log goes through ``redact``;
- a 429 (and sometimes a 5xx) says how long to wait in the JSON body
  (``parameters.retry_after``), not always in a header, so 429s and 5xx replies are handled
  here: wait what Telegram asked (capped; a 5xx without it waits 1 s, 2 s, 4 s…), then
  resend; a connection reset or refused connection is resent by the HTTP base;
- one admin who blocked the bot (403) or a wrong chat id (400) must not stop the others from
  being told: ``send_admins`` records each chat's outcome and never raises for one chat.

Notifications are best effort: callers log the per-chat results, never fail a run on them.
Alert transitions go through ``lib/alerts.py``, which keeps each admin's delivery and retries
it on the next tick: this client is its ``AlertChannel`` (``admin_chat_ids`` + ``send``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .http import HttpClient, HttpError, RetryPolicy
from .redact import redact, register_secret

MAX_TEXT_CHARS = 4096
TRUNCATION_MARK = "\n…"
# Telegram's retry_after can be tens of seconds; a notification is not worth hanging a run.
DEFAULT_MAX_RETRY_AFTER_S = 60.0
# How many times a reply that says "later" (429, 5xx) is waited out before giving up.
DEFAULT_MAX_429_RETRIES = 3
RETRY_LATER_STATUSES = (500, 502, 503, 504)


class TelegramError(RuntimeError):
    """Telegram refused or did not answer a message; ``status`` is the HTTP/API error code."""

    def __init__(self, message: str, *, status: int | None = None, description: str = "") -> None:
        super().__init__(redact(message))
        self.status = status
        self.description = redact(description)


@dataclass(frozen=True)
class SendResult:
    """What happened to one message for one chat."""

    chat_id: str
    ok: bool
    message_id: int | None = None
    status: int | None = None  # HTTP/API error code when not ok (403 blocked, 400 not found...)
    error: str = ""


def truncate(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Telegram rejects texts over 4096 characters: keep the head and mark the cut."""
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATION_MARK)] + TRUNCATION_MARK


def parse_admin_ids(value: str | Iterable[str | int] | None) -> list[str]:
    """``"123, 456,,789"`` → ``["123", "456", "789"]`` (order kept, duplicates dropped)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    seen: list[str] = []
    for item in (i.strip() for i in items):
        if item and item not in seen:
            seen.append(item)
    return seen


class TelegramClient:
    """Sends messages through one bot to chats, and to the configured admins."""

    def __init__(
        self,
        bot_token: str,
        admin_chat_ids: Iterable[str | int] | str = (),
        base_url: str = "https://api.telegram.org",
        http: HttpClient | None = None,
        *,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER_S,
        max_429_retries: int = DEFAULT_MAX_429_RETRIES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not bot_token:
            raise ValueError("TelegramClient needs a bot token (TELEGRAM_BOT_TOKEN)")
        register_secret(bot_token)
        self._token = bot_token
        self.admin_chat_ids = parse_admin_ids(admin_chat_ids)
        self.base_url = base_url.rstrip("/")
        # Lost connections are resent by the base: a rare duplicate admin message is better
        # than a lost outage alert. 429 and 5xx are handled here (retry_after in the body).
        self.http = http or HttpClient(
            timeout=(5.0, 15.0),
            retry=RetryPolicy(
                max_attempts=3, base_backoff=0.5, max_backoff=5.0, retry_statuses=frozenset()
            ),
        )
        self.max_retry_after = max_retry_after
        self.max_429_retries = max_429_retries
        self._sleep = sleep

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> TelegramClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _url(self, method: str) -> str:
        return f"{self.base_url}/bot{self._token}/{method}"

    def send(self, chat_id: str | int, text: str, *, parse_mode: str | None = None) -> SendResult:
        """Send one message; raises ``TelegramError`` when Telegram refuses it."""
        payload: dict[str, Any] = {"chat_id": str(chat_id), "text": truncate(text)}
        if parse_mode:
            payload["parse_mode"] = parse_mode
        for attempt in range(self.max_429_retries + 1):
            try:
                response = self.http.request(
                    "POST",
                    self._url("sendMessage"),
                    json=payload,
                    retry_safe=True,
                    expected=(200, 400, 401, 403, 404, 429, *RETRY_LATER_STATUSES),
                )
            except HttpError as exc:
                raise TelegramError(
                    f"Telegram sendMessage failed: {exc}", status=exc.status
                ) from None
            body = _json(response)
            if response.status_code == 200 and body.get("ok"):
                message_id = (body.get("result") or {}).get("message_id")
                return SendResult(chat_id=str(chat_id), ok=True, message_id=message_id)
            code = int(body.get("error_code") or response.status_code)
            description = str(body.get("description") or response.reason or "")
            retry_later = code == 429 or response.status_code in RETRY_LATER_STATUSES
            if retry_later and attempt < self.max_429_retries:
                wait = _retry_after(body, response.headers.get("Retry-After"))
                if wait is None:
                    wait = float(2**attempt)
                self._sleep(min(wait, self.max_retry_after))
                continue
            raise TelegramError(
                f"Telegram refused the message: {code} {description} "
                f"(POST {redact(self._url('sendMessage'))}, {attempt + 1} attempt(s))",
                status=code,
                description=description,
            )
        raise AssertionError("unreachable: the loop returns or raises")

    def send_admins(self, text: str, *, parse_mode: str | None = None) -> list[SendResult]:
        """Send to every admin chat; each chat's outcome is recorded, none raises.

        A 401 (bad token) would fail for everyone, so the remaining chats are marked with
        the same error without sending.
        """
        results: list[SendResult] = []
        fatal: SendResult | None = None
        for chat_id in self.admin_chat_ids:
            if fatal is not None:
                results.append(SendResult(chat_id, False, status=fatal.status, error=fatal.error))
                continue
            try:
                results.append(self.send(chat_id, text, parse_mode=parse_mode))
            except TelegramError as exc:
                result = SendResult(chat_id, False, status=exc.status, error=str(exc))
                results.append(result)
                if exc.status == 401:
                    fatal = result
        return results


def _json(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(body: dict[str, Any], header: str | None) -> float | None:
    """Seconds Telegram asked to wait (body first, then the header); None when it did not say."""
    params = body.get("parameters") or {}
    for value in (params.get("retry_after") if isinstance(params, dict) else None, header):
        try:
            if value is not None:
                return max(0.0, float(value))
        except (TypeError, ValueError):
            continue
    return None
