"""Tiny fixtures: the simulator as a real HTTP server, and the tiny + control tables."""

from __future__ import annotations

import pytest

from sync_pipelines.lib.db import create_database
from sync_pipelines.lib.http import RetryPolicy
from sync_pipelines.lib.migrations import migrate
from sync_pipelines.resources import DatabaseResource, TelegramResource
from sync_pipelines.sandbox.tiny_sim import (
    API_PREFIX,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_CREDENTIALS_KEY,
    TINY_PART,
    TOKEN_PATH,
    TinySimulator,
)
from sync_pipelines.tiny.client import OAuthSettings, TinyClient, TokenManager
from sync_pipelines.tiny.defs import TinyApiResource

from ..dagster_db import scratch_database

FAST_RETRY = RetryPolicy(max_attempts=8, base_backoff=0.02, max_backoff=0.3, max_wait=3.0)


@pytest.fixture
def sim():
    simulator = TinySimulator(
        seed=11, n_orders=600, per_minute_limit=100_000, burst_per_second=100_000
    )
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def tiny_db(pg_db):
    """tiny and control roles side by side in the test's schema."""
    migrate(pg_db, "tiny")
    migrate(pg_db, "control")
    return pg_db


def oauth_settings(sim: TinySimulator, refresh_token: str = "") -> OAuthSettings:
    return OAuthSettings(
        token_url=sim.base_url + TOKEN_PATH,
        client_id=SANDBOX_CLIENT_ID,
        client_secret=SANDBOX_CLIENT_SECRET,
        initial_refresh_token=refresh_token or sim.issue_initial_tokens()["refresh_token"],
        credentials_key=SANDBOX_CREDENTIALS_KEY,
    )


def make_client(
    sim: TinySimulator, db, *, limiter=None, timeout=(2.0, 5.0), settings=None
) -> TinyClient:
    return TinyClient(
        sim.base_url + API_PREFIX,
        TokenManager(db, settings or oauth_settings(sim)),
        rate_limiter=limiter,
        retry=FAST_RETRY,
        timeout=timeout,
    )


@pytest.fixture
def client(sim, tiny_db):
    c = make_client(sim, tiny_db)
    yield c
    c.close()


def stored_pair(db) -> tuple[str, str]:
    """The (access, refresh) tokens stored in tiny_oauth_tokens, decrypted; the clear
    columns must be empty."""
    import sqlalchemy as sa

    from sync_pipelines.lib.crypto import CredentialsCipher

    with db.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT access_token, refresh_token, access_token_encrypted, "
                "refresh_token_encrypted FROM tiny_oauth_tokens"
            )
        ).one()
    assert row.access_token is None and row.refresh_token is None, "token stored in clear"
    cipher = CredentialsCipher(SANDBOX_CREDENTIALS_KEY)
    return (
        cipher.decrypt(row.access_token_encrypted, "access"),
        cipher.decrypt(row.refresh_token_encrypted, "refresh"),
    )


# The whole project's Tiny part on a scratch database, for the Dagster-level tests.
@pytest.fixture
def project(pg_url, monkeypatch):
    sim = TinySimulator(seed=5, n_orders=400, per_minute_limit=100_000, burst_per_second=100_000)
    sim.start()
    with scratch_database(pg_url) as url:
        monkeypatch.setenv("SYNC_DATABASE_URL", url)
        for key, value in TINY_PART.env(sim.base_url).items():
            monkeypatch.setenv(key, value)
        for role in ("tiny", "control"):
            db = create_database(role, url, {"tiny": "tiny", "control": "sync_control"}[role])
            migrate(db)
            db.dispose()
        yield sim, url
    sim.stop()


def own(result, node: str):
    """The asset's own materialization (the tables it wrote report theirs too)."""
    [mine] = [
        m
        for m in result.asset_materializations_for_node(node)
        if m.asset_key.to_python_identifier() == node
    ]
    return mine


def resources() -> dict:
    # Built per test: the resources are wired to the variables each test's fixtures set.
    return {
        "tiny_api": TinyApiResource.from_env_vars(),
        "tiny_db": DatabaseResource.for_role("tiny"),
        "control_db": DatabaseResource.for_role("control"),
        "telegram": TelegramResource.from_env_vars(),
    }
