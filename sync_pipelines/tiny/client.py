"""Tiny ERP API v3 client: service orders, OAuth2 tokens kept in the Tiny database.

Tokens. The pair lives in ``tiny_oauth_tokens`` (never a file, never process memory alone),
encrypted with the project's credentials key (lib/crypto.py), because every worker shares one
account and Tiny may rotate the refresh token on each renewal: a second, racing renewal with
the old refresh token would fail. So renewal happens under a row lock (``SELECT ... FOR
UPDATE``), re-checks whether another worker already renewed, and always stores the newest
refresh token. On a fresh install there is no row to lock yet: the bootstrap row (the
configured initial refresh token) is inserted with ``ON CONFLICT DO NOTHING`` first, so the
second worker waits on the first one's row instead of spending the same refresh token.
An ``invalid_grant`` on a token nobody else has replaced means the authorization is gone:
``TinyReauthorizationRequired`` says what to do. One on a token another worker has just
replaced is a race: the newest pair is used, or ``TinyTokenRace`` says a rerun will do.

The access token is renewed a margin before it expires: ``min(5 min, lifetime / 10)``, so a
4-hour token renews 5 minutes early and a 60-second one 6 seconds early, never on every call.

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

from ..lib.crypto import CREDENTIALS_KEY_VAR, CredentialsCipher
from ..lib.db import Database
from ..lib.http import HttpClient, HttpError, RateLimiter, RetryPolicy
from ..lib.redact import redact, register_secret

REAUTHORIZE_HINT = (
    "Tiny refused the stored refresh token (invalid_grant): the authorization expired or "
    "was revoked. Authorize the app again in Tiny (ERP → Integrações → API), then run "
    "`sync-pipelines tiny authorize --code <authorization code>` (or put a fresh refresh "
    "token in TINY_INITIAL_REFRESH_TOKEN) and rerun."
)
RACE_HINT = (
    "Tiny refused a refresh token that another worker had just replaced (invalid_grant after "
    "a concurrent renewal): the authorization is fine, a rerun will do. No re-authorization "
    "is needed."
)
MAX_RENEW_MARGIN = dt.timedelta(minutes=5)
DEFAULT_ACCESS_LIFETIME_S = 14400


def renew_margin(lifetime: dt.timedelta) -> dt.timedelta:
    """How long before expiry to renew: 5 minutes, or a tenth of a shorter token's life."""
    return min(MAX_RENEW_MARGIN, max(lifetime, dt.timedelta(0)) / 10)


class TinyReauthorizationRequired(RuntimeError):
    """The token pair cannot be renewed; a person has to authorize the app again."""


class TinyTokenRace(RuntimeError):
    """A renewal lost a race with another worker's; rerunning is enough."""


class TinyApiError(RuntimeError):
    """Tiny answered with an error that retrying will not fix."""


class _InvalidGrant(Exception):
    """The token endpoint refused the refresh token or code (HTTP 400 invalid_grant)."""


@dataclass(frozen=True)
class OAuthSettings:
    token_url: str
    client_id: str
    client_secret: str
    redirect_uri: str = ""
    initial_refresh_token: str = ""
    # The Fernet key(s) the pair is encrypted with (lib/crypto.py).
    credentials_key: str = ""


@dataclass(frozen=True)
class _StoredPair:
    access_token: str | None
    access_expires_at: dt.datetime | None
    refresh_token: str
    renewed_at: dt.datetime

    def fresh_access(self, now: dt.datetime) -> str | None:
        if not self.access_token or not self.access_expires_at:
            return None
        margin = renew_margin(self.access_expires_at - self.renewed_at)
        return self.access_token if self.access_expires_at - margin > now else None


_SELECT_PAIR = (
    "SELECT access_token, access_token_encrypted, access_expires_at, refresh_token, "
    "refresh_token_encrypted, renewed_at FROM tiny_oauth_tokens WHERE account = :a"
)


