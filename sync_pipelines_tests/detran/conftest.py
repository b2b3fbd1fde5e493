"""Fixtures of the DETRAN tests: the migrated detran tables in a fresh schema, the portal
simulator (a real HTTP server on 127.0.0.1) and the two sandbox examiners stored with an
encryption key of the test's own."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import replace

import pytest
from cryptography.fernet import Fernet

from sync_pipelines.detran.client import PortalClient, PortalSettings
from sync_pipelines.detran.examiners import KEY_VAR, get_examiner
from sync_pipelines.detran.sessions import SessionCache
from sync_pipelines.detran.sync import SyncOptions, sync_examiner
from sync_pipelines.lib.http import RetryPolicy
from sync_pipelines.lib.migrations import migrate
from sync_pipelines.sandbox.detran_data import EXAMINERS, build_simulator, seed_examiners
from sync_pipelines.sandbox.detran_sim import DetranPortalSimulator

DOCTOR, PSYCHOLOGIST = EXAMINERS
# A Wednesday far from today: the simulator generates its bookings the same way every time.
DAY = dt.date(2031, 3, 12)


@pytest.fixture
def credentials_key(monkeypatch) -> str:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv(KEY_VAR, key)
    return key


@pytest.fixture
def detran_db(pg_db, credentials_key):
    migrate(pg_db, "detran")
    seed_examiners(pg_db, {KEY_VAR: credentials_key})
    return pg_db


@pytest.fixture
def portal() -> Iterator[DetranPortalSimulator]:
    sim = build_simulator(7)
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def settings(portal, tmp_path) -> PortalSettings:
    # Few, fast retries: the tests exercise the portal's states, not the backoff.
    return PortalSettings(
        base_url=portal.base_url,
        diagnostics_dir=tmp_path / "pages",
        timeout=(2.0, 5.0),
        retry=RetryPolicy(max_attempts=2, base_backoff=0.01, max_backoff=0.02),
    )


@pytest.fixture
def run_sync(detran_db, settings, credentials_key):
    """``run_sync(examiner, days)``: one sync through the portal simulator."""

    def run(sandbox_examiner=DOCTOR, days=(DAY,), *, options=None, cache=True):
        examiner = get_examiner(detran_db, sandbox_examiner.usuario_id)
        return sync_examiner(
            detran_db,
            examiner,
            list(days),
            portal_factory=lambda creds: PortalClient(settings, creds),
            sessions=SessionCache(detran_db, settings.base_url, env={KEY_VAR: credentials_key})
            if cache
            else None,
            # the key as the portal resource passes it (plain modules never read the env)
            options=replace(options or SyncOptions(), credentials_key=credentials_key),
        )

    return run


@pytest.fixture
def instance():
    """A Dagster instance of its own, the sandbox's two examiners as dynamic partitions."""
    from dagster import instance_for_test

    from sync_pipelines.detran.defs import EXAMINERS_PARTITIONS

    with instance_for_test() as inst:
        inst.add_dynamic_partitions(EXAMINERS_PARTITIONS, ["1", "2"])
        yield inst
