"""The PostgREST client against the simulator's real table: upsert semantics, errors mapped
to what to fix, the OpenAPI column list, the schema cache, retries."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from sync_pipelines.lib.http import HttpError, RetryPolicy
from sync_pipelines.sandbox.postgrest_sim import SANDBOX_ANON_KEY
from sync_pipelines.scouter.client import GestaoScouterClient, PostgrestError

from .conftest import dest_rows


def lead(i: int, **extra) -> dict:
    return {"id": i, "nome": f"Lead {i}", "updated_at": "2024-11-05T10:00:00-03:00", **extra}


def test_bulk_upsert_inserts_then_merges_only_the_sent_columns(client, sim):
    client.upsert_leads([lead(1, etapa="Lead"), lead(2, etapa="Lead")])
    client.upsert_leads([{"id": 1, "etapa": "Agendado"}])
    rows = dest_rows(sim)
    assert rows[1]["etapa"] == "Agendado" and rows[1]["nome"] == "Lead 1"
    assert rows[2]["etapa"] == "Lead"
    assert sim.written[1] == 2 and sim.written[2] == 1


def test_one_bad_value_fails_the_whole_array_with_22P02(client, sim):
    with pytest.raises(PostgrestError) as info:
        client.upsert_leads([lead(1, age=20), lead(2, age="vinte")])
    assert info.value.code == "22P02" and info.value.status == 400
    assert info.value.row_specific
    assert dest_rows(sim) == {}


def test_unknown_column_is_PGRST204_and_not_row_specific(client):
    with pytest.raises(PostgrestError) as info:
        client.upsert_leads([lead(1, cor_favorita="azul")])
    assert info.value.code == "PGRST204" and info.value.kind == "unknown_column"
    assert not info.value.row_specific
    assert "NOTIFY pgrst" in str(info.value)


def test_objects_with_different_keys_are_refused(client):
    with pytest.raises(PostgrestError) as info:
        client.upsert_leads([lead(1), {"id": 2}])
    assert info.value.code == "PGRST102"


def test_bad_key_is_401_and_the_message_says_which_variable_to_fix(sim):
    with GestaoScouterClient(sim.base_url, "wrong-key-123") as bad:
        with pytest.raises(PostgrestError) as info:
            bad.upsert_leads([lead(1)])
    assert info.value.status == 401 and info.value.kind == "auth"
    assert "GESTAO_SCOUTER_SERVICE_KEY" in str(info.value)
    assert "wrong-key-123" not in str(info.value)


def test_anon_key_can_read_but_not_write(sim):
    with GestaoScouterClient(sim.base_url, SANDBOX_ANON_KEY) as anon:
        assert "id" in anon.columns()
        with pytest.raises(PostgrestError) as info:
            anon.check_write()
    assert info.value.kind == "permission" and info.value.code == "42501"


def test_openapi_root_lists_real_columns_and_new_ones_only_after_a_reload(client, sim):
    columns = client.columns()
    assert len(columns) == 49
    assert columns["ficha_confirmada"] == "text"
    assert columns["updated_at"] == "timestamp with time zone"
    with sim.engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE {sim.table} ADD COLUMN cor text")
    assert "cor" not in client.columns()
    with pytest.raises(PostgrestError):
        client.upsert_leads([lead(1, cor="azul")])
    reloads = sim.schema_reloads
    with sim.engine.begin() as conn:
        conn.execute(sa.text("NOTIFY pgrst, 'reload schema'"))
    # PostgREST reloads its cache asynchronously after the NOTIFY: wait for that reload
    # (the condition itself), then the new column is there.
    sim.wait_for_schema_reload(reloads)
    assert client.columns()["cor"] == "text"
    client.upsert_leads([lead(1, cor="azul")])
    assert dest_rows(sim)[1]["cor"] == "azul"


def test_429_and_503_are_retried_and_the_upsert_lands_once(client, sim):
    sim.set_faults(fail_next={"count": 2, "status": 503})
    client.upsert_leads([lead(1)])
    assert client.stats["retries"] == 2
    assert sim.written[1] == 1


def test_timeouts_are_retried_because_an_upsert_is_idempotent(sim):
    sim.set_faults(timeout_rate={"rate": 1.0, "seconds": 0.6})
    with GestaoScouterClient(
        sim.base_url,
        "sandbox-gestao-scouter-service-role-key",
        timeout=(1.0, 0.2),
        retry=RetryPolicy(max_attempts=2, base_backoff=0.01, max_backoff=0.02),
    ) as slow:
        with pytest.raises(HttpError) as info:
            slow.upsert_leads([lead(1)])
    assert info.value.attempts == 2


def test_changed_leads_pages_with_a_keyset_on_updated_at_and_id(client):
    client.upsert_leads([lead(i) for i in range(1, 6)])  # five rows, one instant
    first = client.changed_leads(None, limit=2)
    assert [r["id"] for r in first] == [1, 2]
    after = (first[-1]["updated_at"], first[-1]["id"])
    assert [r["id"] for r in client.changed_leads(after, limit=10)] == [3, 4, 5]


def test_row_count_reads_the_exact_total_and_says_unknown_without_it(client, sim):
    assert client.row_count() == 0
    client.upsert_leads([lead(i) for i in range(1, 8)])
    assert client.row_count() == 7
    # a proxy that strips Content-Range: the count is unknown, not 0
    sim.paging_headers = False
    assert client.row_count() is None
