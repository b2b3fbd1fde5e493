"""Tiny v3 service-order payloads → rows of ``ordens_servico``.

Survives every trap the contract lists: ``situacao`` as a string digit, ``cliente`` in the
list vs ``contato`` in the detail, "no date" spelled ``0000-00-00`` / ``0000-00-00 00:00:00``
/ ``""``, money as dot-decimal strings, ``desconto`` with a comma or as a percentage, and the
sparser 2014–2016 shape with keys missing. Anything that is present but not understood
raises ``ParseError`` naming the field — never a silent NULL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

# The version of the rules below. Bump it in the same commit as any change to what
# ``order_row`` derives from a payload (a new field, a fixed money or date rule): every row
# records the version that derived its stored columns (``ordens_servico.parser_version``), and
# the ``tiny/reparse`` job (reparse.py) re-derives the stored orders from their raw JSON with
# the new rules, month by month and with no API call, stamping the new number on each row
# whose values change. A change that derives nothing different (a refactor) needs no bump.
PARSER_VERSION = 1

FINAL_STATUSES = frozenset({3, 4, 7})
OPEN_STATUSES = (0, 1, 2, 5, 6)
ALL_STATUSES = tuple(range(8))
_NO_DATE = {"", "0000-00-00", "0000-00-00 00:00:00", "00/00/0000"}


class ParseError(ValueError):
    """A field of an order could not be understood; ``field`` names it."""

    def __init__(self, order_id: Any, field: str, problem: str):
        self.order_id = order_id
        self.field = field
        super().__init__(f"order {order_id}: field '{field}' {problem}")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def parse_situacao(order_id: Any, value: Any) -> int:
    text = _text(value)
    if text is None or not text.isdigit():
        raise ParseError(order_id, "situacao", f"is not a status digit ({value!r})")
    return int(text)


def parse_date(order_id: Any, field: str, value: Any) -> dt.date | None:
    text = _text(value)
    if text is None or text in _NO_DATE:
        return None
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        raise ParseError(order_id, field, f"is not a YYYY-MM-DD date ({text!r})") from None


def parse_datetime(order_id: Any, field: str, value: Any) -> dt.datetime | None:
    text = _text(value)
    if text is None or text in _NO_DATE:
        return None
    try:
        return (
            dt.datetime.fromisoformat(text)
            if len(text) > 10
            else dt.datetime.fromisoformat(text + "T00:00:00")
        )
    except ValueError:
        raise ParseError(order_id, field, f"is not a date/time ({text!r})") from None


def parse_money(order_id: Any, field: str, value: Any) -> Decimal | None:
    """Totals: ``"1234.5"`` (dot decimal). A comma decimal is accepted too (seen in desconto)."""
    text = _text(value)
    if text is None:
        return None
    normalized = text.replace(",", ".") if "," in text and "." not in text else text
    try:
        number = Decimal(normalized)
    except InvalidOperation:
        raise ParseError(order_id, field, f"is not an amount ({text!r})") from None
    if not number.is_finite():
        raise ParseError(order_id, field, f"is not an amount ({text!r})")
    return number


def parse_discount(order_id: Any, value: Any) -> tuple[Decimal | None, Decimal | None]:
    """``"0,00"`` → (0.00, None); ``"10%"`` → (None, 10)."""
    text = _text(value)
    if text is None:
        return None, None
    if text.endswith("%"):
        return None, parse_money(order_id, "desconto", text[:-1].strip())
    return parse_money(order_id, "desconto", text), None


def list_fingerprint(item: Mapping[str, Any]) -> str:
    """A stable hash of everything the list says about an order: if it changes, refetch."""
    return hashlib.sha1(
        json.dumps(item, sort_keys=True, ensure_ascii=False, default=str).encode()
    ).hexdigest()


def order_row(item: Mapping[str, Any], detail: Mapping[str, Any]) -> dict[str, Any]:
    """One ``ordens_servico`` row from a list item and the order's detail."""
    order_id = detail.get("id", item.get("id"))
    if order_id in (None, ""):
        raise ParseError(None, "id", "is missing")
    try:
        order_id = int(order_id)
    except (TypeError, ValueError):
        raise ParseError(order_id, "id", "is not an integer") from None
    # The detail names the customer `contato`, the list `cliente`; older orders may lack both.
    customer = detail.get("contato") or {}
    listed = item.get("cliente") or {}
    if not isinstance(customer, Mapping) or not isinstance(listed, Mapping):
        raise ParseError(order_id, "contato", "is not an object")
    address = customer.get("endereco") or listed.get("endereco") or {}
    if not isinstance(address, Mapping):
        address = {}
    category = detail.get("categoria")
    discount, discount_pct = parse_discount(order_id, detail.get("desconto"))
    customer_id = customer.get("id", listed.get("id"))
    return {
        "id": order_id,
        "numero": _text(detail.get("numeroOrdemServico", item.get("numeroOrdemServico"))),
        "situacao": parse_situacao(order_id, detail.get("situacao", item.get("situacao"))),
        "data_emissao": parse_date(order_id, "data", detail.get("data", item.get("data"))),
        "data_prevista": parse_datetime(
            order_id, "dataPrevista", detail.get("dataPrevista", item.get("dataPrevista"))
        ),
        "data_conclusao_api": parse_date(order_id, "dataConclusao", detail.get("dataConclusao")),
        "cliente_id": int(customer_id)
        if _text(customer_id) and str(customer_id).isdigit()
        else None,
        "cliente_nome": _text(customer.get("nome") or listed.get("nome")),
        "cliente_codigo": _text(customer.get("codigo") or listed.get("codigo")),
        "cliente_tipo_pessoa": _text(customer.get("tipoPessoa") or listed.get("tipoPessoa")),
        "cliente_cpf_cnpj": _text(customer.get("cpfCnpj") or listed.get("cpfCnpj")),
        "cliente_email": _text(customer.get("email") or listed.get("email")),
        "cliente_celular": _text(customer.get("celular") or listed.get("celular")),
        "cliente_municipio": _text(address.get("municipio")),
        "cliente_uf": _text(address.get("uf")),
        "total_servicos": parse_money(order_id, "totalServicos", detail.get("totalServicos")),
        "total_pecas": parse_money(order_id, "totalPecas", detail.get("totalPecas")),
        "total_ordem_servico": parse_money(
            order_id, "totalOrdemServico", detail.get("totalOrdemServico")
        ),
        "desconto": discount,
        "desconto_percentual": discount_pct,
        "equipamento": _text(detail.get("equipamento")),
        "tecnico": _text(detail.get("tecnico")),
        "categoria": _text(category.get("descricao"))
        if isinstance(category, Mapping)
        else _text(category),
        "list_hash": list_fingerprint(item),
        "parser_version": PARSER_VERSION,
        "raw": dict(detail),
        "raw_list": dict(item),
    }
