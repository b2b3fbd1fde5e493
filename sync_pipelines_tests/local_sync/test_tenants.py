"""Finding tenant databases: URL template, clients_servers table, unusable names, probes."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from sync_pipelines.local_sync.tenants import TenantDirectory, TenantNotConfigured, scan_tenants


def test_template_gives_one_database_per_instance_and_refuses_unsafe_names():
    directory = TenantDirectory(template="mysql://sync:pw@db.example:3306/{instance}")
    target = directory.target("exatron")
    assert target.url.database == "exatron"
    assert target.url.drivername == "mysql+pymysql"
    assert "pw" not in target.describe()
    with pytest.raises(TenantNotConfigured, match="not usable"):
        directory.target("exatron; drop database x")


def test_postgres_template_schema_parameter_selects_a_schema_per_tenant():
    target = TenantDirectory(template="postgresql://pg@h/main?schema=tenant_{instance}").target("a")
    assert target.schema == "tenant_a"
    assert "schema" not in target.url.query


def test_clients_servers_row_is_used_without_a_template_and_its_password_never_shown(main_db):
    with main_db.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE clients_servers (instance_name varchar(100), host varchar(100),"
            " port integer, username varchar(100), password varchar(100), database varchar(100))"
        )
        conn.execute(
            sa.text(
                "INSERT INTO clients_servers VALUES ('exatron', '10.1.2.3', 3307, 'exa',"
                " 'Very-Secret-1', 'exatron_db')"
            )
        )
    directory = TenantDirectory(main_db)
    target = directory.target("exatron")
    assert (target.url.host, target.url.port, target.url.database) == (
        "10.1.2.3",
        3307,
        "exatron_db",
    )
    assert target.url.password == "Very-Secret-1"
    assert "Very-Secret-1" not in target.describe() and "Very-Secret-1" not in repr(target)
    with pytest.raises(TenantNotConfigured, match="no row"):
        directory.target("other")


def test_without_template_or_clients_servers_the_reason_is_given(main_db):
    with pytest.raises(TenantNotConfigured, match="clients_servers"):
        TenantDirectory(main_db).target("exatron")


def test_scan_splits_reachable_tenants_from_unreachable_ones(pg_tenants):
    good = TenantDirectory(template=pg_tenants.template)
    assert scan_tenants(good, ["acme"]).ready == ["acme"]
    bad = TenantDirectory(template="mysql+pymysql://u:Secret-99@127.0.0.1:1/{instance}")
    scan = scan_tenants(bad, ["acme", "bad name"])
    assert scan.ready == []
    assert "not reachable" in scan.unavailable["acme"]
    assert "not usable" in scan.unavailable["bad name"]
    assert all("Secret-99" not in why for why in scan.unavailable.values())
