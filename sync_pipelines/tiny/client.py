"""Tiny ERP API v3 client: service orders, OAuth2 tokens kept in the Tiny database.

Tokens. The pair lives in ``tiny_oauth_tokens`` (never a file, never process memory alone),
because every worker shares one account and Tiny may rotate the refresh token on each
renewal: a second, racing renewal with the old refresh token would fail. So renewal happens
under a row lock (``SELECT ... FOR UPDATE``), re-checks whether another worker already
renewed, and always stores the newest refresh token. An ``invalid_grant`` means the
authorization is gone: the run stops with ``TinyReauthorizationRequired`` saying what to do.

Rate limit. Calls take a token from the account-wide ``SharedRateLimiter`` (capped by
``TINY_MAX_REQUESTS_PER_MINUTE``), adapt to ``X-RateLimit-*`` and wait out a 429 (empty body,
no Retry-After) until the announced reset: all of that is the HTTP base's job.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
import sqlalchemy as sa

from ..lib.db import Database
from ..lib.http import HttpClient, HttpError, RateLimiter, RetryPolicy
from ..lib.redact import register_secret

REAUTHORIZE_HINT = (
    "Tiny refused the stored refresh token (invalid_grant): the authorization expired or "
    "was revoked. Authorize the app again in Tiny (ERP → Integrações → API), then run "
    "`sync-pipelines tiny authorize --code <authorization code>` (or put a fresh refresh "
    "token in TINY_INITIAL_REFRESH_TOKEN) and rerun."
)
RENEW_MARGIN = dt.timedelta(minutes=5)


class TinyReauthorizationRequired(RuntimeError):
    """The token pair cannot be renewed; a person has to authorize the app again."""


class TinyApiError(RuntimeError):
    """Tiny answered with an error that retrying will not fix."""


@dataclass(frozen=True)
class OAuthSettings:
    token_url: str
    client_id: str
    client_secret: str
    redirect_uri: str = ""
    initial_refresh_token: str = ""


class TokenManager:
    """The account's access token, renewed a few minutes before expiry by one worker at a time."""

    def __init__(self, db: Database, settings: OAuthSettings, http: HttpClient | None = None):
        self.db = db
        self.settings = settings
        self.http = http or HttpClient(timeout=(5, 30), retry=RetryPolicy(max_attempts=3))
        self._cached: tuple[str, dt.datetime] | None = None
        self.renewals = 0
        for secret in (settings.client_secret, settings.initial_refresh_token):
            register_secret(secret)

    def access_token(self) -> str:
        now = dt.datetime.now(dt.UTC)
        if self._cached and self._cached[1] - RENEW_MARGIN > now:
            return self._cached[0]
        with self.db.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT access_token, access_expires_at FROM tiny_oauth_tokens WHERE account = :a"
                ),
                {"a": self.settings.client_id},
            ).first()
        if (
            row
            and row.access_token
            and row.access_expires_at
            and row.access_expires_at - RENEW_MARGIN > now
        ):
            register_secret(row.access_token)
            self._cached = (row.access_token, row.access_expires_at)
            return row.access_token
        return self.renew(rejected=None)

    def renew(self, rejected: str | None) -> str:
        """Renew the pair. ``rejected`` is the access token the API just refused (401): if the
        stored one differs, another worker already renewed and we use theirs."""
        now = dt.datetime.now(dt.UTC)
        with self.db.begin() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT access_token, access_expires_at, refresh_token FROM tiny_oauth_tokens "
                    "WHERE account = :a FOR UPDATE"
                ),
                {"a": self.settings.client_id},
            ).first()
            if (
                row
                and row.access_token
                and row.access_token != rejected
                and row.access_expires_at
                and row.access_expires_at - RENEW_MARGIN > now
            ):
                self._cached = (row.access_token, row.access_expires_at)
                register_secret(row.access_token)
                return row.access_token
            refresh = row.refresh_token if row else self.settings.initial_refresh_token
            if not refresh:
                raise TinyReauthorizationRequired(
                    "no Tiny token pair is stored yet. " + REAUTHORIZE_HINT.split(". ", 1)[1]
                )
            pair = self._token_request({"grant_type": "refresh_token", "refresh_token": refresh})
            self._store(conn, pair)
        self.renewals += 1
        return pair["access_token"]

    def authorize(self, code: str) -> None:
        """First exchange of an authorization code (``sync-pipelines tiny authorize``)."""
        pair = self._token_request(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.settings.redirect_uri,
            }
        )
        with self.db.begin() as conn:
            self._store(conn, pair)

    def _token_request(self, form: dict[str, str]) -> dict[str, Any]:
        form = {
            **form,
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret,
        }
        try:
            # Retried like a read: a 5xx/timeout usually means nothing happened. If a renewal
            # did rotate the refresh token and only its reply was lost, the replay earns
            # invalid_grant: the same end as not retrying, since the old token is dead.
            response = self.http.request(
                "POST", self.settings.token_url, data=form, expected=(200,), retry_safe=True
            )
        except HttpError as exc:
            if exc.status in (400, 401) and "invalid_grant" in (exc.body or ""):
                raise TinyReauthorizationRequired(REAUTHORIZE_HINT) from None
            if exc.status in (400, 401):
                raise TinyReauthorizationRequired(
                    f"Tiny's token endpoint refused the client (HTTP {exc.status}): check TINY_CLIENT_ID "
                    "and TINY_CLIENT_SECRET. " + REAUTHORIZE_HINT
                ) from None
            raise
        pair = response.json()
        for key in ("access_token", "refresh_token"):
            register_secret(pair.get(key))
        return pair

    def _store(self, conn: sa.Connection, pair: dict[str, Any]) -> None:
        now = dt.datetime.now(dt.UTC)
        access_expires = now + dt.timedelta(seconds=int(pair.get("expires_in") or 14400))
        refresh_in = pair.get("refresh_expires_in")
        conn.execute(
            sa.text(
                "INSERT INTO tiny_oauth_tokens (account, access_token, access_expires_at, refresh_token, "
                "refresh_expires_at, renewed_at) VALUES (:a, :at, :ae, :rt, :re, now()) "
                "ON CONFLICT (account) DO UPDATE SET access_token = EXCLUDED.access_token, "
                "access_expires_at = EXCLUDED.access_expires_at, refresh_token = EXCLUDED.refresh_token, "
                "refresh_expires_at = EXCLUDED.refresh_expires_at, renewed_at = now()"
            ),
            {
                "a": self.settings.client_id,
                "at": pair["access_token"],
                "ae": access_expires,
                # Keep the old refresh token only if Tiny did not send a new one.
                "rt": pair.get("refresh_token")
                or conn.execute(
                    sa.text("SELECT refresh_token FROM tiny_oauth_tokens WHERE account = :a"),
                    {"a": self.settings.client_id},
                ).scalar(),
                "re": now + dt.timedelta(seconds=int(refresh_in)) if refresh_in else None,
            },
        )
        self._cached = (pair["access_token"], access_expires)


