"""DETRAN guards through Dagster, against the portal simulator, the Telegram simulator and
real PostgreSQL: a mass removal fails the check and alerts once until the slots come back;
a refused login alerts once while the other examiner keeps syncing; the failure rate of an
examiner's runs fails its check."""

from __future__ import annotations

import datetime as dt
import os
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from dagster import materialize

from sync_pipelines.detran.defs import (
    FAILURE_RATE_CHECK,
    REMOVAL_CHECK,
    DetranPortalResource,
    agenda_slots,
    partition_key,
)
from sync_pipelines.detran.examiners import save_examiner
from sync_pipelines.lib.migrations import migrate
from sync_pipelines.resources import DatabaseResource, TelegramResource
from sync_pipelines.sandbox.telegram_sim import SANDBOX_ADMIN_IDS, TELEGRAM_PART

from .conftest import DOCTOR, PSYCHOLOGIST

UNIT = "1234"  # the doctor's only unit
ADMIN = SANDBOX_ADMIN_IDS[0]


@pytest.fixture
def env(monkeypatch, detran_db, pg_url, pg_schema, portal, telegram, tmp_path):
    for var, value in {
        "DETRAN_DATABASE_URL": pg_url,
        "DETRAN_DATABASE_SCHEMA": pg_schema,
        "SYNC_CONTROL_DATABASE_URL": pg_url,
        "SYNC_CONTROL_DATABASE_SCHEMA": pg_schema,
        "DETRAN_PORTAL_URL": portal.base_url,
        "DETRAN_DIAGNOSTICS_DIR": str(tmp_path / "pages"),
        **TELEGRAM_PART.env(telegram.base_url),
    }.items():
        monkeypatch.setenv(var, value)
    migrate(detran_db, "control")
    return detran_db


def work_day() -> dt.date:
    """A weekday within the partitions' window (both examiners work Monday to Friday)."""
    day = dt.datetime.now(ZoneInfo("America/Sao_Paulo")).date() + dt.timedelta(days=1)
    while day.isoweekday() > 5:
        day += dt.timedelta(days=1)
    return day


def run(instance, day, usuario_id=DOCTOR.usuario_id):
    return materialize(
        [agenda_slots],
        partition_key=partition_key(day, usuario_id),
        instance=instance,
        resources={
            "detran_db": DatabaseResource.for_role("detran"),
            "detran_portal": DetranPortalResource.from_env_vars(),
            "telegram": TelegramResource.from_env_vars(),
            "control_db": DatabaseResource.for_role("control"),
        },
        raise_on_error=False,
    )


def checks(result) -> dict:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def test_mass_removal_fails_the_check_and_alerts_once_until_the_slots_come_back(
    env, instance, portal, telegram
):
    day = work_day()
    for i in range(10 - len(portal.bookings(DOCTOR.code, UNIT, day))):
        portal.add_booking(DOCTOR.code, UNIT, day, f"{17 + i // 3:02d}:{(i % 3) * 20:02d}")
    bookings = list(portal.bookings(DOCTOR.code, UNIT, day))
    assert len(bookings) == 10
    first = run(instance, day)
    assert first.success and checks(first)[REMOVAL_CHECK].passed

    cancelled = [portal.cancel_booking(DOCTOR.code, UNIT, day, b["cpf"]) for b in bookings[:6]]
    for attempt in range(3):
        result = run(instance, day)
        assert result.success  # what the portal shows is recorded all the same
        check = checks(result)[REMOVAL_CHECK]
        assert not check.passed
        meta = {k: v.value for k, v in check.metadata.items()}
        assert (meta["before"], meta["vanished"], meta["share"]) == (10, 6, 0.6)
        assert meta["this_run_removed"] == (6 if attempt == 0 else 0)
    with env.connect() as conn:
        removed = conn.execute(
            sa.text("SELECT count(*) FROM agenda_slots WHERE status = 'removed'")
        ).scalar()
    assert removed == 6
    texts = telegram.texts(ADMIN)
    assert len(texts) == 1 and "6 of 10" in texts[0] and "60%" in texts[0]
    assert len(telegram.messages) == len(SANDBOX_ADMIN_IDS)

    for booking in cancelled:
        fields = {k: v for k, v in booking.items() if k != "hora"}
        portal.add_booking(DOCTOR.code, UNIT, day, booking["hora"], **fields)
    restored = run(instance, day)
    assert restored.success and checks(restored)[REMOVAL_CHECK].passed
    run(instance, day)
    texts = telegram.texts(ADMIN)
    assert len(texts) == 2 and "back to normal" in texts[1]
    personal = [b[k] for b in bookings for k in ("cpf", "nome")]
    assert [p for p in personal if p in "".join(texts)] == []


