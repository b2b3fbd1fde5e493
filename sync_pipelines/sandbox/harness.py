"""The one harness every simulated external service (Tiny, HubSoft, DETRAN, PostgREST,
Telegram) is built on.

A ``Simulator`` is a real HTTP server on 127.0.0.1 (ephemeral port by default) served from a
background thread, so clients under test use real sockets, timeouts and keep-alive. Subclasses
declare routes with ``@route`` and keep their own seeded, deterministic data (``self.rng``).

The harness adds what every simulator needs the same way:
- a request log (``requests_log()``, ``count()``, ``GET /__admin/requests``);
- fault injection, set at construction, from Python (``set_faults``) or over HTTP
  (``POST /__admin/faults``; ``POST /__admin/reset`` clears faults and log). Admin paths
  (``/__admin/...``) are never faulted nor logged. Faults, each optionally limited by
  ``path`` (regex, searched) and ``method``:

  ============================  =====================================================
  ``error_rate``                ``{"rate": 0.2, "status": 503}``: random 5xx (seeded)
  ``fail_next``                 ``{"count": 3, "status": 503}``: the next N requests fail
  ``rate_limit``                ``{"requests": 5, "window": 1.0}``: then 429 + Retry-After
  ``latency``                   ``{"seconds": 0.2}``: every reply is slow
  ``timeout_rate`` / ``hang``   ``{"rate": 1.0, "seconds": 10}``: sleep past the client's
                                read timeout, then handle the request anyway (processed,
                                reply too late)
  ``drop_after_commit``         ``{"count": 1}`` or ``{"rate": 0.5}``: run the handler, then close the connection
                                without a reply (the "reply lost after commit" case)
  ``malformed_rate``            ``{"rate": 0.1}``: the handler runs, the reply is garbage
                                with status 200
  ``outage``                    ``{"mode": "refuse" | "503" | "timeout"}``: reset every
                                connection / answer 503 / answer 504 after ``seconds``
                                (30), never processing the request
  ============================  =====================================================

  A bare value stands for the key shown first: ``fail_next=3``, ``outage="refuse"``,
  ``hang=5``; ``None`` removes a fault.

Handlers run concurrently (one thread per connection); an exception in one becomes a 500
with a JSON body and a logged traceback.
"""

from __future__ import annotations

import json as jsonlib
import logging
import random
import re
import socket
import struct
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from sync_pipelines.lib.redact import install_log_redaction, redact_mapping

log = logging.getLogger("sync_pipelines.sandbox")
# The access log carries request lines with tokens in query strings and bot URLs, and the
# simulated data holds CPFs and phones: the sandbox's logs are redacted like production's.
install_log_redaction("sync_pipelines.sandbox")

ADMIN_PREFIX = "/__admin/"
# Never kept in the request log.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "apikey", "cookie"})

# fault name -> (key a bare value stands for, defaults)
FAULT_DEFAULTS: dict[str, tuple[str, dict[str, Any]]] = {
    "error_rate": ("rate", {"status": 503}),
    "fail_next": ("count", {"status": 503}),
    "rate_limit": ("requests", {"window": 1.0}),
    "latency": ("seconds", {}),
    "timeout_rate": ("rate", {"seconds": 30.0}),
    "hang": ("seconds", {"rate": 1.0}),
    "drop_after_commit": ("count", {}),
    "malformed_rate": ("rate", {}),
    "outage": ("mode", {"seconds": 30.0}),
}

F = TypeVar("F", bound=Callable[..., "Response"])


def route(method: str, pattern: str) -> Callable[[F], F]:
    """Declare a handler for ``method`` and a path regex (full match, named groups become
    keyword arguments): ``@route("GET", r"/ordem-servico/(?P<id>\\d+)")``."""

    def mark(func: F) -> F:
        func.__dict__.setdefault("_sim_routes", []).append((method.upper(), pattern))
        return func

    return mark


