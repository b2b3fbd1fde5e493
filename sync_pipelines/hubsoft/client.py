"""HubSoft integration API client (contracts/hubsoft.md), on the project's HTTP base.

Three HubSoft habits shape it:
- **Tokens** come from the password grant; there is no refresh flow in practice. A token is
  reused for the life of the client, asked again on a 401 (admins revoke tokens at any time)
  and at least once a day.
- **The envelope decides, not the HTTP status**: business and validation errors come back as
  HTTP 200 with ``{"status": "error", "msg": ..., "errors": [...]}`` and become
  ``HubSoftRejected``; success is ``"success"`` or, in one documented reply, ``"suscess"``.
- **Creating a ticket has no idempotency key.** ``open_ticket`` is sent once, never resent by
  the HTTP layer; when no reply came back (``HubSoftUncertain``) the ticket may exist, and the
  caller must look it up before sending again (sync.py does).

Every error message goes through ``redact``: CPFs in query strings, tokens, passwords.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from ..lib.http import (
    HttpClient,
    HttpError,
    PermanentHttpError,
    RetryPolicy,
    UncertainOutcomeError,
)
from ..lib.redact import redact, register_secret

API = "/api/v1/integracao"
TOKEN_PATH = "/oauth/token"
SUCCESS = frozenset({"success", "suscess"})  # "suscess" (sic) is in HubSoft's own docs
TOKEN_MAX_AGE = dt.timedelta(days=1)
PAGE_SIZE_MAX = 500


class HubSoftError(RuntimeError):
    """HubSoft did not do what was asked. Messages are redacted."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class HubSoftConfigError(HubSoftError):
    """HubSoft is not configured (missing URL or credentials)."""


class HubSoftAuthError(HubSoftError):
    """The password grant was refused: the API user's credentials are wrong or disabled."""


class HubSoftRejected(HubSoftError):
    """A business/validation error (HTTP 200 ``"status": "error"``): resending will not help."""

    def __init__(self, msg: str, errors: list[str] | None = None) -> None:
        self.msg = redact(msg)
        self.errors = [redact(e) for e in errors or []]
        detail = f" ({'; '.join(self.errors)})" if self.errors else ""
        super().__init__(f"HubSoft rejected the request: {msg}{detail}")


class HubSoftUnavailable(HubSoftError):
    """HubSoft could not be reached or answered 5xx/timeouts after retries."""


class HubSoftUncertain(HubSoftUnavailable):
    """A write may have been processed but its reply was lost: look it up before resending."""


@dataclass(frozen=True)
class HubSoftSettings:
    base_url: str
    client_id: str
    client_secret: str
    username: str
    password: str

    @classmethod
    def from_variables(cls, env: Mapping[str, str]) -> HubSoftSettings:
        """Settings from values keyed by their variable names; names every missing one."""
        variables = {
            "base_url": "HUBSOFT_API_URL",
            "client_id": "HUBSOFT_CLIENT_ID",
            "client_secret": "HUBSOFT_CLIENT_SECRET",
            "username": "HUBSOFT_USERNAME",
            "password": "HUBSOFT_PASSWORD",
        }
        values = {field: env.get(var, "").strip() for field, var in variables.items()}
        missing = [var for field, var in variables.items() if not values[field]]
        if missing:
            raise HubSoftConfigError(f"HubSoft is not configured: set {', '.join(missing)}")
        return cls(**values)


def hubsoft_enabled(value: str | None) -> bool:
    """The ``HUBSOFT_ENABLED`` value (unset: true): false/0/no/off turns the integration off."""
    value = "true" if value is None else value.strip().lower()
    return value not in ("false", "0", "no", "off", "")


@dataclass(frozen=True)
class HealthCheck:
    """One check of HubSoft: reachable at all (quick) or token + authenticated GET (full)."""

    kind: str  # "quick" | "full"
    online: bool
    latency_ms: float | None
    error: str = ""
    checked_at: dt.datetime = dt.datetime.min.replace(tzinfo=dt.UTC)


# Health checks must answer within a sensor tick: one attempt, short timeouts.
HEALTH_TIMEOUT = (3.0, 8.0)
HEALTH_RETRY = RetryPolicy(max_attempts=1)


