"""The Dagster layer: tenant sensor, 6-hourly schedule and the assets, on a real instance."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from dagster import (
    SensorResult,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from sync_pipelines.local_sync.defs import (
    local_sync_every_6_hours,
    local_sync_new_tenants,
    local_sync_tenant,
    tenant_partitions,
)
from sync_pipelines.resources import DatabaseResource
from sync_pipelines.sandbox.local_sync_data import SourceData, generate_instance, write_source

RESOURCES = {
    "whatsapp_db": DatabaseResource(role="whatsapp"),
    "control_db": DatabaseResource(role="control"),
}


@pytest.fixture
def env(main_db, pg_tenants, pg_url, monkeypatch):
    for var in ("WHATSAPP", "SYNC_CONTROL"):
        monkeypatch.setenv(f"{var}_DATABASE_URL", pg_url)
        monkeypatch.setenv(f"{var}_DATABASE_SCHEMA", main_db.schema)
    monkeypatch.setenv("LOCAL_SYNC_TENANT_URL_TEMPLATE", pg_tenants.template)
    return pg_tenants


@pytest.fixture
def instance():
    with instance_for_test() as inst:
        yield inst


def _sensor(instance) -> SensorResult | SkipReason:
    with build_sensor_context(instance=instance, resources=RESOURCES) as ctx:
        return local_sync_new_tenants(ctx)


def _count(tenants, instance: str, table: str) -> int:
    db = tenants.home(instance)
    with db.connect() as conn:
        return conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar()


def test_new_instance_in_main_database_becomes_a_partition_and_is_synced(main_db, env, instance):
    write_source(
        main_db, generate_instance("acme", 50, first_contact_id=1, first_chat_id=1, seed=3)
    )
    # a name that cannot be a database name: reported, never added
    write_source(
        main_db, generate_instance("loja nova", 5, first_contact_id=900, first_chat_id=900, seed=3)
    )

    first = _sensor(instance)
    assert isinstance(first, SensorResult)
    assert [r.partition_keys for r in first.dynamic_partitions_requests] == [["acme"]]
    assert [r.partition_key for r in first.run_requests] == ["acme"]
    instance.add_dynamic_partitions(tenant_partitions.name, ["acme"])

    quiet = _sensor(instance)
    assert isinstance(quiet, SkipReason) and "loja nova" in quiet.skip_message

    write_source(
        main_db, generate_instance("nova", 30, first_contact_id=500, first_chat_id=500, seed=3)
    )
    second = _sensor(instance)
    assert [r.partition_keys for r in second.dynamic_partitions_requests] == [["nova"]]
    request = second.run_requests[0]
    instance.add_dynamic_partitions(tenant_partitions.name, ["nova"])

    result = materialize(
        [local_sync_tenant],
        partition_key=request.partition_key,
        run_config=request.run_config,
        instance=instance,
        resources=RESOURCES,
    )
    assert result.success
    assert _count(env, "nova", "wpp_contacts") == 30
    mats = {
        e.asset_key.path[-1]: e.event_specific_data.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    assert mats["wpp_contacts"]["mode"].value == "full"
    assert mats["wpp_contacts"]["inserted"].value == 30
    assert set(mats) == {"wpp_contacts", "wpp_contact_sectors", "wpp_chats"}


def test_schedule_requests_a_full_reconcile_of_every_tenant(instance):
    instance.add_dynamic_partitions(tenant_partitions.name, ["beta", "acme"])
    when = dt.datetime(2024, 6, 1, 6, 0, tzinfo=dt.UTC)
    with build_schedule_context(instance=instance, scheduled_execution_time=when) as ctx:
        requests = local_sync_every_6_hours(ctx)
    assert [r.partition_key for r in requests] == ["acme", "beta"]
    assert all(
        r.run_config["ops"]["local_sync_tenant"]["config"]["full_reconcile"] for r in requests
    )


def test_one_table_on_demand_and_no_personal_data_in_the_event_log(main_db, env, instance):
    data = generate_instance("acme", 40, first_contact_id=1, first_chat_id=1, seed=4)
    write_source(main_db, data)
    instance.add_dynamic_partitions(tenant_partitions.name, ["acme"])
    result = materialize(
        [local_sync_tenant],
        selection="local_sync/wpp_contacts",
        partition_key="acme",
        instance=instance,
        resources=RESOURCES,
    )
    assert result.success
    assert [e.asset_key.path[-1] for e in result.get_asset_materialization_events()] == [
        "wpp_contacts"
    ]
    assert _count(env, "acme", "wpp_chats") == 0
    log_text = "\n".join(str(e) for e in instance.all_logs(result.run_id))
    for row in data.contacts:
        assert row["phone"] not in log_text
        assert row["name"] not in log_text
    assert "password" not in log_text.lower()


def test_unreachable_tenant_is_reported_not_added(main_db, instance, pg_url, monkeypatch):
    for var in ("WHATSAPP", "SYNC_CONTROL"):
        monkeypatch.setenv(f"{var}_DATABASE_URL", pg_url)
        monkeypatch.setenv(f"{var}_DATABASE_SCHEMA", main_db.schema)
    monkeypatch.setenv(
        "LOCAL_SYNC_TENANT_URL_TEMPLATE", "mysql+pymysql://u:s3cr3tpw@127.0.0.1:1/{instance}"
    )
    write_source(
        main_db,
        SourceData(
            contacts=generate_instance(
                "acme", 2, first_contact_id=1, first_chat_id=1, seed=5
            ).contacts
        ),
    )
    outcome = _sensor(instance)
    assert isinstance(outcome, SkipReason)
    assert "acme" in outcome.skip_message
    assert instance.get_dynamic_partitions(tenant_partitions.name) == []
