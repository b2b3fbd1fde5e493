"""HubSoft fixtures: the HubSoft and Telegram simulators as real HTTP servers, the hubsoft
tables in the test's schema, and a client with quick retries."""

from __future__ import annotations

import pytest

from sync_pipelines.hubsoft.client import HubSoftClient, HubSoftSettings
from sync_pipelines.lib.http import RetryPolicy
from sync_pipelines.lib.migrations import migrate
from sync_pipelines.sandbox.hubsoft_sim import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_PASSWORD,
    SANDBOX_USERNAME,
    HubSoftSimulator,
)

FAST_RETRY = RetryPolicy(max_attempts=3, base_backoff=0.01, max_backoff=0.05, max_wait=0.5)


def settings_for(sim: HubSoftSimulator, password: str = SANDBOX_PASSWORD) -> HubSoftSettings:
    return HubSoftSettings(
        base_url=sim.base_url,
        client_id=SANDBOX_CLIENT_ID,
        client_secret=SANDBOX_CLIENT_SECRET,
        username=SANDBOX_USERNAME,
        password=password,
    )


def make_client(sim: HubSoftSimulator, **kwargs) -> HubSoftClient:
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("timeout", (1.0, 2.0))
    return HubSoftClient(settings_for(sim), **kwargs)


@pytest.fixture
def sim():
    simulator = HubSoftSimulator(seed=7)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def client(sim):
    c = make_client(sim)
    yield c
    c.close()


@pytest.fixture
def hubsoft_db(pg_db):
    migrate(pg_db, "hubsoft")
    return pg_db
