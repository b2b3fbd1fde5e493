"""How far each tenant's incremental sync got, per table, in the control database.

One checkpoint row per (``local_sync/<table>``, instance) in ``sync_checkpoints``: the
newest source change already copied and the highest chat id seen. It is written only after
the tenant's transaction committed, so a failed sync leaves the old watermark and the next
run reads the same changes again (upserts make that harmless).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ..lib.checkpoints import CheckpointStore
from ..lib.db import Database


@dataclass(frozen=True)
class Watermark:
    changed_since: dt.datetime | None = None  # source time (UTC, naive like Prisma's)
    max_id: int | None = None

    def as_position(self, mode: str) -> dict:
        return {
            "changed_since": self.changed_since.isoformat() if self.changed_since else None,
            "max_id": self.max_id,
            "last_mode": mode,
        }


class Watermarks:
    def __init__(self, control_db: Database) -> None:
        self.store = CheckpointStore(control_db)

    @staticmethod
    def _pipeline(table: str) -> str:
        return f"local_sync/{table}"

    def get(self, table: str, instance: str) -> Watermark | None:
        """The last successful sync's watermark, or None (never synced: do a full sync)."""
        checkpoint = self.store.get(self._pipeline(table), instance)
        if checkpoint is None or not checkpoint.done:
            return None
        since = checkpoint.position.get("changed_since")
        return Watermark(
            changed_since=dt.datetime.fromisoformat(since) if since else None,
            max_id=checkpoint.position.get("max_id"),
        )

    def commit(self, table: str, instance: str, mark: Watermark, mode: str) -> None:
        self.store.mark_done(self._pipeline(table), instance, mark.as_position(mode))

    def reset(self, table: str, instance: str) -> bool:
        return self.store.reset(self._pipeline(table), instance)
