"""The asset graph tells each sync's story: external source -> sync -> tables, every table
with its name and columns, every group connected to its source, every check and schedule
described, every asset with its source tag, owners, kinds and a link to its code."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetKey, TableSchema

from sync_pipelines.catalog import DATABASE_SCHEMA, EXTERNALS, TABLES
from sync_pipelines.definitions import defs

GRAPH = defs.resolve_asset_graph()

# Each sync: its external source, and the tables it writes (fixed here, from the issue).
STORIES = {
    "tiny/api": ["tiny/ordens_servico", "tiny/ordem_status_history", "tiny/import_failures"],
    "detran/portal": ["detran/agenda_slots", "detran/agendamentos"],
    "hubsoft/api": ["hubsoft/support_tickets"],
    "tabuladormax/leads": ["gestao_scouter/leads"],
    "whatsapp/main_db": [
        "local_sync/wpp_contacts",
        "local_sync/wpp_contact_sectors",
        "local_sync/wpp_chats",
    ],
}


def _key(path: str) -> AssetKey:
    return AssetKey(path.split("/"))


def _upstream(key: AssetKey) -> set[AssetKey]:
    seen, todo = set(), [key]
    while todo:
        for parent in GRAPH.get(todo.pop()).parent_keys:
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


@pytest.mark.parametrize("source", sorted(STORIES))
def test_each_syncs_tables_are_downstream_of_its_external_source(source):
    node = GRAPH.get(_key(source))
    assert not node.is_materializable, f"{source} should be an external asset"
    for table in STORIES[source]:
        assert _key(source) in _upstream(_key(table)), f"{table} is not downstream of {source}"


def test_every_table_has_its_name_a_column_schema_and_the_migrations_upstream():
    for table in TABLES:
        node = GRAPH.get(table.key)
        assert node.metadata["dagster/table_name"] == table.name
        schema = node.metadata["dagster/column_schema"]
        assert isinstance(schema, TableSchema) and len(schema.columns) >= 2, table.key
        if table.role and table.role != "tenant":
            assert DATABASE_SCHEMA in _upstream(table.key), f"{table.key}: no database_schema"


def test_table_columns_come_from_the_migrations():
    columns = {
        c.name
        for c in GRAPH.get(_key("tiny/ordem_status_history"))
        .metadata["dagster/column_schema"]
        .columns
    }
    # `seq` is added by sql/tiny/0002 (ALTER TABLE ... ADD COLUMN), not by the CREATE TABLE.
    assert {"id_os", "status_antigo", "status_novo", "changed_at", "seq"} <= columns
    slots = {
        c.name
        for c in GRAPH.get(_key("detran/agenda_slots")).metadata["dagster/column_schema"].columns
    }
    assert "agendamento_synced" in slots  # sql/detran/0004


def test_no_group_is_disconnected_from_its_source():
    externals = {e.key for e in EXTERNALS}
    by_group: dict[str, set[AssetKey]] = {}
    for key in GRAPH.get_all_asset_keys():
        by_group.setdefault(GRAPH.get(key).group_name, set()).add(key)
    for group, keys in by_group.items():
        if group == "operations":
            continue
        sources = keys & externals
        assert sources, f"group {group} has no external source"
        for key in keys - externals:
            assert _upstream(key) & sources, (
                f"{key.to_user_string()} is cut off from {group}'s source"
            )


def test_every_asset_has_source_tag_owners_kinds_and_code_reference():
    root = Path(__file__).resolve().parents[1]
    for key in GRAPH.get_all_asset_keys():
        node = GRAPH.get(key)
        name = key.to_user_string()
        assert node.tags.get("source"), f"{name} has no source tag"
        assert node.owners, f"{name} has no owners"
        assert node.kinds, f"{name} has no kinds"
        refs = node.metadata["dagster/code_references"].code_references
        assert refs and all(Path(r.file_path).is_file() for r in refs), name
        assert all(Path(r.file_path).is_relative_to(root) for r in refs), name


def test_every_check_and_schedule_has_a_description():
    for check_key in GRAPH.asset_check_keys:
        spec = GRAPH.get_check_spec(check_key)
        assert spec.description, (
            f"check {check_key.name} on {check_key.asset_key} has no description"
        )
    for schedule in defs.schedules:
        assert schedule.description, f"schedule {schedule.name} has no description"
    for sensor in defs.sensors:
        assert sensor.description, f"sensor {sensor.name} has no description"
