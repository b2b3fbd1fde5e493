"""The HubSoft client against the HubSoft simulator: tokens, envelopes, lookups, health."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from sync_pipelines.hubsoft.client import (
    HubSoftAuthError,
    HubSoftClient,
    HubSoftConfigError,
    HubSoftRejected,
    HubSoftSettings,
    HubSoftUnavailable,
    HubSoftUncertain,
    hubsoft_enabled,
)
from sync_pipelines.sandbox.hubsoft_sim import SANDBOX_PASSWORD

from .conftest import FAST_RETRY, make_client, settings_for


def ticket_payload(sim, **overrides):
    client = sim.clients[0]
    return {
        "id_cliente_servico": client.service_ids[0],
        "descricao": "Sem internet desde ontem",
        "nome": client.nome_razaosocial,
        "telefone": client.telefone,
        **overrides,
    }


def test_open_ticket_then_find_it_by_protocol_and_by_client(sim, client):
    ticket = client.open_ticket(ticket_payload(sim, parametros={"protocolo_local": "LOC000001"}))
    assert len(ticket["protocolo"]) == 20
    found = client.ticket_by_protocol(ticket["protocolo"])
    assert found["id_atendimento"] == ticket["id_atendimento"]
    assert found["parametros"] == {"protocolo_local": "LOC000001"}
    mine = client.tickets_of_client(sim.clients[0].cpf_cnpj, data_inicio=dt.date.today())
    assert [t["id_atendimento"] for t in mine] == [ticket["id_atendimento"]]


def test_http_200_with_status_error_is_a_rejection_with_the_reasons(sim, client):
    with pytest.raises(HubSoftRejected) as error:
        client.open_ticket(ticket_payload(sim, id_cliente_servico=999999))
    assert "não existe" in " ".join(error.value.errors)
    assert sim.count("/atendimento$", "POST") == 1  # never resent


def test_suscess_spelling_is_accepted_as_success(sim, client):
    ticket = client.open_ticket(ticket_payload(sim))
    assert client.add_message(ticket["id_atendimento"], "contexto")["status"] == "suscess"
    assert sim.tickets[ticket["id_atendimento"]].mensagens[0]["mensagem"] == "contexto"


def test_revoked_token_is_renewed_once_and_the_call_resent(sim, client):
    client.statuses()
    sim.revoke_tokens()
    assert [s["prefixo"] for s in client.statuses()][0] == "aguardando_analise"
    assert client.token_grants == 2


def test_token_is_renewed_after_a_day(sim):
    now = [dt.datetime(2025, 3, 1, 8, tzinfo=dt.UTC)]
    client = make_client(sim, clock=lambda: now[0])
    client.ticket_types()
    client.ticket_types()
    now[0] += dt.timedelta(days=1, minutes=1)
    client.ticket_types()
    assert client.token_grants == 2


def test_bad_password_is_an_auth_error_without_the_password(sim, caplog):
    client = HubSoftClient(settings_for(sim, password="wrong-password-123"), retry=FAST_RETRY)
    with pytest.raises(HubSoftAuthError) as error:
        client.statuses()
    assert "wrong-password-123" not in str(error.value) + caplog.text


def test_lost_create_reply_is_uncertain_and_the_ticket_exists_once(sim, client):
    sim.set_faults(drop_after_commit={"count": 1, "path": "atendimento$", "method": "POST"})
    with pytest.raises(HubSoftUncertain):
        client.open_ticket(ticket_payload(sim, descricao="[LOC000777] sem sinal"))
    assert len(sim.tickets_with("LOC000777")) == 1
    assert sim.count("/atendimento$", "POST") == 1


def test_closed_tickets_are_listed_because_apenas_pendente_is_nao(sim, client):
    ticket = client.open_ticket(ticket_payload(sim))
    sim.set_ticket_status(ticket["id_atendimento"], "resolvido")
    found = client.ticket_by_protocol(ticket["protocolo"])
    assert (found["status"], found["status_fechamento"]) == ("Resolvido", "concluido")


def test_paged_list_walks_every_page_from_zero(sim, client):
    for n in range(7):
        client.open_ticket(ticket_payload(sim, descricao=f"chamado {n}"))
    ids = [t["id_atendimento"] for t in client.iter_tickets(page_size=3)]
    assert sorted(ids) == sorted(sim.tickets) and len(ids) == len(set(ids)) == 13
    pages = [e for e in sim.requests_log() if e["path"].endswith("/atendimento/todos")]
    assert [e["query"]["pagina"] for e in pages] == ["0", "1", "2", "3", "4"]


def test_client_lookup_by_cpf_returns_services(sim, client):
    target = sim.clients[1]
    found = client.find_clients_by_cpf(target.cpf_cnpj)
    assert [s["id_cliente_servico"] for s in found[0]["servicos"]] == target.service_ids
    assert client.find_clients_by_cpf("00000000000") == []


@pytest.mark.parametrize("mode", ["refuse", "503"])
def test_health_check_reports_offline_during_an_outage_and_online_after(sim, mode):
    client = make_client(sim, retry=FAST_RETRY)
    assert client.health_check().online
    sim.set_faults(outage=mode)
    down = client.health_check()
    assert not down.online and down.error
    assert not client.probe().online
    sim.set_faults(outage=None)
    up = client.health_check()
    assert up.online and up.latency_ms is not None and up.latency_ms >= 0
    assert client.probe().online


def test_health_check_times_out_instead_of_hanging(sim):
    sim.set_faults(outage={"mode": "timeout", "seconds": 5})
    client = make_client(sim, timeout=(0.5, 0.5), retry=FAST_RETRY)
    check = client.health_check()
    assert not check.online and "HubSoftUnavailable" in check.error


def test_outage_on_reads_is_unavailable(sim, client):
    sim.set_faults(outage="503")
    with pytest.raises(HubSoftUnavailable):
        client.ticket_types()


def test_settings_name_every_missing_variable_and_enabled_flag():
    with pytest.raises(HubSoftConfigError) as error:
        HubSoftSettings.from_variables({"HUBSOFT_API_URL": "http://x"})
    assert "HUBSOFT_PASSWORD" in str(error.value) and "HUBSOFT_API_URL" not in str(error.value)
    assert hubsoft_enabled(None) is True
    assert hubsoft_enabled("false") is False


def test_no_token_password_or_cpf_in_logs(sim, client, caplog):
    caplog.set_level(logging.DEBUG)
    sim.set_faults(fail_next={"count": 2, "status": 503})
    cpf = sim.clients[2].cpf_cnpj
    client.find_clients_by_cpf(cpf)
    assert "retry" in caplog.text
    for secret in [client._token, SANDBOX_PASSWORD, cpf]:
        assert secret not in caplog.text