def test_small_removal_stays_quiet(env, instance, portal, telegram):
    day = work_day()
    for i in range(10 - len(portal.bookings(DOCTOR.code, UNIT, day))):
        portal.add_booking(DOCTOR.code, UNIT, day, f"{17 + i // 3:02d}:{(i % 3) * 20:02d}")
    assert run(instance, day).success
    for booking in list(portal.bookings(DOCTOR.code, UNIT, day))[:3]:  # 30%: not above it
        portal.cancel_booking(DOCTOR.code, UNIT, day, booking["cpf"])
    result = run(instance, day)
    assert checks(result)[REMOVAL_CHECK].passed
    assert telegram.messages == []


def test_wrong_password_alerts_once_and_the_other_examiner_still_syncs(
    env, instance, portal, telegram
):
    day = work_day()
    save_examiner(env, DOCTOR.usuario_id, password="Senha#Errada-77", env=os.environ)
    for attempt in range(1, 4):
        refused = run(instance, day)
        assert not refused.success
        # One password per run: a refusal is never answered by posting it again.
        assert portal.password_posts == {DOCTOR.cpf: attempt}
    (failure,) = refused.get_step_failure_events()
    message = failure.step_failure_data.error.message
    assert "refused credentials" in message and "Senha#Errada-77" not in message
    with env.connect() as conn:
        recorded = (
            conn.execute(
                sa.text(
                    "SELECT error_details->>'login_failure' FROM agenda_sync_runs"
                    " WHERE usuario_id = :u ORDER BY id"
                ),
                {"u": DOCTOR.usuario_id},
            )
            .scalars()
            .all()
        )
    assert recorded == ["WrongCredentials"] * 3
    # Evaluated on the failed run too: 3 of 3 of the doctor's runs failed.
    rate = checks(refused)[FAILURE_RATE_CHECK]
    assert not rate.passed and rate.metadata["failed_runs"].value == 3
    other = run(instance, day, PSYCHOLOGIST.usuario_id)
    assert other.success and checks(other)[FAILURE_RATE_CHECK].passed
    texts = telegram.texts(ADMIN)
    assert len(texts) == 1
    assert "refused the login of examiner 1" in texts[0]
    assert "Senha#Errada-77" not in texts[0] and DOCTOR.cpf not in texts[0]

    save_examiner(env, DOCTOR.usuario_id, password=DOCTOR.password, env=os.environ)
    fixed = run(instance, day)
    assert fixed.success
    assert not checks(fixed)[FAILURE_RATE_CHECK].passed  # still 3 failed of 4 in 24 h
    run(instance, day)
    texts = telegram.texts(ADMIN)
    assert len(texts) == 2 and "logs in to the portal again" in texts[1]


def test_failure_rate_threshold_is_configurable(env, instance, portal, monkeypatch):
    monkeypatch.setenv("DETRAN_FAILURE_RATE_ALERT", "80%")
    day = work_day()
    assert run(instance, day).success
    portal.broken_pages = 1
    assert not run(instance, day).success
    result = run(instance, day)
    rate = checks(result)[FAILURE_RATE_CHECK]
    assert rate.passed and rate.metadata["failure_rate"].value == pytest.approx(1 / 3, abs=1e-3)
    monkeypatch.setenv("DETRAN_FAILURE_RATE_ALERT", "0.2")
    assert not checks(run(instance, day))[FAILURE_RATE_CHECK].passed  # 1 of 4 failed: 25%
