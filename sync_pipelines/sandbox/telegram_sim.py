"""The Telegram Bot API's ``sendMessage``, simulated on the shared harness.

``POST /bot<token>/sendMessage`` (JSON or form) answers as Telegram does:
``{"ok": true, "result": {"message_id": ...}}``, or ``{"ok": false, "error_code": ...,
"description": ...}`` with the same HTTP status: 401 for a wrong token, 403 "Forbidden: bot
was blocked by the user" for chats in ``blocked_chats``, 400 "Bad Request: chat not found"
for chats in ``unknown_chats``, 400 for an empty or too long text, and 429 with
``parameters.retry_after`` for the next N messages after ``rate_limit_next(N, retry_after)``.

Per-chat faults, as one admin's chat can fail while another's works (a flaky route, a
Telegram shard in trouble): ``fail_chat(chat_id, mode, count, retry_after)`` makes the next
``count`` sendMessage calls for that chat end in a connection reset before Telegram reads
them (``"reset"``), a 5xx (``"500"``, ``"502"``, ``"503"``, ``"504"``; ``parameters.retry_after``
when given) or a 429 with ``retry_after``; none of them delivers the message.

Every accepted message is kept in ``messages`` (also ``GET /__admin/telegram/messages``), so
tests and the demo count what admins were told.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .harness import LoggedRequest, Request, Response, Simulator, _Drop, route
from .simulators import SandboxPart

SANDBOX_BOT_TOKEN = "7000000001:sandbox-telegram-bot-token-not-real-0001"
SANDBOX_ADMIN_IDS = ("111111111", "222222222")
CHAT_FAULT_MODES = frozenset({"reset", "429", "500", "502", "503", "504"})


class TelegramSimulator(Simulator):
    name = "telegram"

    def __init__(
        self,
        seed: int = 0,
        *,
        token: str = SANDBOX_BOT_TOKEN,
        blocked_chats: set[str] | None = None,
        unknown_chats: set[str] | None = None,
        faults: dict[str, Any] | None = None,
    ) -> None:
        self.token = token
        self.blocked_chats = set(blocked_chats or ())
        self.unknown_chats = set(unknown_chats or ())
        self.messages: list[dict[str, Any]] = []
        self._next_id = 1
        self._rate_limited = 0
        self._retry_after = 1
        self._state_lock = threading.Lock()
        self._chat_faults: dict[str, list[tuple[str, int | None]]] = {}
        super().__init__(seed, faults)

    def fail_chat(
        self, chat_id: str, mode: str, count: int = 1, retry_after: int | None = None
    ) -> None:
        """The next ``count`` sendMessage calls for ``chat_id`` fail (module docstring)."""
        if mode not in CHAT_FAULT_MODES:
            raise ValueError(f"unknown chat fault {mode!r}; known: {sorted(CHAT_FAULT_MODES)}")
        if mode == "429" and retry_after is None:
            retry_after = 1
        with self._state_lock:
            self._chat_faults.setdefault(str(chat_id), []).extend([(mode, retry_after)] * count)

    def handle(self, request: Request) -> Response:
        fault = self._chat_fault(request)
        if fault is None:
            return super().handle(request)
        mode, retry_after = fault
        entry = LoggedRequest(
            time.time(), request.method, request.path, {}, {}, fault=f"chat:{mode}"
        )
        with self._lock:
            self._log.append(entry)
        if mode == "reset":
            raise _Drop(reset=True)
        code = int(mode)
        entry.status = code
        extra = {"parameters": {"retry_after": retry_after}} if retry_after is not None else {}
        description = (
            f"Too Many Requests: retry after {retry_after}" if code == 429 else "Bad Gateway"
        )
        return self._error(code, description, **extra)

    def _chat_fault(self, request: Request) -> tuple[str, int | None] | None:
        if not request.path.endswith("/sendMessage"):
            return None
        try:
            content_type = request.header("content-type", "") or ""
            fields = (request.json() if "json" in content_type else request.form()) or {}
        except ValueError:
            return None
        chat_id = str(fields.get("chat_id", "")).strip()
        with self._state_lock:
            queue = self._chat_faults.get(chat_id)
            return queue.pop(0) if queue else None

    def rate_limit_next(self, count: int, retry_after: int = 1) -> None:
        """The next ``count`` sendMessage calls get 429 with ``retry_after`` seconds."""
        with self._state_lock:
            self._rate_limited = count
            self._retry_after = retry_after

    def texts(self, chat_id: str | None = None) -> list[str]:
        with self._state_lock:
            return [m["text"] for m in self.messages if chat_id in (None, m["chat_id"])]

    def reset(self) -> None:
        super().reset()
        with self._state_lock:
            self.messages.clear()
            self._rate_limited = 0
            self._chat_faults.clear()

    @staticmethod
    def _error(code: int, description: str, **extra: Any) -> Response:
        return Response.json(
            {"ok": False, "error_code": code, "description": description, **extra}, code
        )

    @route("POST", r"/bot(?P<token>[^/]+)/sendMessage")
    def send_message(self, request: Request, token: str) -> Response:
        if token != self.token:
            return self._error(401, "Unauthorized")
        content_type = request.header("content-type", "") or ""
        fields = request.json() if "json" in content_type else request.form()
        fields = fields or {}
        chat_id = str(fields.get("chat_id", "")).strip()
        text = str(fields.get("text", ""))
        with self._state_lock:
            if self._rate_limited > 0:
                self._rate_limited -= 1
                wait = self._retry_after
                return self._error(
                    429,
                    f"Too Many Requests: retry after {wait}",
                    parameters={"retry_after": wait},
                )
            if not chat_id or chat_id in self.unknown_chats:
                return self._error(400, "Bad Request: chat not found")
            if chat_id in self.blocked_chats:
                return self._error(403, "Forbidden: bot was blocked by the user")
            if not text.strip():
                return self._error(400, "Bad Request: message text is empty")
            if len(text) > 4096:
                return self._error(400, "Bad Request: message is too long")
            message = {
                "message_id": self._next_id,
                "chat_id": chat_id,
                "text": text,
                "parse_mode": fields.get("parse_mode"),
                "date": int(time.time()),
            }
            self._next_id += 1
            self.messages.append(message)
        result = {
            "message_id": message["message_id"],
            "date": message["date"],
            "chat": {"id": int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id},
            "text": text,
        }
        return Response.json({"ok": True, "result": result})

    @route("GET", r"/__admin/telegram/messages")
    def admin_messages(self, request: Request) -> Response:
        with self._state_lock:
            return Response.json(list(self.messages))

    @route("POST", r"/__admin/telegram/rate_limit")
    def admin_rate_limit(self, request: Request) -> Response:
        spec = request.json() or {}
        self.rate_limit_next(int(spec.get("count", 1)), int(spec.get("retry_after", 1)))
        return Response.json({"ok": True})

    @route("POST", r"/__admin/telegram/blocked")
    def admin_blocked(self, request: Request) -> Response:
        self.blocked_chats = {str(c) for c in (request.json() or {}).get("chat_ids", [])}
        return Response.json({"ok": True, "blocked": sorted(self.blocked_chats)})


def _sandbox_env(base_url: str) -> dict[str, str]:
    return {
        "TELEGRAM_BOT_TOKEN": SANDBOX_BOT_TOKEN,
        "ADMIN_USER_IDS": ",".join(SANDBOX_ADMIN_IDS),
        "TELEGRAM_API_BASE_URL": base_url,
    }


TELEGRAM_PART = SandboxPart(
    name="telegram",
    simulator=lambda seed: TelegramSimulator(seed),
    env=_sandbox_env,
)