class HubSoftClient:
    """One HubSoft tenant. Not thread-safe (one client per run or sensor tick)."""

    def __init__(
        self,
        settings: HubSoftSettings,
        *,
        timeout: tuple[float, float] = (5.0, 30.0),
        retry: RetryPolicy | None = None,
        clock=lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.settings = settings
        for secret in (settings.client_secret, settings.password):
            register_secret(secret)
        self.http = HttpClient(settings.base_url, timeout=timeout, retry=retry)
        self.http.session.headers.update({"Accept": "application/json"})
        self._clock = clock
        self._token: str | None = None
        self._token_at: dt.datetime | None = None
        self.token_grants = 0

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> HubSoftClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stats(self) -> dict[str, int]:
        return self.http.stats | {"token_grants": self.token_grants}

    # ---- auth -------------------------------------------------------------------------

    def token(self, *, renew: bool = False) -> str:
        """The bearer token: reused, renewed when asked (after a 401) or a day old."""
        now = self._clock()
        if (
            not renew
            and self._token
            and self._token_at is not None
            and now - self._token_at < TOKEN_MAX_AGE
        ):
            return self._token
        payload = {
            "grant_type": "password",
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret,
            "username": self.settings.username,
            "password": self.settings.password,
        }
        try:
            # Asking for a token twice is harmless, so lost replies may be resent.
            reply = self.http.request(
                "POST", TOKEN_PATH, json=payload, retry_safe=True, expected=(200, 400, 401)
            )
        except HttpError as exc:
            raise _unavailable(exc) from None
        body = _json_body(reply)
        token = body.get("access_token")
        if reply.status_code != 200 or not token:
            reason = body.get("error_description") or body.get("message") or body.get("error")
            raise HubSoftAuthError(
                f"HubSoft refused the API credentials (HTTP {reply.status_code}: {reason}); "
                "check HUBSOFT_CLIENT_ID, HUBSOFT_CLIENT_SECRET, HUBSOFT_USERNAME, HUBSOFT_PASSWORD"
            )
        register_secret(token)
        self._token, self._token_at = token, now
        self.token_grants += 1
        return token

    # ---- calls ------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        retry_safe: bool | None = None,
        timeout: tuple[float, float] | None = None,
    ) -> dict[str, Any]:
        """One authenticated call; returns the success envelope or raises."""
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self.token(renew=attempt == 2)}"}
            try:
                reply = self.http.request(
                    method,
                    API + path,
                    params=params,
                    json=json,
                    headers=headers,
                    retry_safe=retry_safe,
                    expected=(200, 201, 401),
                    timeout=timeout,
                )
            except UncertainOutcomeError as exc:
                raise HubSoftUncertain(str(exc)) from None
            except HttpError as exc:
                if method != "GET" and not isinstance(exc, PermanentHttpError):
                    # A 5xx to a write may come after a commit: treat it like a lost reply.
                    raise HubSoftUncertain(str(exc)) from None
                raise _unavailable(exc) from None
            # 401 is refused before any processing: a new token and one resend are safe.
            if reply.status_code == 401 and attempt == 1:
                continue
            if reply.status_code == 401:
                raise HubSoftAuthError(f"{method} {path}: 401 even with a fresh token")
            return _envelope(reply, f"{method} {path}")
        raise AssertionError("unreachable")

    def find_clients_by_cpf(self, cpf: str) -> list[dict[str, Any]]:
        """Clients (with ``servicos``) whose CPF/CNPJ is ``cpf`` (digits only)."""
        body = self._call(
            "GET", "/cliente", params={"busca": "cpf_cnpj", "termo_busca": _digits(cpf)}
        )
        return list(body.get("clientes") or [])

    def open_ticket(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Open an atendimento; sent exactly once (see the module docstring)."""
        body = self._call("POST", "/atendimento", json=dict(payload), retry_safe=False)
        ticket = body.get("atendimento")
        if not isinstance(ticket, dict) or "id_atendimento" not in ticket:
            raise HubSoftUncertain(
                "HubSoft said the ticket was opened but the reply has no atendimento id"
            )
        return ticket

    def add_message(self, id_atendimento: int, mensagem: str) -> dict[str, Any]:
        return self._call(
            "POST",
            f"/atendimento/adicionar_mensagem/{int(id_atendimento)}",
            json={"mensagem": mensagem},
            retry_safe=False,
        )

    def update_ticket(self, id_atendimento: int, fields: Mapping[str, Any]) -> dict[str, Any]:
        return self._call("PUT", f"/atendimento/{int(id_atendimento)}", json=dict(fields))

    def tickets_of_client(
        self,
        cpf: str,
        *,
        data_inicio: dt.date | None = None,
        data_fim: dt.date | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """The client's tickets, closed ones included (HubSoft's default hides them)."""
        params: dict[str, Any] = {
            "busca": "cpf_cnpj",
            "termo_busca": _digits(cpf),
            "apenas_pendente": "nao",
            "limit": max(1, min(50, limit)),
        }
        if data_inicio:
            params["data_inicio"] = data_inicio.isoformat()
        if data_fim:
            params["data_fim"] = data_fim.isoformat()
        return list(
            self._call("GET", "/cliente/atendimento", params=params).get("atendimentos") or []
        )

    def ticket_by_protocol(self, protocolo: str) -> dict[str, Any] | None:
        params = {
            "busca": "protocolo",
            "termo_busca": protocolo,
            "apenas_pendente": "nao",
            "limit": 1,
        }
        found = self._call("GET", "/cliente/atendimento", params=params).get("atendimentos") or []
        return found[0] if found else None

    def iter_tickets(
        self,
        *,
        data_inicio: dt.date | None = None,
        data_fim: dt.date | None = None,
        status_ids: list[int] | None = None,
        page_size: int = PAGE_SIZE_MAX,
    ) -> Iterator[dict[str, Any]]:
        """Every ticket of the tenant (``atendimento/todos``), page by page from page 0."""
        page_size = max(1, min(PAGE_SIZE_MAX, page_size))
        page = 0
        while True:
            params: dict[str, Any] = {"pagina": page, "itens_por_pagina": page_size}
            if data_inicio:
                params["data_inicio"] = data_inicio.isoformat()
            if data_fim:
                params["data_fim"] = data_fim.isoformat()
            if status_ids:
                params["status_atendimento"] = ",".join(str(s) for s in status_ids)
            body = self._call("GET", "/atendimento/todos", params=params)
            rows = list(body.get("atendimentos") or [])
            yield from rows
            paging = body.get("paginacao") or {}
            last = paging.get("ultima_pagina")
            if not rows or len(rows) < page_size or (last is not None and page >= int(last)):
                return
            page += 1

    def statuses(self) -> list[dict[str, Any]]:
        """The tenant's ticket statuses (``id_atendimento_status``, ``descricao``, ``prefixo``)."""
        return list(
            self._call("GET", "/configuracao/status_atendimento").get("status_atendimento") or []
        )

    def ticket_types(self) -> list[dict[str, Any]]:
        """The tenant's ticket types (``id_tipo_atendimento``, ``descricao``), from the
        ``tipos_atendimento`` list of HubSoft's reply; a reply without it is an error, never
        an empty list (every ticket would then open with HubSoft's default type)."""
        body = self._call("GET", "/configuracao/tipo_atendimento")
        types = body.get("tipos_atendimento")
        if not isinstance(types, list):
            keys = ", ".join(sorted(k for k in body if k not in ("status", "msg"))) or "none"
            raise HubSoftError(
                "configuracao/tipo_atendimento: the reply has no 'tipos_atendimento' list "
                f"(keys: {keys}); ticket types cannot be resolved"
            )
        return [t for t in types if isinstance(t, dict)]

    # ---- health -----------------------------------------------------------------------

    def health_check(self) -> HealthCheck:
        """Full check: a token (reused or new) and one cheap authenticated GET, timed."""
        started = time.monotonic()
        now = self._clock()
        try:
            self._call("GET", "/configuracao/tipo_atendimento", timeout=HEALTH_TIMEOUT)
        except HubSoftError as exc:
            return HealthCheck("full", False, None, f"{type(exc).__name__}: {exc}", now)
        latency = (time.monotonic() - started) * 1000
        return HealthCheck("full", True, round(latency, 1), "", now)

    def probe(self) -> HealthCheck:
        """Quick check: does HubSoft answer at all? Any reply below 500 counts (an
        unauthenticated GET gets 401), so no token is spent on it."""
        started = time.monotonic()
        now = self._clock()
        try:
            reply = self.http.session.get(
                self.http.url(API + "/configuracao/tipo_atendimento"), timeout=HEALTH_TIMEOUT
            )
        except requests.RequestException as exc:
            return HealthCheck("quick", False, None, type(exc).__name__, now)
        latency = round((time.monotonic() - started) * 1000, 1)
        if reply.status_code >= 500:
            return HealthCheck("quick", False, latency, f"HTTP {reply.status_code}", now)
        return HealthCheck("quick", True, latency, "", now)


