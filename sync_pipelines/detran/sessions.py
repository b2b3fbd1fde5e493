"""Portal sessions cached in the database: one per examiner, shared by every run and process.

Logging in costs four requests and, on the real portal, displaces the examiner's own browser
session; reusing the cookies of the last run avoids both. A cached session is used only when
it is younger than its TTL (45 minutes since last use, as the users' plan says), belongs to
the same portal URL and decrypts with the current key; the caller then asks the portal
whether it is still alive before trusting it (``PortalClient.session_alive``). Expired rows
are deleted whenever a session is saved. Cookies are encrypted like passwords: a
JSESSIONID is a live credential.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import sqlalchemy as sa

from ..lib.crypto import CredentialsKeyError
from ..lib.db import Database
from .client import AgendaContext
from .examiners import decrypt, encrypt

DEFAULT_TTL = dt.timedelta(minutes=45)


@dataclass(frozen=True)
class CachedSession:
    cookies: dict[str, str]
    context: AgendaContext
    expires_at: dt.datetime


class SessionCache:
    def __init__(
        self,
        db: Database,
        portal_url: str,
        *,
        ttl: dt.timedelta = DEFAULT_TTL,
        env: dict[str, str] | None = None,
    ) -> None:
        self.db = db
        self.portal_url = portal_url.rstrip("/")
        self.ttl = ttl
        self.env = env

    def load(self, usuario_id: int) -> CachedSession | None:
        """The examiner's cached session if it passes the local checks, else None."""
        with self.db.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT portal_url, cookies_encrypted, context, expires_at FROM detran_sessions "
                    "WHERE usuario_id = :u AND expires_at > now()"
                ),
                {"u": usuario_id},
            ).first()
        if row is None or row.portal_url != self.portal_url:
            return None
        try:
            cookies = json.loads(decrypt(row.cookies_encrypted, self.env))
            context = AgendaContext(**row.context)
        except (CredentialsKeyError, ValueError, TypeError):
            self.drop(usuario_id)
            return None
        if not isinstance(cookies, dict) or "JSESSIONID" not in cookies:
            self.drop(usuario_id)
            return None
        return CachedSession(cookies, context, row.expires_at)

    def save(
        self,
        usuario_id: int,
        cookies: dict[str, str],
        context: AgendaContext,
        *,
        fresh: bool = False,
    ) -> None:
        """Store (or refresh) the session: it expires ``ttl`` after this, its last use.
        ``fresh``: it comes from a new login (its ``created_at`` restarts)."""
        with self.db.begin() as conn:
            conn.execute(sa.text("DELETE FROM detran_sessions WHERE expires_at <= now()"))
            conn.execute(
                sa.text(
                    "INSERT INTO detran_sessions (usuario_id, portal_url, cookies_encrypted, context,"
                    " created_at, last_used_at, expires_at)"
                    " VALUES (:u, :url, :cookies, CAST(:ctx AS jsonb), now(), now(), now() + :ttl)"
                    " ON CONFLICT (usuario_id) DO UPDATE SET portal_url = EXCLUDED.portal_url,"
                    " cookies_encrypted = EXCLUDED.cookies_encrypted, context = EXCLUDED.context,"
                    " created_at = CASE WHEN :fresh THEN now() ELSE detran_sessions.created_at END,"
                    " last_used_at = now(), expires_at = EXCLUDED.expires_at"
                ),
                {
                    "u": usuario_id,
                    "url": self.portal_url,
                    "cookies": encrypt(json.dumps(cookies, sort_keys=True), self.env),
                    "ctx": json.dumps(context.__dict__),
                    "ttl": self.ttl,
                    "fresh": fresh,
                },
            )

    def drop(self, usuario_id: int) -> None:
        with self.db.begin() as conn:
            conn.execute(
                sa.text("DELETE FROM detran_sessions WHERE usuario_id = :u"), {"u": usuario_id}
            )
