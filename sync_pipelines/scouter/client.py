"""Gestão Scouter's PostgREST API (Supabase), on the project's one HTTP base.

Calls used (contracts/scouter.md):
- bulk upsert ``POST /rest/v1/leads?on_conflict=id`` with
  ``Prefer: resolution=merge-duplicates,return=minimal``: an upsert is idempotent, so it is
  retried after 429/5xx/timeouts like a GET (``retry_safe=True``);
- the OpenAPI root ``GET /rest/v1/`` for the real column list and their Postgres types;
- ``GET /rest/v1/leads?…&order=updated_at.asc,id.asc&limit=N`` for the reverse sync.

PostgREST's error JSON (``code``, ``message``, ``details``, ``hint``) becomes a
``PostgrestError`` that says which kind of problem it is and what to fix. The service key
(``GESTAO_SCOUTER_SERVICE_KEY``) is registered as a secret: it is masked in every log line,
error and message, and never put into run config or metadata.
"""

from __future__ import annotations

import json as jsonlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from ..lib.http import HttpClient, HttpError, RetryPolicy
from ..lib.redact import MASK, redact, register_secret

URL_VAR = "GESTAO_SCOUTER_URL"
KEY_VAR = "GESTAO_SCOUTER_SERVICE_KEY"
LEADS_PATH = "/rest/v1/leads"

# Which refusals a split of the batch can fix. Any 4xx is taken as a refusal of some row's
# value (PostgreSQL has dozens of such SQLSTATEs: 22P02, 22P05, 22021, 22023, 23514,
# 23P01, a trigger's P0001...; listing them is how one unlisted code used to fail whole
# days), except the ones that concern the request itself, which every row would meet again:
# PostgREST's own PGRST* codes (schema cache, JWT, payload shape), SQLSTATE class 42 (syntax
# or access rule: permission, undefined table or column) and 401/403/404/405.
REQUEST_LEVEL_STATUSES = frozenset({401, 403, 404, 405})
REQUEST_LEVEL_CLASSES = ("PGRST", "42")
AUTH_CODES = frozenset({"PGRST301", "PGRST302", "PGRST300"})


class ScouterConfigError(RuntimeError):
    """GESTAO_SCOUTER_URL / GESTAO_SCOUTER_SERVICE_KEY missing or unusable."""


class PostgrestError(RuntimeError):
    """PostgREST refused a call. ``kind`` says what went wrong; the message says what to fix."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None,
        code: str | None = None,
        details: str | None = None,
        hint: str | None = None,
        body: str = "",
    ) -> None:
        super().__init__(redact(message))
        self.kind = kind
        self.status = status
        self.code = code
        self.details = redact(details) if details else None
        self.hint = redact(hint) if hint else None
        self.body = redact(body)

    @property
    def row_specific(self) -> bool:
        """True when one row's value caused it: the rest of the batch is fine on its own."""
        return self.kind == "bad_value"

    def as_details(self) -> dict[str, Any]:
        return {"kind": self.kind, "code": self.code, "details": self.details, "hint": self.hint}


