"""One alert per transition: which alert conditions are active, kept in the control database.

A guard (a sync, a check, a sensor tick) evaluates its condition every time it runs and
calls ``AlertState.transition(key, active, details)``. Only a change of state returns
something: ``"raised"`` when the condition becomes active, ``"resolved"`` when it clears,
``None`` otherwise. The caller sends one message on each, so a condition that stays active
over many runs, ticks or process restarts sends one alert, and its clearing one "resolved".

The change is decided by one statement per call (``INSERT ... ON CONFLICT DO UPDATE ...
WHERE`` / ``UPDATE ... WHERE active``, both ``RETURNING``): PostgreSQL's row lock makes two
racing callers see one transition between them, never two.

``announce`` is the usual pairing of a transition with its message; messages go through
``redact`` so a secret or a piece of personal data that slipped into them is masked.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from .db import Database
from .redact import redact

Transition = Literal["raised", "resolved"]
log = logging.getLogger("sync_pipelines.alerts")


@dataclass(frozen=True)
class AlertRecord:
    condition_key: str
    active: bool
    since: dt.datetime
    last_change: dt.datetime
    details: dict[str, Any]


def _json(details: Mapping[str, Any] | None) -> str | None:
    return None if details is None else json.dumps(dict(details), default=str)


class AlertState:
    """The ``alert_state`` table of the control database (migration control/0003)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def transition(
        self, key: str, active: bool, details: Mapping[str, Any] | None = None
    ) -> Transition | None:
        """Record the condition's current state; return the change, if it is one.

        ``details`` are stored with a change (the numbers behind it); while the state stays
        the same the stored details are kept, so the ones of the raise remain readable.
        """
        params = {"k": key, "d": _json(details)}
        with self.db.begin() as conn:
            if active:
                changed = conn.execute(
                    sa.text(
                        "INSERT INTO alert_state AS a (condition_key, active, since, last_change,"
                        " details) VALUES (:k, true, now(), now(), CAST(:d AS jsonb))"
                        " ON CONFLICT (condition_key) DO UPDATE SET active = true, since = now(),"
                        " last_change = now(), details = EXCLUDED.details WHERE NOT a.active"
                        " RETURNING 1"
                    ),
                    params,
                ).first()
                return "raised" if changed else None
            # A condition never raised has no row and needs none: nothing to resolve.
            changed = conn.execute(
                sa.text(
                    "UPDATE alert_state SET active = false, since = now(), last_change = now(),"
                    " details = COALESCE(CAST(:d AS jsonb), details)"
                    " WHERE condition_key = :k AND active RETURNING 1"
                ),
                params,
            ).first()
            return "resolved" if changed else None

    def get(self, key: str) -> AlertRecord | None:
        with self.db.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT condition_key, active, since, last_change, details FROM alert_state"
                    " WHERE condition_key = :k"
                ),
                {"k": key},
            ).first()
        if row is None:
            return None
        return AlertRecord(row[0], row[1], row[2], row[3], dict(row[4] or {}))

    def active(self, prefix: str = "") -> list[AlertRecord]:
        """Active conditions whose key starts with ``prefix``, oldest first."""
        with self.db.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT condition_key, active, since, last_change, details FROM alert_state"
                    " WHERE active AND starts_with(condition_key, :p) ORDER BY since"
                ),
                {"p": prefix},
            ).all()
        return [AlertRecord(r[0], r[1], r[2], r[3], dict(r[4] or {})) for r in rows]


def announce(
    state: AlertState,
    key: str,
    active: bool,
    *,
    raised: str | Callable[[], str],
    resolved: str | Callable[[], str],
    send: Callable[[str], object],
    details: Mapping[str, Any] | None = None,
) -> Transition | None:
    """``transition`` plus one message on a change; ``send`` gets the redacted text.

    The texts may be callables, built only when a message is actually sent.
    """
    change = state.transition(key, active, details)
    if change is None:
        return None
    text = raised if change == "raised" else resolved
    message = redact(text() if callable(text) else text)
    log.info("alert %s %s", key, change)
    send(message)
    return change