class TokenManager:
    """The account's access token, renewed a little before expiry by one worker at a time."""

    ACCESS_SLOT = "tiny:access_token"
    REFRESH_SLOT = "tiny:refresh_token"

    def __init__(self, db: Database, settings: OAuthSettings, http: HttpClient | None = None):
        self.db = db
        self.settings = settings
        self.cipher = CredentialsCipher(settings.credentials_key, CREDENTIALS_KEY_VAR)
        self.http = http or HttpClient(timeout=(5, 30), retry=RetryPolicy(max_attempts=3))
        self._cached: tuple[str, dt.datetime] | None = None  # (token, renew after)
        self.renewals = 0
        register_secret(settings.client_secret)
        register_secret(settings.initial_refresh_token)

    def access_token(self) -> str:
        now = dt.datetime.now(dt.UTC)
        if self._cached and self._cached[1] > now:
            return self._cached[0]
        with self.db.begin() as conn:
            pair = self._read(conn, lock=False)
        token = pair.fresh_access(now) if pair else None
        if token:
            self._remember(pair)
            return token
        return self.renew(rejected=None)

    def renew(self, rejected: str | None) -> str:
        """Renew the pair. ``rejected`` is the access token the API just refused (401): if the
        stored one differs, another worker already renewed and we use theirs."""
        try:
            return self._renew_locked(rejected)
        except _InvalidGrant as refused:
            spent = str(refused)
        # Was the token we spent replaced meanwhile (a worker outside our lock, an
        # `authorize`)? Then the authorization is fine: use the newest pair, once.
        with self.db.begin() as conn:
            pair = self._read(conn, lock=False)
        if pair is None or pair.refresh_token == spent:
            raise TinyReauthorizationRequired(REAUTHORIZE_HINT)
        try:
            return self._renew_locked(rejected)
        except _InvalidGrant:
            raise TinyTokenRace(RACE_HINT) from None

    def _renew_locked(self, rejected: str | None) -> str:
        now = dt.datetime.now(dt.UTC)
        with self.db.begin() as conn:
            self._bootstrap(conn, now)
            pair = self._read(conn, lock=True)
            if pair is None:
                raise TinyReauthorizationRequired(
                    "no Tiny token pair is stored yet. " + REAUTHORIZE_HINT.split(". ", 1)[1]
                )
            token = pair.fresh_access(now)
            if token and token != rejected:
                self._remember(pair)
                return token
            reply = self._token_request(
                {"grant_type": "refresh_token", "refresh_token": pair.refresh_token},
                spent=pair.refresh_token,
            )
            stored = self._store(conn, reply, previous_refresh=pair.refresh_token)
        self.renewals += 1
        self._remember(stored)
        return reply["access_token"]

    def authorize(self, code: str) -> None:
        """First exchange of an authorization code (``sync-pipelines tiny authorize``)."""
        try:
            reply = self._token_request(
                {
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": self.settings.redirect_uri,
                },
                spent=code,
            )
        except _InvalidGrant:
            raise TinyReauthorizationRequired(
                "Tiny refused the authorization code (invalid_grant): codes are single-use and "
                "expire within a minute; authorize the app again and use the new code at once."
            ) from None
        with self.db.begin() as conn:
            self._remember(self._store(conn, reply, previous_refresh=None))

    # ---- storage ------------------------------------------------------------------------

    def _bootstrap(self, conn: sa.Connection, now: dt.datetime) -> None:
        """Give a fresh install a row to lock: concurrent first runs then queue on it."""
        initial = self.settings.initial_refresh_token
        if not initial:
            return
        conn.execute(
            sa.text(
                "INSERT INTO tiny_oauth_tokens (account, refresh_token_encrypted, renewed_at) "
                "VALUES (:a, :rt, :now) ON CONFLICT (account) DO NOTHING"
            ),
            {"a": self.settings.client_id, "rt": self.cipher.encrypt(initial), "now": now},
        )

    def _read(self, conn: sa.Connection, *, lock: bool) -> _StoredPair | None:
        row = conn.execute(
            sa.text(_SELECT_PAIR + (" FOR UPDATE" if lock else "")), {"a": self.settings.client_id}
        ).first()
        if row is None:
            return None
        if row.access_token is not None or row.refresh_token is not None:
            self._encrypt_clear_row(conn, row)
        # A clear value was written after the encrypted one (by an earlier version, or by
        # hand): it is the newer one.
        access = row.access_token
        if access is None and row.access_token_encrypted:
            access = self.cipher.decrypt(row.access_token_encrypted, "Tiny access token")
        refresh = row.refresh_token
        if refresh is None:
            refresh = self.cipher.decrypt(row.refresh_token_encrypted, "Tiny refresh token")
        return _StoredPair(access, row.access_expires_at, refresh, row.renewed_at)

    def _encrypt_clear_row(self, conn: sa.Connection, row: sa.Row) -> None:
        """A pair stored in clear by an earlier version: encrypt it in place (nothing lost).

        Guarded by the clear values themselves, so of two workers doing this at once the
        second changes nothing.
        """
        conn.execute(
            sa.text(
                "UPDATE tiny_oauth_tokens SET access_token = NULL, refresh_token = NULL, "
                "access_token_encrypted = COALESCE(:at, access_token_encrypted), "
                "refresh_token_encrypted = COALESCE(:rt, refresh_token_encrypted) "
                "WHERE account = :a AND access_token IS NOT DISTINCT FROM :old_at "
                "AND refresh_token IS NOT DISTINCT FROM :old_rt"
            ),
            {
                "a": self.settings.client_id,
                "at": self.cipher.encrypt(row.access_token) if row.access_token else None,
                "rt": self.cipher.encrypt(row.refresh_token) if row.refresh_token else None,
                "old_at": row.access_token,
                "old_rt": row.refresh_token,
            },
        )

    def _store(
        self, conn: sa.Connection, reply: dict[str, Any], previous_refresh: str | None
    ) -> _StoredPair:
        now = dt.datetime.now(dt.UTC)
        lifetime = int(reply.get("expires_in") or DEFAULT_ACCESS_LIFETIME_S)
        access_expires = now + dt.timedelta(seconds=lifetime)
        refresh_in = reply.get("refresh_expires_in")
        # Keep the old refresh token only if Tiny did not send a new one.
        refresh = reply.get("refresh_token") or previous_refresh
        if not refresh:
            raise TinyApiError("Tiny's token reply has no refresh_token and none is stored")
        conn.execute(
            sa.text(
                "INSERT INTO tiny_oauth_tokens (account, access_token_encrypted, access_expires_at, "
                "refresh_token_encrypted, refresh_expires_at, renewed_at) "
                "VALUES (:a, :at, :ae, :rt, :re, :now) "
                "ON CONFLICT (account) DO UPDATE SET access_token = NULL, refresh_token = NULL, "
                "access_token_encrypted = EXCLUDED.access_token_encrypted, "
                "access_expires_at = EXCLUDED.access_expires_at, "
                "refresh_token_encrypted = EXCLUDED.refresh_token_encrypted, "
                "refresh_expires_at = EXCLUDED.refresh_expires_at, renewed_at = EXCLUDED.renewed_at"
            ),
            {
                "a": self.settings.client_id,
                "at": self.cipher.encrypt(reply["access_token"]),
                "ae": access_expires,
                "rt": self.cipher.encrypt(refresh),
                "re": now + dt.timedelta(seconds=int(refresh_in)) if refresh_in else None,
                "now": now,
            },
        )
        return _StoredPair(reply["access_token"], access_expires, refresh, now)

    def _remember(self, pair: _StoredPair) -> None:
        # Slots: each renewal replaces the previous token in the redaction set instead of
        # adding to it, so a long run with short-lived tokens keeps a bounded set.
        register_secret(pair.access_token, slot=self.ACCESS_SLOT)
        register_secret(pair.refresh_token, slot=self.REFRESH_SLOT)
        assert pair.access_token and pair.access_expires_at
        margin = renew_margin(pair.access_expires_at - pair.renewed_at)
        self._cached = (pair.access_token, pair.access_expires_at - margin)

    def _token_request(self, form: dict[str, str], *, spent: str) -> dict[str, Any]:
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
                raise _InvalidGrant(spent) from None
            if exc.status in (400, 401):
                raise TinyReauthorizationRequired(
                    f"Tiny's token endpoint refused the client (HTTP {exc.status}): check TINY_CLIENT_ID "
                    "and TINY_CLIENT_SECRET. " + REAUTHORIZE_HINT
                ) from None
            raise
        pair = response.json()
        if not isinstance(pair, dict) or not pair.get("access_token"):
            raise TinyApiError(f"Tiny's token reply has no access_token: {redact(str(pair))[:200]}")
        register_secret(pair.get("access_token"), slot=self.ACCESS_SLOT)
        register_secret(pair.get("refresh_token"), slot=self.REFRESH_SLOT)
        return pair


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
        request = "GET /ordem-servico?" + "&".join(f"{k}={v}" for k, v in params.items())
        if not isinstance(body, dict) or not isinstance(body.get("itens"), list):
            raise TinyApiError(f"Tiny's order list reply has no 'itens' array ({request})")
        items = body["itens"]
        paging = body.get("paginacao")
        # The contract's list reply always carries paginacao (an empty result too, with
        # total 0). Without it the listing cannot know whether more pages follow, and ending
        # after this page would silently drop the rest: refuse the reply, naming the request.
        if not isinstance(paging, dict) or not str(paging.get("total", "")).isdigit():
            raise TinyApiError(
                f"Tiny's order list reply has no usable 'paginacao.total' ({request}); "
                "the listing stops here instead of guessing where it ends"
            )
        return OrderPage(items, int(paging["total"]), int(paging.get("offset") or offset), limit)

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
            credentials_key=env.get(CREDENTIALS_KEY_VAR, ""),
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
