"""The PostgreSQL a benchmark runs against, chosen the same way by every script.

``--url`` wins, then ``SYNC_DATABASE_URL``, then ``SYNC_TEST_DATABASE_URL``; with none of
them an embedded PostgreSQL starts in ``.sandbox/bench-pg`` and stops afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def bench_database(url: str | None = None) -> Iterator[str]:
    url = url or os.environ.get("SYNC_DATABASE_URL") or os.environ.get("SYNC_TEST_DATABASE_URL")
    if url:
        yield url
        return
    from sync_pipelines.sandbox.embedded_pg import EmbeddedPostgres

    server = EmbeddedPostgres(Path(".sandbox/bench-pg"))
    try:
        yield server.start()
    finally:
        server.stop()