def _classify(status: int, payload: Mapping[str, Any], body: str) -> PostgrestError:
    code = str(payload.get("code") or "") or None
    message = str(payload.get("message") or body or f"HTTP {status}")
    details = payload.get("details")
    hint = payload.get("hint")
    extra = {"status": status, "code": code, "details": details, "hint": hint, "body": body}
    if code == "PGRST204":
        return PostgrestError(
            "unknown_column",
            f"Gestão Scouter has no such column: {message}. Add the column to public.leads "
            f"(see the schema check's suggested SQL) and reload PostgREST's schema cache "
            f"(NOTIFY pgrst, 'reload schema'), or remove it from the field mapping.",
            **extra,
        )
    if code in AUTH_CODES or (status == 401 and code != "42501"):
        return PostgrestError(
            "auth",
            f"Gestão Scouter rejected the key ({code or status}: {message}). Set "
            f"{KEY_VAR} to the service_role key of this project (Supabase: Settings > API).",
            **extra,
        )
    if code == "42501" or status == 403:
        return PostgrestError(
            "permission",
            f"permission denied on Gestão Scouter's leads ({message}). Use the service_role "
            f"key (not the anon key) or add an RLS policy for service_role on public.leads.",
            **extra,
        )
    if code in ("PGRST205", "42P01") or status == 404:
        return PostgrestError(
            "not_found",
            f"Gestão Scouter has no table public.leads exposed by PostgREST ({message}); "
            f"check {URL_VAR} and that the table exists.",
            **extra,
        )
    if code == "PGRST102":
        return PostgrestError("bad_payload", f"PostgREST refused the payload: {message}", **extra)
    if (
        400 <= status < 500
        and status not in REQUEST_LEVEL_STATUSES
        and not (code or "").startswith(REQUEST_LEVEL_CLASSES)
    ):
        return PostgrestError(
            "bad_value", f"value rejected by Gestão Scouter ({code or status}): {message}", **extra
        )
    return PostgrestError("other", f"PostgREST error {status} {code or ''}: {message}", **extra)


# PostgreSQL's detail of a CHECK / NOT NULL violation (and of the simulator's rules) is the
# whole row as stored, in clear: names, phones, and destination-only columns the export never
# sent. fields_sent and the masked snapshot already say what was sent, so the row goes.
_FAILING_ROW = re.compile(r"(Failing row contains )\(.*", re.DOTALL)


def mask_failing_row(text: str) -> str:
    """``"Failing row contains (1, Ana Souza, ...)."`` → ``"Failing row contains (***)."``."""
    return _FAILING_ROW.sub(lambda m: f"{m.group(1)}({MASK}).", text)


def _error_from_response(response: requests.Response) -> PostgrestError:
    body = response.text or ""
    try:
        payload = response.json()
    except ValueError:
        payload = {}
    if isinstance(payload, dict) and payload:
        payload = {k: mask_failing_row(v) if isinstance(v, str) else v for k, v in payload.items()}
        body = jsonlib.dumps(payload, ensure_ascii=False)
    else:
        payload = {}
        body = mask_failing_row(body)
    return _classify(response.status_code, payload, body[:2000])


@dataclass(frozen=True)
class ScouterSettings:
    url: str
    service_key: str
    timeout: tuple[float, float] = (5.0, 30.0)
    max_attempts: int = 4


def settings_from_variables(env: Mapping[str, str]) -> ScouterSettings:
    """Check the two values, keyed by their variable names; each problem says what to set."""
    url = env.get(URL_VAR, "").strip().rstrip("/")
    key = env.get(KEY_VAR, "").strip()
    problems = []
    if not url:
        problems.append(f"{URL_VAR} is not set (e.g. https://<project>.supabase.co)")
    elif not url.startswith(("http://", "https://")):
        problems.append(f"{URL_VAR} must start with https:// (got {redact(url)!r})")
    if not key:
        problems.append(
            f"{KEY_VAR} is not set (the service_role key of Gestão Scouter, Settings > API)"
        )
    if problems:
        raise ScouterConfigError("; ".join(problems))
    register_secret(key)
    return ScouterSettings(url=url, service_key=key)


# Statuses the client interprets itself: everything but the ones the HTTP base retries.
_HANDLED = frozenset(range(200, 500)) - {408, 429}