@dataclass
class OrderPage:
    items: list[dict[str, Any]]
    total: int
    offset: int
    limit: int


class TinyClient:
    """``GET /ordem-servico`` (offset paging) and ``GET /ordem-servico/{id}``."""

    PAGE_SIZE = 100

    def __init__(
        self,
        base_url: str,
        tokens: TokenManager,
        *,
        rate_limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (5.0, 30.0),
    ):
        self.tokens = tokens
        self.http = HttpClient(
            base_url.rstrip("/"),
            headers={"Accept": "application/json"},
            timeout=timeout,
            retry=retry or RetryPolicy(max_attempts=6, base_backoff=1.0, max_backoff=30.0),
            rate_limiter=rate_limiter,
        )

    @property
    def stats(self) -> dict[str, int]:
        return self.http.stats

    def _get(self, path: str, params: dict[str, Any] | None = None) -> requests.Response:
        token = self.tokens.access_token()
        for attempt in (1, 2):
            try:
                return self.http.request(
                    "GET",
                    path,
                    params=params,
                    headers={"Authorization": f"Bearer {token}"},
                    expected=(200,),
                )
            except HttpError as exc:
                # An expired or revoked access token: renew once (one worker does it) and retry.
                if exc.status == 401 and attempt == 1:
                    token = self.tokens.renew(rejected=token)
                    continue
                raise
        raise AssertionError("unreachable")

    def list_orders(
        self,
        *,
        offset: int = 0,
        limit: int = PAGE_SIZE,
        situacao: int | None = None,
        emitted_from: dt.date | None = None,
        emitted_to: dt.date | None = None,
    ) -> OrderPage:
        params: dict[str, Any] = {"offset": offset, "limit": limit, "orderBy": "asc"}
        if situacao is not None:
            params["situacao"] = str(situacao)
        if emitted_from:
            params["dataInicialEmissao"] = emitted_from.isoformat()
        if emitted_to:
            params["dataFinalEmissao"] = emitted_to.isoformat()
        body = self._get("/ordem-servico", params).json()
        items = body.get("itens") or []
        paging = body.get("paginacao") or {}
        if not isinstance(items, list):
            raise TinyApiError("Tiny's order list reply has no 'itens' array")
        return OrderPage(
            items, int(paging.get("total") or 0), int(paging.get("offset") or offset), limit
        )

    def iter_pages(self, fetch_page: Callable[[int], OrderPage], start_offset: int = 0):
        """Yield pages from ``start_offset`` until the announced total is reached."""
        offset = start_offset
        while True:
            page = fetch_page(offset)
            yield page
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    def get_order(self, order_id: int) -> dict[str, Any]:
        body = self._get(f"/ordem-servico/{int(order_id)}").json()
        if not isinstance(body, dict):
            raise TinyApiError(f"order {order_id}: detail reply is not an object")
        return body

    def close(self) -> None:
        self.http.close()
        self.tokens.http.close()


