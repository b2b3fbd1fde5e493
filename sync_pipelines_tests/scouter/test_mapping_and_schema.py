"""Field mapping (default, overrides, validation against real columns) and the schema
comparison with its suggested SQL; the connection check's messages."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from sync_pipelines.sandbox.postgrest_sim import SANDBOX_ANON_KEY
from sync_pipelines.sandbox.scouter_data import make_lead
from sync_pipelines.scouter.client import GestaoScouterClient
from sync_pipelines.scouter.mapping import (
    MappingError,
    masked_snapshot,
    resolve_mapping,
    to_destination,
    validate_mapping,
)
from sync_pipelines.scouter.schema import check_connection, compare_schemas
from sync_pipelines.scouter.source import source_columns

NOW = dt.datetime(2024, 11, 5, 15, 0, tzinfo=dt.UTC)


def test_default_mapping_renames_picks_a_phone_converts_types_and_leaves_out_internals(
    source_db, client
):
    lead = make_lead(7, NOW, random.Random(1))
    lead |= {"celular": "  ", "telefone_trabalho": "(11) 3333-4444", "ficha_confirmada": True}
    payload = to_destination(lead, resolve_mapping(), client.columns(), NOW)
    assert payload["nome"] == lead["name"] and payload["foto"] == lead["photo_url"]
    assert payload["telefone"] == "(11) 3333-4444"  # celular blank -> next non-empty
    assert payload["ficha_confirmada"] == "true"  # boolean -> text column
    assert payload["updated_at"] == lead["updated_at"].isoformat()
    assert payload["valor_ficha"] == str(lead["valor_ficha"])
    assert payload["sync_source"] == "tabuladormax"
    for internal in ("address", "raw", "commercial_project_id", "bitrix_telemarketing_id"):
        assert internal not in payload
    problems = validate_mapping(resolve_mapping(), source_columns(source_db), client.columns())
    assert problems.ok


def test_overrides_merge_over_the_default_and_null_drops_an_entry():
    mapping = resolve_mapping({"localizacao": "address", "foto": None})
    assert mapping.columns["localizacao"] == ("address",)
    assert "foto" not in mapping.columns


@pytest.mark.parametrize(
    "override",
    [{"id": None}, {"id": "name"}, {"sync_source": "fonte"}, {"nome": 3}, {"nome": []}],
)
def test_malformed_mappings_are_refused(override):
    with pytest.raises(MappingError):
        resolve_mapping(override)


def test_names_from_config_are_checked_against_real_columns_never_run_as_sql(source_db, client):
    evil = 'nome"; DROP TABLE leads; --'
    mapping = resolve_mapping({evil: "name", "nome": "name); DELETE FROM leads; --"})
    problems = validate_mapping(mapping, source_columns(source_db), client.columns())
    assert evil in problems.missing_at_destination
    assert ("nome", "name); DELETE FROM leads; --") in problems.missing_at_source
    report = compare_schemas(mapping, source_columns(source_db), client.columns())
    # Suggested SQL quotes the name as one identifier.
    assert '"nome""; DROP TABLE leads; --"' in report.suggested_sql


def test_missing_destination_columns_get_sql_typed_from_the_source_then_a_cache_reload(
    source_db, client, sim
):
    with sim.engine.begin() as conn:
        conn.exec_driver_sql(
            f"ALTER TABLE {sim.table} DROP COLUMN valor_ficha, DROP COLUMN compareceu"
        )
    sim.reload_schema()
    report = compare_schemas(resolve_mapping(), source_columns(source_db), client.columns())
    assert not report.ok
    assert report.missing_at_destination == {
        "compareceu": "boolean",
        "valor_ficha": "numeric(10,2)",
    }
    assert report.suggested_sql.splitlines() == [
        'ALTER TABLE public.leads ADD COLUMN IF NOT EXISTS "compareceu" boolean;',
        'ALTER TABLE public.leads ADD COLUMN IF NOT EXISTS "valor_ficha" numeric(10,2);',
        "NOTIFY pgrst, 'reload schema';",
    ]
    assert "horario_agendamento (text) → horario_agendamento (time without time zone)" in (
        report.type_warnings
    )


def test_masked_snapshot_hides_personal_fields_and_keeps_the_rest():
    lead = make_lead(7, NOW, random.Random(1)) | {"celular": "(11) 98888-1234"}
    snap = masked_snapshot(lead)
    assert snap["celular"] == "(**) *****-1234"
    assert snap["name"].endswith("***") and len(snap["name"]) == 4
    assert snap["address"] == "***" and snap["raw"] == "***"
    assert snap["horario_agendamento"] == lead["horario_agendamento"]


def test_connection_check_passes_with_the_service_key(client):
    report = check_connection(client)
    assert report.ok, report.problems
    assert [step for step, passed, _ in report.steps] == ["reach", "write"]


def test_connection_check_says_what_to_fix(sim):
    with GestaoScouterClient(sim.base_url, "not-the-key") as bad:
        assert "GESTAO_SCOUTER_SERVICE_KEY" in check_connection(bad).problems[0]
    with GestaoScouterClient(sim.base_url, SANDBOX_ANON_KEY) as anon:
        report = check_connection(anon)
    assert [s for s, passed, _ in report.steps if not passed] == ["write"]
    assert "service_role" in report.problems[0]
    from sync_pipelines.lib.http import RetryPolicy

    with GestaoScouterClient(
        "http://127.0.0.1:9", "k" * 10, retry=RetryPolicy(max_attempts=1)
    ) as nowhere:
        assert "GESTAO_SCOUTER_URL" in check_connection(nowhere).problems[0]