@dataclass
class Request:
    """What a handler sees of one HTTP request."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    query_lists: dict[str, list[str]] = field(default_factory=dict)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        return jsonlib.loads(self.body.decode("utf-8")) if self.body else None

    def form_lists(self) -> dict[str, list[str]]:
        charset = _charset(self.header("content-type", "")) or "utf-8"
        return parse_qs(self.body.decode(charset), keep_blank_values=True)

    def form(self) -> dict[str, str]:
        """Form fields; a repeated field gives its first value, as a Java servlet does."""
        return {k: v[0] for k, v in self.form_lists().items()}

    def cookies(self) -> dict[str, str]:
        pairs = (p.strip().partition("=") for p in (self.header("cookie") or "").split(";"))
        return {k: v for k, _, v in pairs if k}


@dataclass
class Response:
    """What a handler returns; build it with ``json``, ``html``, ``text`` or directly."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        body = jsonlib.dumps(data, ensure_ascii=False).encode("utf-8")
        return cls(
            status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        )

    @classmethod
    def html(
        cls,
        text: str,
        status: int = 200,
        charset: str = "utf-8",
        headers: dict[str, str] | None = None,
    ) -> Response:
        # Strict encoding: a character the page's charset cannot hold is a simulator bug.
        content_type = f"text/html;charset={charset.upper()}"
        return cls(status, text.encode(charset), {"Content-Type": content_type, **(headers or {})})

    @classmethod
    def text(cls, text: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        content_type = "text/plain; charset=utf-8"
        return cls(status, text.encode("utf-8"), {"Content-Type": content_type, **(headers or {})})

    @classmethod
    def empty(cls, status: int = 204, headers: dict[str, str] | None = None) -> Response:
        return cls(status, b"", dict(headers or {}))


@dataclass
class LoggedRequest:
    time: float
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    status: int | None = None  # None: no reply was sent (dropped, refused, hung up)
    fault: str | None = None


def _charset(content_type: str | None) -> str | None:
    match = re.search(r"charset=([\w-]+)", content_type or "", re.I)
    return match.group(1) if match else None


class _Drop(Exception):
    """Close the connection without a reply; ``reset`` sends a TCP RST instead of a FIN."""

    def __init__(self, reset: bool) -> None:
        super().__init__()
        self.reset = reset


class Simulator:
    """Base class of every fake external service: routing, request log, faults, a server."""

    name = "simulator"

    def __init__(self, seed: int = 0, faults: dict[str, Any] | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        # Faults draw from their own generator so injecting them leaves the data unchanged.
        self._fault_rng = random.Random(f"faults-{seed}")
        self._lock = threading.RLock()
        self._faults: dict[str, dict[str, Any]] = {}
        self._window: dict[str, float] = {"start": 0.0, "count": 0}
        self._log: list[LoggedRequest] = []
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Response]]] = []
        # Walk base classes first and keep definition order, so the harness's admin routes
        # come first and a subclass's overriding method replaces its parent's.
        found: dict[str, list[tuple[str, str]]] = {}
        for klass in reversed(type(self).__mro__):
            for attr_name, attr in vars(klass).items():
                if hasattr(attr, "_sim_routes"):
                    found[attr_name] = attr._sim_routes
        for attr_name, specs in found.items():
            for method, pattern in specs:
                self.add_route(method, pattern, getattr(self, attr_name))
        if faults:
            self.set_faults(**faults)

    # ---- server lifecycle -------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve from a background thread; return the base URL (``http://127.0.0.1:PORT``)."""
        if self._server is not None:
            return self.base_url
        self._stopping.clear()
        self._server = _Server((host, port), _handler_class(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.name}-server",
            daemon=True,
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()  # wakes handlers sleeping in latency/hang faults
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{self.name} is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- routes -----------------------------------------------------------------------

    def add_route(self, method: str, pattern: str, handler: Callable[..., Response]) -> None:
        self._routes.append((method.upper(), re.compile(pattern), handler))

    @route("GET", r"/__admin/requests")
    def _admin_requests(self, request: Request) -> Response:
        return Response.json(self.requests_log())

    @route("GET", r"/__admin/faults")
    def _admin_get_faults(self, request: Request) -> Response:
        return Response.json(self.faults())

    @route("POST", r"/__admin/faults")
    def _admin_set_faults(self, request: Request) -> Response:
        try:
            self.set_faults(**(request.json() or {}))
        except ValueError as exc:
            return Response.json({"error": str(exc)}, 400)
        return Response.json(self.faults())

    @route("POST", r"/__admin/reset")
    def _admin_reset(self, request: Request) -> Response:
        self.reset()
        return Response.json({"ok": True})

    # ---- request log ------------------------------------------------------------------

    def requests_log(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(entry) for entry in self._log]

    def count(self, path_regex: str | None = None, method: str | None = None) -> int:
        """Logged requests whose path matches ``path_regex`` (searched) and method."""
        pattern = re.compile(path_regex) if path_regex else None
        with self._lock:
            return sum(
                1
                for entry in self._log
                if (pattern is None or pattern.search(entry.path))
                and (method is None or entry.method == method.upper())
            )

    # ---- faults -----------------------------------------------------------------------

    def set_faults(self, **faults: Any) -> None:
        """Add or replace faults (see the module docstring); a ``None`` value removes one."""
        with self._lock:
            for name, spec in faults.items():
                if name not in FAULT_DEFAULTS:
                    raise ValueError(f"unknown fault {name!r}; known: {sorted(FAULT_DEFAULTS)}")
                if spec is None:
                    self._faults.pop(name, None)
                    continue
                main_key, defaults = FAULT_DEFAULTS[name]
                spec = dict(spec) if isinstance(spec, dict) else {main_key: spec}
                self._faults[name] = {**defaults, **spec}
                if name == "rate_limit":
                    self._window = {"start": 0.0, "count": 0}

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def faults(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: dict(spec) for name, spec in self._faults.items()}

    def reset(self) -> None:
        """Clear faults and the request log; subclasses extend it to reset their own state."""
        with self._lock:
            self._faults.clear()
            self._log.clear()

    def _active(self, name: str, request: Request) -> dict[str, Any] | None:
        spec = self._faults.get(name)
        if spec is None:
            return None
        if spec.get("path") and not re.search(spec["path"], request.path):
            return None
        if spec.get("method") and spec["method"].upper() != request.method:
            return None
        return spec

    def _chance(self, rate: float) -> bool:
        return rate > 0 and self._fault_rng.random() < rate

    def _pre_faults(self, request: Request) -> tuple[str | None, Response | None, float]:
        """Decide the faults that act before the handler: (fault name, reply, sleep seconds)."""
        with self._lock:
            outage = self._active("outage", request)
            if outage:
                mode = str(outage["mode"])
                if mode == "refuse":
                    raise _Drop(reset=True)
                if mode == "timeout":
                    # Unresponsive, then a gateway error; the request is never processed.
                    reply = Response.json({"error": "gateway timeout"}, 504)
                    return "outage:timeout", reply, float(outage["seconds"])
                return "outage:503", Response.json({"error": "service unavailable"}, 503), 0.0

            limit = self._active("rate_limit", request)
            if limit:
                now = time.monotonic()
                window = float(limit["window"])
                if now - self._window["start"] >= window:
                    self._window = {"start": now, "count": 0}
                if self._window["count"] >= int(limit["requests"]):
                    retry_after = max(1, int(self._window["start"] + window - now + 0.999))
                    reply = Response.json(
                        {"error": "too many requests"}, 429, {"Retry-After": str(retry_after)}
                    )
                    return "rate_limit", reply, 0.0
                self._window["count"] += 1

            fail = self._active("fail_next", request)
            if fail and int(fail["count"]) > 0:
                fail["count"] = int(fail["count"]) - 1
                status = int(fail["status"])
                return "fail_next", Response.json({"error": f"injected {status}"}, status), 0.0

            errors = self._active("error_rate", request)
            if errors and self._chance(float(errors["rate"])):
                status = int(errors["status"])
                return "error_rate", Response.json({"error": f"injected {status}"}, status), 0.0

            for name in ("hang", "timeout_rate"):
                slow = self._active(name, request)
                if slow and self._chance(float(slow["rate"])):
                    return name, None, float(slow["seconds"])

            latency = self._active("latency", request)
            if latency:
                return None, None, float(latency["seconds"])
        return None, None, 0.0

    def _post_faults(self, request: Request) -> str | None:
        """Decide the faults that act on the handler's reply: drop it or garble it."""
        with self._lock:
            drop = self._active("drop_after_commit", request)
            if drop:
                if "rate" in drop and self._chance(float(drop["rate"])):
                    return "drop_after_commit"
                if int(drop.get("count", 0)) > 0:
                    drop["count"] = int(drop["count"]) - 1
                    return "drop_after_commit"
            malformed = self._active("malformed_rate", request)
            if malformed and self._chance(float(malformed["rate"])):
                return "malformed_rate"
        return None

    def _delay(self, seconds: float) -> None:
        """Hold the reply back (latency, hang, outage timeout faults); ``stop`` cuts it short.
        Tests override it to see the delay asked for without measuring time."""
        self._stopping.wait(seconds)

    # ---- dispatch ---------------------------------------------------------------------

    def _call_handler(self, request: Request) -> Response:
        allowed = False
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            if method != request.method:
                allowed = True
                continue
            try:
                return handler(request, **match.groupdict())
            except Exception as exc:
                log.exception(
                    "%s handler failed for %s %s", self.name, request.method, request.path
                )
                detail = "".join(traceback.format_exception_only(exc)).strip()
                return Response.json({"error": "simulator handler failed", "detail": detail}, 500)
        if allowed:
            return Response.json({"error": "method not allowed"}, 405)
        return Response.json({"error": "not found", "path": request.path}, 404)

    def handle(self, request: Request) -> Response:
        """Faults, then the route's handler; raises ``_Drop`` when no reply must be sent."""
        if request.path.startswith(ADMIN_PREFIX):
            return self._call_handler(request)
        entry = LoggedRequest(
            time=time.time(),
            method=request.method,
            path=request.path,
            query=redact_mapping(request.query, pii=False),
            headers={k: v for k, v in request.headers.items() if k not in SECRET_HEADERS},
        )
        with self._lock:
            self._log.append(entry)
        try:
            fault, reply, sleep = self._pre_faults(request)
        except _Drop:
            entry.fault = "outage:refuse"
            raise
        entry.fault = fault
        if sleep:
            self._delay(sleep)
        if reply is None:
            reply = self._call_handler(request)
            post = self._post_faults(request)
            if post == "drop_after_commit":
                entry.fault = post
                raise _Drop(reset=False)
            if post == "malformed_rate":
                entry.fault = post
                reply = Response(
                    200, b'{"itens": [{"id": 1,, <html>\x00', {"Content-Type": "application/json"}
                )
        entry.status = reply.status
        return reply


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A handler asleep in a hang fault must not hold up stop().
    block_on_close = False
    allow_reuse_address = True


def _handler_class(simulator: Simulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1 keeps connections alive, as the real services and our clients do.
        protocol_version = "HTTP/1.1"
        # Headers and body as one write, sent at once: otherwise Nagle plus delayed ACKs
        # add ~40 ms to every reply on a kept-alive connection.
        wbufsize = -1
        disable_nagle_algorithm = True
        server_version = simulator.name

        def _serve(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            query_lists = parse_qs(split.query, keep_blank_values=True)
            request = Request(
                method=self.command,
                path=split.path,
                query={k: v[0] for k, v in query_lists.items()},
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                query_lists=query_lists,
            )
            try:
                reply = simulator.handle(request)
            except _Drop as drop:
                self._hang_up(drop.reset)
                return
            try:
                self.send_response(reply.status)
                headers = {"Content-Length": str(len(reply.body)), **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up (read timeout) before a slow reply was ready.
                self.close_connection = True

        def _hang_up(self, reset: bool) -> None:
            self.close_connection = True
            try:
                if reset:
                    # SO_LINGER 0 makes close() send RST: the client sees "connection reset".
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                else:
                    self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # the client is already gone: nothing left to hang up on

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s: " + format, simulator.name, *args)

    return Handler