def build_client(settings: HubSoftSettings, *, for_health: bool = False) -> HubSoftClient:
    if for_health:
        return HubSoftClient(settings, timeout=HEALTH_TIMEOUT, retry=HEALTH_RETRY)
    return HubSoftClient(settings)


def _digits(value: str) -> str:
    return "".join(ch for ch in str(value) if ch.isdigit())


def _json_body(reply: requests.Response) -> dict[str, Any]:
    try:
        body = reply.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _envelope(reply: requests.Response, what: str) -> dict[str, Any]:
    try:
        body = reply.json()
    except ValueError:
        raise HubSoftUnavailable(
            f"{what}: HubSoft answered HTTP {reply.status_code} with a body that is not JSON"
        ) from None
    if not isinstance(body, dict):
        raise HubSoftUnavailable(f"{what}: unexpected reply shape ({type(body).__name__})")
    status = str(body.get("status", "")).strip().lower()
    if status in SUCCESS:
        return body
    if status == "error":
        errors = body.get("errors") or []
        if isinstance(errors, dict):
            errors = [f"{k}: {v}" for k, v in errors.items()]
        raise HubSoftRejected(str(body.get("msg") or "no message"), [str(e) for e in errors])
    raise HubSoftUnavailable(f"{what}: reply without a known status ({status or 'none'})")


def _unavailable(exc: HttpError) -> HubSoftError:
    if isinstance(exc, PermanentHttpError):
        return HubSoftError(f"HubSoft refused the call: {exc}")
    return HubSoftUnavailable(f"HubSoft unavailable: {exc}")