class GestaoScouterClient:
    """The destination: bulk upsert, column list, changed rows. One keep-alive session."""

    def __init__(
        self,
        url: str,
        service_key: str,
        *,
        timeout: tuple[float, float] = (5.0, 30.0),
        retry: RetryPolicy | None = None,
    ) -> None:
        register_secret(service_key)
        self.http = HttpClient(
            url.rstrip("/"),
            headers={"apikey": service_key, "Authorization": f"Bearer {service_key}"},
            timeout=timeout,
            retry=retry or RetryPolicy(max_attempts=4, base_backoff=0.5, max_backoff=8.0),
        )

    @classmethod
    def from_settings(cls, settings: ScouterSettings) -> GestaoScouterClient:
        return cls(
            settings.url,
            settings.service_key,
            timeout=settings.timeout,
            retry=RetryPolicy(max_attempts=settings.max_attempts, max_backoff=8.0),
        )

    @property
    def stats(self) -> dict[str, int]:
        return self.http.stats

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> GestaoScouterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = self.http.request(method, path, expected=_HANDLED, **kwargs)
        if response.status_code >= 300:
            raise _error_from_response(response)
        return response

    def upsert_leads(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert or merge ``rows`` (all with the same keys) by ``id``; all or nothing.

        Raises ``PostgrestError`` for a reply PostgREST refused (``row_specific`` tells a bad
        value from a problem no split can fix) and ``HttpError`` when retries ran out.
        """
        body = jsonlib.dumps(list(rows), ensure_ascii=False, separators=(",", ":"))
        self._call(
            "POST",
            LEADS_PATH,
            params={"on_conflict": "id"},
            data=body.encode("utf-8"),
            headers={
                "Content-Type": "application/json",
                "Prefer": "resolution=merge-duplicates,return=minimal",
            },
            retry_safe=True,
        )

    def check_write(self) -> None:
        """Write permission without writing: an upsert of an empty array.

        PostgREST runs it as a real ``INSERT ... ON CONFLICT`` of zero rows, so PostgreSQL
        checks the key's INSERT and UPDATE privileges on leads (and PostgREST the JWT and that
        the table is exposed) while no row changes. OPTIONS would not do: it answers from the
        schema cache without checking the role's privileges.
        """
        self.upsert_leads([])

    def columns(self) -> dict[str, str]:
        """Destination column -> Postgres type (``format``), from the OpenAPI root."""
        response = self._call("GET", "/rest/v1/", headers={"Accept": "application/openapi+json"})
        try:
            document = response.json()
            properties = document["definitions"]["leads"]["properties"]
        except (ValueError, KeyError, TypeError):
            raise PostgrestError(
                "not_found",
                "Gestão Scouter's OpenAPI root lists no 'leads' definition: check "
                f"{URL_VAR} and that public.leads exists and is exposed by PostgREST",
                status=response.status_code,
            ) from None
        return {
            name: str(spec.get("format") or spec.get("type") or "")
            for name, spec in properties.items()
        }

    def row_count(self) -> int | None:
        """Rows in leads, by PostgREST's ``Prefer: count=exact`` (``Content-Range: 0-0/N``).

        None when the reply carries no total (a proxy stripped the header, or the server
        ignored the preference): an unknown count is reported as unknown, never as 0.
        """
        response = self._call(
            "GET",
            LEADS_PATH,
            params={"select": "id", "limit": "1"},
            headers={"Prefer": "count=exact"},
        )
        total = (response.headers.get("Content-Range") or "").rpartition("/")[2].strip()
        return int(total) if total.isdigit() else None

    def changed_leads(
        self, after: tuple[str, int] | None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Leads with (updated_at, id) after ``after`` (ISO timestamp, id), oldest first."""
        params: dict[str, Any] = {
            "select": "*",
            "order": "updated_at.asc,id.asc",
            "limit": str(limit),
        }
        if after is not None:
            stamp, last_id = after
            # Keyset: strictly later, or the same instant and a greater id.
            params["or"] = f"(updated_at.gt.{stamp},and(updated_at.eq.{stamp},id.gt.{last_id}))"
        return self._call("GET", LEADS_PATH, params=params).json()


__all__ = [
    "GestaoScouterClient",
    "HttpError",
    "PostgrestError",
    "ScouterConfigError",
    "ScouterSettings",
    "settings_from_variables",
]
