"""A failed run reaches the admins on Telegram: job, partition, first error line, run link,
with secrets and personal data redacted; nothing breaks when Telegram is not configured."""

from __future__ import annotations

import pytest
from dagster import (
    DagsterInstance,
    DefaultSensorStatus,
    StaticPartitionsDefinition,
    asset,
    build_run_status_sensor_context,
    materialize,
)

from sync_pipelines.definitions import defs
from sync_pipelines.operations.alerts import run_failure_telegram_alert
from sync_pipelines.resources import TelegramResource
from sync_pipelines.sandbox.telegram_sim import (
    SANDBOX_ADMIN_IDS,
    SANDBOX_BOT_TOKEN,
    TelegramSimulator,
)

CPF = "123.456.789-09"
DB_PASSWORD = "pw-db-7731"


@asset(partitions_def=StaticPartitionsDefinition(["exatron", "padaria"]))
def tenant_contacts() -> None:
    raise RuntimeError(
        f"contact {CPF} rejected by mysql://app:{DB_PASSWORD}@tenant-db/exatron\n"
        "second line of the error that the alert leaves out"
    )


@pytest.fixture
def telegram(monkeypatch):
    sim = TelegramSimulator()
    base_url = sim.start()
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", SANDBOX_BOT_TOKEN)
    monkeypatch.setenv("ADMIN_USER_IDS", ",".join(SANDBOX_ADMIN_IDS))
    monkeypatch.setenv("TELEGRAM_API_BASE_URL", base_url)
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", "https://dagster.example.com/")
    yield sim
    sim.stop()


def _failed_run_context(instance: DagsterInstance):
    result = materialize(
        [tenant_contacts], instance=instance, partition_key="exatron", raise_on_error=False
    )
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    return run, build_run_status_sensor_context(
        sensor_name=run_failure_telegram_alert.name,
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=run,
        resources={"telegram": TelegramResource.from_env_vars()},
    ).for_run_failure()


def test_failed_run_is_sent_to_every_admin_with_job_partition_error_and_link(telegram):
    with DagsterInstance.ephemeral() as instance:
        run, context = _failed_run_context(instance)
        run_failure_telegram_alert(context)
    assert sorted(str(m["chat_id"]) for m in telegram.messages) == sorted(SANDBOX_ADMIN_IDS)
    text = telegram.messages[0]["text"]
    assert "run failed: materialize tenant_contacts" in text  # the assets, not __ASSET_JOB
    assert "partition: exatron" in text
    assert "tenant_contacts: RuntimeError: contact" in text or "tenant_contacts: contact" in text
    assert "rejected by mysql://" in text
    assert f"run: https://dagster.example.com/runs/{run.run_id}" in text
    assert "second line" not in text
    # redacted: the CPF and the URL's password never reach a chat
    assert CPF not in text and "12345678909" not in text
    assert DB_PASSWORD not in text


def test_without_telegram_configuration_the_sensor_only_logs_why(monkeypatch):
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    monkeypatch.delenv("ADMIN_USER_IDS", raising=False)
    with DagsterInstance.ephemeral() as instance:
        _, context = _failed_run_context(instance)
        run_failure_telegram_alert(context)  # no exception: alerts are best effort


def test_alert_sensor_is_part_of_the_project_and_running_by_default():
    sensor = defs.get_sensor_def("run_failure_telegram_alert")
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    assert "telegram" in sensor.required_resource_keys
