"""The Tiny parser on the shapes the contract documents (a unit of parsing: no network)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from sync_pipelines.tiny.parse import ParseError, list_fingerprint, order_row

LIST_ITEM = {
    "id": 900001, "situacao": "6", "data": "2024-03-05", "dataPrevista": "0000-00-00 00:00:00",
    "valor": None, "numeroOrdemServico": "1201",
    "cliente": {"id": 5001, "nome": "Ana Lima", "codigo": "77", "tipoPessoa": "F", "cpfCnpj": "",
                "celular": "(41) 98888-0000", "email": "ana@example.com",
                "endereco": {"municipio": "Curitiba", "uf": "PR"}},
    "marcadores": [{"descricao": "balcao"}],
}  # fmt: skip
DETAIL = {
    "id": 900001, "situacao": "3", "data": "2024-03-05", "dataPrevista": "2024-03-07 00:00:00",
    "dataConclusao": "2024-03-08", "numeroOrdemServico": "1201",
    "totalServicos": "110", "totalPecas": "390", "totalOrdemServico": "500", "desconto": "0,00",
    "equipamento": "Notebook X", "tecnico": "Luana",
    "categoria": {"id": 84554620, "descricao": "Reparo"}, "formaPagamento": {"id": 1, "nome": ""},
    "vendedor": None, "contato": {"id": 5001, "nome": "Ana Lima", "endereco": {}},
}  # fmt: skip


def test_contract_example_maps_to_a_row():
    row = order_row(LIST_ITEM, DETAIL)
    assert row["id"] == 900001 and row["situacao"] == 3
    assert row["data_emissao"] == dt.date(2024, 3, 5)
    assert row["data_prevista"] == dt.datetime(2024, 3, 7)
    assert row["data_conclusao_api"] == dt.date(2024, 3, 8)
    assert row["total_ordem_servico"] == Decimal("500") and row["desconto"] == Decimal("0.00")
    assert row["categoria"] == "Reparo"
    # the detail's `contato` has no address: the list's `cliente` fills it in
    assert (row["cliente_municipio"], row["cliente_uf"]) == ("Curitiba", "PR")
    assert row["cliente_celular"] == "(41) 98888-0000"
    assert row["raw"] == DETAIL and row["raw_list"] == LIST_ITEM


@pytest.mark.parametrize("empty", ["0000-00-00", "0000-00-00 00:00:00", "", None])
def test_zero_and_empty_dates_are_null(empty):
    row = order_row(LIST_ITEM, {**DETAIL, "dataPrevista": empty, "dataConclusao": empty})
    assert row["data_prevista"] is None and row["data_conclusao_api"] is None


def test_percentage_discount_and_comma_decimal():
    assert order_row(LIST_ITEM, {**DETAIL, "desconto": "10%"})["desconto_percentual"] == Decimal(
        "10"
    )
    assert order_row(LIST_ITEM, {**DETAIL, "desconto": "12,50"})["desconto"] == Decimal("12.50")


def test_old_sparse_shape_is_accepted():
    old_item = {"id": 100, "situacao": "3", "data": "2014-02-10", "numeroOrdemServico": "7"}
    old_detail = {"id": 100, "situacao": "3", "data": "2014-02-10", "totalOrdemServico": "80.5"}
    row = order_row(old_item, old_detail)
    assert row["situacao"] == 3 and row["total_ordem_servico"] == Decimal("80.5")
    assert row["cliente_nome"] is None and row["categoria"] is None and row["data_prevista"] is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("data", "31/02/2019"),
        ("totalOrdemServico", "abc"),
        ("situacao", "3 - Finalizada"),
        ("desconto", "x%"),
    ],
)
def test_values_that_are_present_but_wrong_raise_naming_the_field(field, value):
    with pytest.raises(ParseError) as err:
        order_row(LIST_ITEM, {**DETAIL, field: value})
    assert err.value.field in (field, "desconto")
    assert "900001" in str(err.value)


def test_fingerprint_changes_with_the_list_item_only():
    assert list_fingerprint(LIST_ITEM) == list_fingerprint(dict(reversed(list(LIST_ITEM.items()))))
    assert list_fingerprint(LIST_ITEM) != list_fingerprint({**LIST_ITEM, "situacao": "3"})
