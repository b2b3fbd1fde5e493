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

from sync_pipelines.lib.locks import lock_key
from sync_pipelines.local_sync.defs import (
    local_sync_every_6_hours,
    local_sync_new_tenants,
    local_sync_tenant,
    tenant_partitions,
)
from sync_pipelines.local_sync.target import ensure_tables
from sync_pipelines.local_sync.watermarks import Watermarks
from sync_pipelines.resources import DatabaseResource, TenantDatabasesResource
from sync_pipelines.sandbox.local_sync_data import SourceData, generate_instance, write_source


def resources() -> dict:
    # Built per test: the resources are wired to the variables each test's fixtures set.
    return {
        "whatsapp_db": DatabaseResource.for_role("whatsapp"),
        "control_db": DatabaseResource.for_role("control"),
        "tenant_dbs": TenantDatabasesResource.from_env_vars(),
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
    with build_sensor_context(instance=instance, resources=resources()) as ctx:
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
        resources=resources(),
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
        resources=resources(),
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


def test_unreachable_tenant_run_fails_naming_it_and_other_tenants_sync(
    main_db, mysql_tenants, mysql_url, instance, pg_url, monkeypatch
):
    """clients_servers mode: 'acme' points at a live MySQL, 'filial' at a closed port."""
    for var in ("WHATSAPP", "SYNC_CONTROL"):
        monkeypatch.setenv(f"{var}_DATABASE_URL", pg_url)
        monkeypatch.setenv(f"{var}_DATABASE_SCHEMA", main_db.schema)
    monkeypatch.delenv("LOCAL_SYNC_TENANT_URL_TEMPLATE", raising=False)
    good = mysql_tenants.home("acme").engine.url
    with main_db.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE clients_servers (instance_name varchar(100), host varchar(100),"
            " port integer, username varchar(100), password varchar(100), database varchar(100))"
        )
        conn.execute(
            sa.text("INSERT INTO clients_servers VALUES (:i, :h, :p, :u, :pw, :d)"),
            [
                {
                    "i": "acme",
                    "h": good.host,
                    "p": good.port,
                    "u": good.username,
                    "pw": good.password,
                    "d": good.database,
                },
                {
                    "i": "filial",
                    "h": "127.0.0.1",
                    "p": 1,
                    "u": "filial_user",
                    "pw": "Filial-Secret-7",
                    "d": "filial_db",
                },
            ],
        )
    for name, first in (("acme", 1), ("filial", 100)):
        write_source(
            main_db, generate_instance(name, 5, first_contact_id=first, first_chat_id=first, seed=6)
        )
    instance.add_dynamic_partitions(tenant_partitions.name, ["acme", "filial"])

    runs = {
        tenant: materialize(
            [local_sync_tenant],
            partition_key=tenant,
            instance=instance,
            resources=resources(),
            raise_on_error=False,
        )
        for tenant in ("filial", "acme")
    }

    assert not runs["filial"].success
    # Dagster wraps what the step raised; the step raised our error, with nothing under it
    error = runs["filial"].failure_data_for_node("local_sync_tenant").error.cause
    assert error.cls_name == "TenantUnreachable"
    assert error.message.startswith(
        "sync_pipelines.local_sync.tenants.TenantUnreachable: tenant filial:"
    )
    assert "127.0.0.1:1/filial_db" in error.message  # where, so the operator can check it
    assert "clients_servers row of instance_name 'filial'" in error.message
    assert error.cause is None and error.context is None  # no raw driver traceback under it
    log_text = "\n".join(str(e) for e in instance.all_logs(runs["filial"].run_id))
    assert "Filial-Secret-7" not in log_text and "filial_user" not in log_text

    assert runs["acme"].success  # the other tenant's run is not affected
    assert _count(mysql_tenants, "acme", "wpp_contacts") == 5


def test_run_whose_lock_session_is_killed_stops_before_writing_more(main_db, env, instance):
    """The tenant's lock lives on a control-database session. While the run writes contacts,
    that session is terminated from another connection (a trigger on the tenant's table calls
    pg_terminate_backend): the run must stop before its next table, not write on unlocked."""
    write_source(
        main_db, generate_instance("acme", 30, first_contact_id=1, first_chat_id=1, seed=7)
    )
    tenant = env.home("acme")
    ensure_tables(tenant)
    key = lock_key(f"{main_db.schema}/local_sync:acme")
    with tenant.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION kill_lock_holder() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "PERFORM pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
            f"AND objsubid = 1 AND classid = {(key >> 32) & 0xFFFFFFFF} "
            f"AND objid = {key & 0xFFFFFFFF}; RETURN NULL; END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER kill_lock_holder AFTER INSERT ON wpp_contacts "
            "FOR EACH STATEMENT EXECUTE FUNCTION kill_lock_holder()"
        )
    instance.add_dynamic_partitions(tenant_partitions.name, ["acme"])

    result = materialize(
        [local_sync_tenant],
        partition_key="acme",
        instance=instance,
        resources=resources(),
        raise_on_error=False,
    )

    assert not result.success
    error = result.failure_data_for_node("local_sync_tenant").error.cause
    assert error.cls_name == "LockLostError"
    assert "lock 'local_sync:acme' was lost" in error.message
    assert _count(env, "acme", "wpp_contacts") == 30  # written while the lock was held
    assert _count(env, "acme", "wpp_contact_sectors") == 0  # nothing after it was lost
    assert _count(env, "acme", "wpp_chats") == 0
    assert Watermarks(main_db).get("wpp_chats", "acme") is None