REAL_API_BASE_URL = "https://api.tiny.com.br/public-api/v3"
REAL_TOKEN_URL = "https://accounts.tiny.com.br/realms/tiny/protocol/openid-connect/token"
DEFAULT_MAX_REQUESTS_PER_MINUTE = 60


@dataclass(frozen=True)
class TinySettings:
    api_base_url: str
    oauth: OAuthSettings
    max_requests_per_minute: int


def settings_from_variables(env: Mapping[str, str]) -> TinySettings:
    """Tiny settings from values keyed by their variable names (the Dagster resource passes
    its fields, the CLI the process environment); each missing one is named."""
    missing = [k for k in ("TINY_CLIENT_ID", "TINY_CLIENT_SECRET") if not env.get(k)]
    if missing:
        raise TinyReauthorizationRequired(
            f"Tiny is not configured: set {' and '.join(missing)} (the app's OAuth client in Tiny)."
        )
    raw_limit = env.get("TINY_MAX_REQUESTS_PER_MINUTE") or str(DEFAULT_MAX_REQUESTS_PER_MINUTE)
    if not raw_limit.isdigit() or int(raw_limit) < 1:
        raise ValueError(
            f"TINY_MAX_REQUESTS_PER_MINUTE must be a positive integer, got {raw_limit!r}"
        )
    return TinySettings(
        api_base_url=env.get("TINY_API_BASE_URL") or REAL_API_BASE_URL,
        oauth=OAuthSettings(
            token_url=env.get("TINY_TOKEN_URL") or REAL_TOKEN_URL,
            client_id=env["TINY_CLIENT_ID"],
            client_secret=env["TINY_CLIENT_SECRET"],
            redirect_uri=env.get("TINY_REDIRECT_URI", ""),
            initial_refresh_token=env.get("TINY_INITIAL_REFRESH_TOKEN", ""),
        ),
        max_requests_per_minute=int(raw_limit),
    )


def build_client(
    settings: TinySettings, tiny_db: Database, control_db: Database | None
) -> TinyClient:
    """A client whose requests share the account-wide limiter kept in the control database."""
    from ..lib.ratelimit import SharedRateLimiter

    limiter = None
    if control_db is not None:
        # burst 2 keeps Tiny's 4 requests/second bucket too (see lib/ratelimit.py).
        limiter = SharedRateLimiter(
            control_db,
            f"tiny:{settings.oauth.client_id}",
            settings.max_requests_per_minute,
            60.0,
            burst=2,
        )
    return TinyClient(
        settings.api_base_url, TokenManager(tiny_db, settings.oauth), rate_limiter=limiter
    )
