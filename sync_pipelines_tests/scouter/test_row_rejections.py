"""Rows Gestão Scouter refuses, whatever the SQLSTATE: the batch is split until each refused
lead is alone, the rest is exported, and the error rows keep no personal value in clear
(PostgREST echoes refused values and whole failing rows in message, details and body)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from sync_pipelines.scouter import jobs
from sync_pipelines.scouter.export import export_day
from sync_pipelines.scouter.mapping import resolve_mapping
from sync_pipelines.scouter.source import TZ, source_columns

from .conftest import DAY, dest_rows, seed_day

NOW = dt.datetime.combine(DAY + dt.timedelta(days=10), dt.time(12), tzinfo=TZ)


def _export(source_db, client) -> tuple[jobs.ExportJob, object]:
    job = jobs.create_job(source_db, DAY, DAY, {})
    ctx = (resolve_mapping(), source_columns(source_db), client.columns())
    return job, export_day(source_db, client, job.id, DAY, *ctx, now=NOW)


def _errors(db) -> list[dict]:
    with db.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                sa.text(
                    f"SELECT * FROM {db.table('gestao_scouter_export_errors')} ORDER BY lead_id"
                )
            ).mappings()
        ]


@pytest.mark.parametrize("sqlstate", ["22P05", "22021", "22023", "23P01", "P0001", "XY123"])
def test_a_batch_refused_with_any_row_code_isolates_the_rows_and_exports_the_rest(
    source_db, client, sim, sqlstate
):
    leads = seed_day(source_db, DAY, 30)
    refused = {leads[4]["id"], leads[21]["id"]}
    sim.reject_rows(
        sqlstate,
        f"NEW.id IN ({', '.join(map(str, refused))})",
        "format('valor recusado: %s', NEW.nome)",
    )
    job, result = _export(source_db, client)
    assert (result.exported, result.errors) == (28, 2)
    assert set(dest_rows(sim)) == {lead["id"] for lead in leads} - refused
    errors = _errors(source_db)
    assert {e["lead_id"] for e in errors} == refused
    assert {e["error_details"]["code"] for e in errors} == {sqlstate}
    assert {e["response_status"] for e in errors} == {400}
    assert jobs.get_job(source_db, job.id).status == "completed"


def test_a_check_violation_is_isolated_and_its_error_rows_hold_no_personal_value_in_clear(
    source_db, client, sim
):
    leads = seed_day(source_db, DAY, 40)
    with sim.engine.begin() as conn:
        # Gestão Scouter only takes adults under 40: PostgreSQL's own 23514, whose detail is
        # the whole failing row.
        conn.exec_driver_sql(f"ALTER TABLE {sim.table} ADD CONSTRAINT idade CHECK (age < 40)")
    refused = {lead["id"] for lead in leads if lead["age"] >= 40}
    assert refused, "the seed must hold some leads aged 40 or more"
    _, result = _export(source_db, client)
    assert result.errors == len(refused) and result.exported == 40 - len(refused)
    errors = _errors(source_db)
    assert {e["lead_id"] for e in errors} == refused
    by_id = {lead["id"]: lead for lead in leads}
    for error in errors:
        lead = by_id[error["lead_id"]]
        stored = " ".join(
            [error["error_message"], error["response_body"], json.dumps(error["error_details"])]
        )
        assert error["error_details"]["code"] == "23514" and "idade" in error["error_message"]
        for field in ("name", "celular", "telefone_trabalho", "photo_url", "nome_modelo"):
            if lead[field]:
                assert lead[field] not in stored, field
        assert "Failing row contains (***)" in stored


def test_a_refused_personal_value_is_masked_in_message_body_and_details_as_in_the_snapshot(
    source_db, client, sim
):
    leads = seed_day(source_db, DAY, 10)
    target = leads[3]
    sim.reject_rows(
        "22023",
        f"NEW.id = {target['id']}",
        "format('nome inválido: %s (celular %s)', NEW.nome, NEW.celular)",
    )
    _, result = _export(source_db, client)
    assert result.errors == 1
    [error] = _errors(source_db)
    name = target["name"]
    for text in (error["error_message"], error["response_body"], error["error_details"]["details"]):
        assert name not in text
        assert name.split()[0] not in text or f"{name[:1]}***" in text
    assert f"nome inválido: {name[:1]}***" in error["error_message"]
    assert error["lead_snapshot"]["name"] == f"{name[:1]}***"


def test_empty_and_blank_texts_are_sent_as_they_are(source_db, client, sim):
    [lead] = seed_day(source_db, DAY, 1)
    with source_db.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE leads SET name = '  ', nome_modelo = '', etapa = '   ', "
                "celular = '', telefone_trabalho = ' ', telefone_casa = '(11) 2222-3333' "
                "WHERE id = :id"
            ),
            {"id": lead["id"]},
        )
    _export(source_db, client)
    row = dest_rows(sim)[lead["id"]]
    assert (row["nome"], row["nome_modelo"], row["etapa"]) == ("  ", "", "   ")
    assert (row["celular"], row["telefone_trabalho"]) == ("", " ")
    # telefone's mapping says "first non-empty of celular, telefone_trabalho, telefone_casa".
    assert row["telefone"] == "(11) 2222-3333"
