"""Simulator of Tiny ERP API v3 (service orders) and its OAuth server, from contracts/tiny.md.

Paths are the real ones, relative to the simulator's base URL:

- ``GET  /public-api/v3/ordem-servico``              list, offset paging
- ``GET  /public-api/v3/ordem-servico/{id}``         detail
- ``POST /realms/tiny/protocol/openid-connect/token`` Keycloak token endpoint (form-encoded)
- ``/__admin/tiny/...``                               test and demo controls (see ``TinySimulator``)

The seeded account. Deterministic from the seed (and ``today``): ``n_orders`` service orders
from January of ``start_year`` to ``today``, more of them in recent months; old orders are
mostly final (3/4/7) with a few left open forever, recent ones spread over every status. Every
trap of the contract is in the data: ``situacao`` as a string digit, ``cliente`` in the list vs
``contato`` in the detail, "no date" as ``0000-00-00`` / ``0000-00-00 00:00:00`` / ``""``,
``dataConclusao`` often empty on finished orders, dot-decimal money strings, ``desconto`` as
``"12,50"`` or ``"10%"``, ``valor`` null in lists, the sparser 2014-2016 shape (no
``marcadores``, ``categoria``, ``dataPrevista``..., a ``cliente`` without ``endereco``), a few
back-dated orders (id order differs from emission-date order), and well-formed fake personal
data (names, CPF/CNPJ with valid check digits, phones, e-mails) that a sync must never log.
``broken_ids`` lists a handful of orders whose DETAIL is malformed (``"31/02/2019"`` as a date,
``"abc"`` as a total, ...): their list item is fine, so they reach a sync's failures table.

Choices where the contract is unsure (each a constructor knob, also settable at runtime with
``configure`` / ``POST /__admin/tiny/config``):

- ``limit`` above ``page_limit_max`` (100) is capped (``limit_over_max="cap"``) or refused
  with 400 (``"reject"``); date filters are inclusive (``date_filters_inclusive``); without
  ``orderBy`` the order is ``default_order`` ("desc": a client must say what it wants).
  Either way the order is (``data``, ``id``), stable, so offset paging is deterministic while
  nothing changes — and an order whose status changes moves between status-filtered pages.
- Rate limits are per account (every token, every client) and apply to the API paths only,
  not to the token endpoint nor ``/__admin``. Two buckets, checked in this order:
  * per-minute: a fixed window of ``window_s`` seconds (60) holding ``per_minute_limit``
    requests; the window opens with the first request after the previous one closed;
  * burst: at most ``burst_per_second`` requests in ANY ``burst_window_s`` (1 s) interval
    (a sliding log, the strictest reading of "4 per second").
  Every API reply (200, 4xx, 429) carries ``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset``
  describing the PER-MINUTE bucket (the one that differs by plan); Reset is whole seconds
  (rounded up) until that window closes. So a burst 429 shows ``Remaining > 0``. Every
  request that reaches the API counts, whatever its status (401 and 404 included), except
  the ones refused with 429. A 429 has an empty body and no ``Retry-After``.
- Tokens are JWT-shaped and HMAC-signed with a key derived from the seed and the client
  credentials, so a restarted simulator (same seed) still accepts the pairs it issued, as a
  real Keycloak would after a restart. Each renewal rotates the refresh token when
  ``rotate_refresh_token`` (the old one then gives ``invalid_grant``; of two racing renewals
  the second fails); without rotation a new refresh token is returned and the old one stays
  valid (Keycloak's default). Wrong client credentials: 401 ``unauthorized_client``.
  An expired, revoked or unknown access token: 401 ``{"mensagem": ...}`` on API calls.
  ``access_token_ttl_s`` gives short-lived tokens (``expires_in`` follows it).
- A list reply without ``paginacao`` (``omit_paginacao``): the contract always shows it, but
  a client must not read its absence as "this was the last page".

Changes while a client pages. ``change_status_when_listed(id, situacao)`` changes an order's
status once a list reply has shown it, when the next list request arrives, as a Tiny user
finishing or cancelling an order between two page requests would: the client has read (and
stored) the old status, and the status-filtered listing it is paging has shifted by one.

Speed. The sandbox machine has two cores and a sync may run several workers at once, so a
request never scans all orders: orders are indexed by month, both overall and per status,
each index a list sorted by (data, id). A listing bisects the first and last months of the
date range and walks whole months in between: O(months + offset + limit), counted in
``stats()["list_entries_walked"]`` (a test bounds it; ``bench/bench_tiny_sim.py`` prints the
requests per second).
"""

from __future__ import annotations

import base64
import bisect
import calendar
import datetime as dt
import hashlib
import hmac
import json
import math
import secrets
import threading
import time
import unicodedata
from collections import Counter, deque
from collections.abc import Callable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

from ..lib.crypto import CREDENTIALS_KEY_VAR
from .harness import Request, Response, Simulator, route
from .simulators import SandboxPart

API_PREFIX = "/public-api/v3"
TOKEN_PATH = "/realms/tiny/protocol/openid-connect/token"
SAO_PAULO = ZoneInfo("America/Sao_Paulo")

FINAL_STATUSES = ("3", "4", "7")
OPEN_STATUSES = ("0", "1", "2", "5", "6")
ALL_STATUSES = tuple(str(s) for s in range(8))
LEGACY_LAST_YEAR = 2016  # orders emitted up to this year come in the older, sparser shape

SANDBOX_CLIENT_ID = "sync-pipelines-sandbox"
SANDBOX_CLIENT_SECRET = "sandbox-tiny-client-secret"
# A fixed Fernet key, for the sandbox only (the value detran_data.SANDBOX_KEY also uses).
SANDBOX_CREDENTIALS_KEY = "c2FuZGJveC1kZXRyYW4ta2V5LW5vdC1mb3ItcmVhbCE="

# Knobs that may change while the simulator runs (``configure``).
RUNTIME_KNOBS = (
    "per_minute_limit",
    "burst_per_second",
    "window_s",
    "burst_window_s",
    "access_token_ttl_s",
    "refresh_token_ttl_s",
    "rotate_refresh_token",
    "page_limit_max",
    "limit_over_max",
    "date_filters_inclusive",
    "default_order",
    "rate_limit_header_prefix",
    "omit_paginacao",
)

# ---- seed data pools ------------------------------------------------------------------
# fmt: off
FIRST_NAMES = (
    "Ana", "João", "Maria", "José", "Antônio", "Francisca", "Carlos", "Paulo", "Luana", "Lucas",
    "Mariana", "Gabriel", "Juliana", "Rafael", "Fernanda", "Marcos", "Patrícia", "Luís",
    "Aline", "Thiago", "Camila", "Bruno", "Letícia", "Rodrigo", "Conceição", "Sebastião",
    "Márcia", "André", "Beatriz", "Felipe", "Vitória", "Gustavo", "Íris", "Otávio", "Débora",
    "Raimundo", "Cláudia", "Fábio", "Simone", "Júlio",
)
SURNAMES = (
    "Silva", "Santos", "Oliveira", "Souza", "Lima", "Pereira", "Ferreira", "Costa", "Rodrigues",
    "Almeida", "Nascimento", "Araújo", "Carvalho", "Gomes", "Martins", "Rocha", "Ribeiro",
    "Alves", "Monteiro", "Mendes", "Barros", "Freitas", "Barbosa", "Pinto", "Moura",
    "Cavalcanti", "Dias", "Castro", "Campos", "Cardoso", "Conceição", "Teixeira", "Vieira",
    "Brandão", "Magalhães", "Guimarães", "Assunção", "Falcão",
)
COMPANY_WORDS = (
    "Auto Center", "Mercado", "Padaria", "Oficina", "Clínica", "Escritório", "Distribuidora",
    "Farmácia", "Papelaria", "Transportes", "Construtora", "Restaurante",
)
COMPANY_SUFFIXES = (
    "Ltda", "ME", "EIRELI", "S/A", "Ltda ME",
)
CITIES = (  # municipio, uf, DDD
    ("São Paulo", "SP", 11), ("Campinas", "SP", 19), ("Santos", "SP", 13),
    ("Ribeirão Preto", "SP", 16), ("Curitiba", "PR", 41), ("São José dos Pinhais", "PR", 41),
    ("Londrina", "PR", 43), ("Maringá", "PR", 44), ("Rio de Janeiro", "RJ", 21),
    ("Niterói", "RJ", 21), ("Belo Horizonte", "MG", 31), ("Uberlândia", "MG", 34),
    ("Porto Alegre", "RS", 51), ("Florianópolis", "SC", 48), ("Joinville", "SC", 47),
    ("Salvador", "BA", 71), ("Recife", "PE", 81), ("Fortaleza", "CE", 85),
    ("Goiânia", "GO", 62), ("Brasília", "DF", 61),
)
STREETS = (
    "Rua XV de Novembro", "Avenida Brasil", "Rua das Flores", "Rua São João",
    "Avenida Paulista", "Rua Marechal Deodoro", "Rua Sete de Setembro",
    "Avenida Getúlio Vargas", "Rua Dom Pedro II", "Travessa da Paz",
)
NEIGHBOURHOODS = (
    "Centro", "Batel", "Jardim América", "Vila Nova", "Boa Vista", "Água Verde",
)
EMAIL_DOMAINS = (
    "gmail.com", "hotmail.com", "yahoo.com.br", "outlook.com", "uol.com.br", "bol.com.br",
)
EQUIPMENT = (
    "Notebook Dell Inspiron 15", "Notebook Lenovo IdeaPad 3", "MacBook Air M1", "iPhone 11",
    "Samsung Galaxy A32", "Motorola Moto G8", "Impressora HP LaserJet P1102",
    "Impressora Epson L3150", 'Smart TV Samsung 50"', 'Monitor LG 24"', "PlayStation 4",
    "Tablet Samsung Tab A", "Desktop montado i5", "Nobreak SMS 1200VA", "Roteador TP-Link",
    "Geladeira Brastemp Frost Free", "Máquina de lavar Electrolux 12kg",
    "Micro-ondas Panasonic",
)
PROBLEMS = (
    "Não liga", "Tela quebrada", "Superaquecendo e desligando sozinho", "Não carrega a bateria",
    "Barulho estranho ao ligar", "Sem imagem, só áudio", "Teclado com teclas falhando",
    "Atolando papel", "Reiniciando sem parar", "Caiu na água", "Lento, travando muito",
    "Não conecta no Wi-Fi", "Vazando água", "Não gela",
)
SERVICE_NOTES = (
    "Troca de tela", "Limpeza interna e troca de pasta térmica",
    "Substituição do conector de carga", "Formatação e reinstalação do sistema",
    "Troca da placa de fonte", "Sem conserto viável", "Troca do rolete de tração",
    "Reparo na placa principal", "",
)
NOTES = (
    "Cliente pede urgência", "Retirar após as 18h", "Deixou carregador",
    "Orçamento aprovado por telefone", "Ligar antes de iniciar", "Garantia de 90 dias", "", "",
    "",
)
CATEGORIES = (
    "Reparo", "Manutenção", "Garantia", "Orçamento", "Instalação", "Assistência técnica",
)
PAYMENT_METHODS = (
    (1, ''), (2, 'Dinheiro'), (3, 'Cartão de crédito'), (4, 'Cartão de débito'), (5, 'Pix'),
    (6, 'Boleto'),
)
MARKERS = (
    "balcao", "urgente", "garantia", "retorno", "delivery", "empresa", "vip",
)
# fmt: on


# ---- helpers ----------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def _cpf(rng) -> str:
    while True:
        digits = [rng.randint(0, 9) for _ in range(9)]
        if len(set(digits)) > 1:
            break
    for size in (9, 10):
        total = sum(d * (size + 1 - i) for i, d in enumerate(digits[:size]))
        digits.append(total * 10 % 11 % 10)
    s = "".join(map(str, digits))
    return f"{s[:3]}.{s[3:6]}.{s[6:9]}-{s[9:]}"


def _cnpj(rng) -> str:
    digits = [rng.randint(0, 9) for _ in range(8)] + [0, 0, 0, 1]
    weights = [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]
    for w in (weights, [6, *weights]):
        rest = sum(d * k for d, k in zip(digits, w, strict=False)) % 11
        digits.append(0 if rest < 2 else 11 - rest)
    s = "".join(map(str, digits))
    return f"{s[:2]}.{s[2:5]}.{s[5:8]}/{s[8:12]}-{s[12:]}"


def _money(cents: int, legacy: bool) -> str:
    """Dot-decimal money string: ``"1234.5"``, ``"110"`` (older orders: ``"1234.50"``)."""
    text = f"{cents // 100}.{cents % 100:02d}"
    if legacy:
        return text
    return text.rstrip("0").rstrip(".") if "." in text else text


def _comma(cents: int) -> str:
    return f"{cents // 100},{cents % 100:02d}"


def _month_key(day: str) -> int:
    return int(day[:4]) * 12 + int(day[5:7]) - 1


def _valid_day(text: str) -> bool:
    if len(text) != 10:
        return False
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


class _FixedWindow:
    """``limit`` requests per window of ``length`` seconds, opened by the first request after
    the previous window closed."""

    def __init__(self, limit: int, length: float) -> None:
        self.limit = limit
        self.length = length
        self.start = -math.inf
        self.count = 0

    def roll(self, now: float) -> None:
        if now >= self.start + self.length:
            self.start = now
            self.count = 0

    def remaining(self) -> int:
        return max(0, self.limit - self.count)

    def reset_in(self, now: float) -> int:
        if now >= self.start + self.length:
            return math.ceil(self.length)
        return max(1, math.ceil(self.start + self.length - now))


class _SlidingLog:
    """At most ``limit`` requests in any interval of ``length`` seconds."""

    def __init__(self, limit: int, length: float) -> None:
        self.limit = limit
        self.length = length
        self.stamps: deque[float] = deque()

    def full(self, now: float) -> bool:
        while self.stamps and self.stamps[0] <= now - self.length:
            self.stamps.popleft()
        return len(self.stamps) >= self.limit

    def add(self, now: float) -> None:
        self.stamps.append(now)


# ---- the simulator ----------------------------------------------------------------------


class TinySimulator(Simulator):
    """Tiny v3 service orders + the Keycloak token endpoint, with a seeded account.

    Python controls (each also over HTTP under ``/__admin/tiny``):

    =====================================  =================================================
    ``set_status(id, situacao, data_conc)``  ``POST /__admin/tiny/orders/{id}/status``
                                             ``{"situacao": "3", "dataConclusao": "..."}``
    ``add_orders(n, month=, situacao=)``     ``POST /__admin/tiny/orders``
                                             ``{"count": 5, "month": "2024-05"}``
    ``churn(n)``  (n open orders move on)    ``POST /__admin/tiny/churn {"count": 10}``
    ``change_status_when_listed(id, s)``     ``POST /__admin/tiny/orders/{id}/change-when-listed``
    ``edit(id, dataPrevista=...)``           (Python only)
    ``snapshot()`` → {id: situacao}          ``GET /__admin/tiny/orders?fields=id,situacao``
    ``detail(id)`` / ``list_item(id)``       ``GET /__admin/tiny/orders/{id}``
    ``stats()``                              ``GET /__admin/tiny/stats``
    ``issue_initial_tokens()``               ``POST /__admin/tiny/tokens``
    ``issue_authorization_code()``           ``POST /__admin/tiny/authorization-code``
    ``expire_access_tokens()``               ``POST /__admin/tiny/tokens/expire-access``
    ``revoke_refresh_tokens()``              ``POST /__admin/tiny/tokens/revoke-refresh``
    ``configure(**knobs)``                   ``GET|POST /__admin/tiny/config``
    ``broken_ids``                           ``GET /__admin/tiny/broken``
    =====================================  =================================================

    ``reset()`` (``POST /__admin/reset``) clears faults, the request log, the counters and
    the rate-limit windows; orders and tokens stay.
    """

    name = "tiny"

    def __init__(
        self,
        seed: int = 0,
        n_orders: int = 6000,
        start_year: int = 2014,
        today: dt.date | None = None,
        per_minute_limit: int = 120,
        burst_per_second: int = 4,
        access_token_ttl_s: int = 14400,
        rotate_refresh_token: bool = True,
        client_id: str = SANDBOX_CLIENT_ID,
        client_secret: str = SANDBOX_CLIENT_SECRET,
        page_limit_max: int = 100,
        *,
        window_s: float = 60.0,
        burst_window_s: float = 1.0,
        refresh_token_ttl_s: int = 86400,
        n_broken: int = 5,
        limit_over_max: str = "cap",
        date_filters_inclusive: bool = True,
        default_order: str = "desc",
        rate_limit_header_prefix: str = "X-RateLimit",
        omit_paginacao: bool = False,
        faults: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(seed=seed, faults=faults)
        self.today = today or dt.datetime.now(SAO_PAULO).date()
        self.start_year = start_year
        self.client_id = client_id
        self.client_secret = client_secret
        self.per_minute_limit = per_minute_limit
        self.burst_per_second = burst_per_second
        self.window_s = window_s
        self.burst_window_s = burst_window_s
        self.access_token_ttl_s = access_token_ttl_s
        self.refresh_token_ttl_s = refresh_token_ttl_s
        self.rotate_refresh_token = rotate_refresh_token
        self.page_limit_max = page_limit_max
        self.limit_over_max = limit_over_max
        self.date_filters_inclusive = date_filters_inclusive
        self.default_order = default_order
        self.rate_limit_header_prefix = rate_limit_header_prefix
        self.omit_paginacao = omit_paginacao
        # order id -> [situacao, dataConclusao, armed]: armed by a reply that lists the order,
        # applied when the next list request arrives
        self._change_when_listed: dict[int, list[Any]] = {}

        # Orders: the detail payload is the record; the list item is rendered from it.
        self._orders: dict[int, dict[str, Any]] = {}
        self._contact_of: dict[int, dict[str, Any]] = {}  # order id -> contact record
        self._legacy: set[int] = set()
        self._valor_in_list: set[int] = set()
        self._by_numero: dict[str, list[int]] = {}
        self._months: list[int] = []  # sorted month keys holding at least one order
        self._index_all: dict[int, list[tuple[str, int]]] = {}
        self._index_status: dict[str, dict[int, list[tuple[str, int]]]] = {
            s: {} for s in ALL_STATUSES
        }
        self._broken: dict[int, dict[str, str]] = {}
        self._contacts: list[dict[str, Any]] = []
        self._next_numero = 1
        self._next_id = 0
        self._next_contact_id = 5000000

        # OAuth state. The signing key makes tokens survive a restart with the same seed.
        self._key = hashlib.sha256(f"tiny-sim:{seed}:{client_id}:{client_secret}".encode()).digest()
        self._used_refresh: set[str] = set()
        self._codes: dict[str, tuple[float, str | None]] = {}
        self._access_not_before = 0.0
        self._refresh_not_before = 0.0
        self._token_lock = threading.Lock()

        self._stats: Counter[str] = Counter()
        self._minute = _FixedWindow(per_minute_limit, window_s)
        self._burst = _SlidingLog(burst_per_second, burst_window_s)

        self._generate(n_orders, n_broken)

    # ---- seeded account ---------------------------------------------------------------

    def _make_contact(self) -> dict[str, Any]:
        rng = self.rng
        municipio, uf, ddd = rng.choice(CITIES)
        company = rng.random() < 0.18
        if company:
            nome = (
                f"{rng.choice(COMPANY_WORDS)} {rng.choice(SURNAMES)} {rng.choice(COMPANY_SUFFIXES)}"
            )
            first, last = nome.split()[0], rng.choice(SURNAMES)
        else:
            first, last = rng.choice(FIRST_NAMES), rng.choice(SURNAMES)
            middle = f" {rng.choice(SURNAMES)}" if rng.random() < 0.5 else ""
            nome = f"{first}{middle} {last}"
        roll = rng.random()
        if roll < 0.15:
            cpf_cnpj = ""
        elif company:
            cpf_cnpj = _cnpj(rng)
        else:
            cpf_cnpj = _cpf(rng) if roll < 0.9 else _cpf(rng).replace(".", "").replace("-", "")
        email = ""
        if rng.random() < 0.7:
            user = f"{_ascii(first).lower()}.{_ascii(last).lower()}"
            if rng.random() < 0.5:
                user += str(rng.randint(1, 99))
            email = f"{user}@{rng.choice(EMAIL_DOMAINS)}"
        celular = ""
        if rng.random() < 0.85:
            celular = f"({ddd}) 9{rng.randint(6000, 9999)}-{rng.randint(0, 9999):04d}"
        telefone = ""
        if rng.random() < 0.3:
            telefone = f"({ddd}) {rng.randint(2000, 3999)}-{rng.randint(0, 9999):04d}"
        self._next_contact_id += rng.randint(1, 40)
        return {
            "id": self._next_contact_id,
            "nome": nome,
            "codigo": str(len(self._contacts) + 1) if rng.random() < 0.6 else "",
            "fantasia": "",
            "tipoPessoa": "J" if company else "F",
            "cpfCnpj": cpf_cnpj,
            "inscricaoEstadual": "",
            "rg": "",
            "telefone": telefone,
            "celular": celular,
            "email": email,
            "endereco": {
                "endereco": rng.choice(STREETS),
                "numero": str(rng.randint(1, 3999)),
                "complemento": rng.choice(("", "", "Apto 12", "Sala 3", "Fundos")),
                "bairro": rng.choice(NEIGHBOURHOODS),
                "municipio": municipio,
                "cep": f"{rng.randint(10000, 99999)}-{rng.randint(0, 999):03d}",
                "uf": uf,
                "pais": "",
            },
            "_empty_address_in_detail": rng.random() < 0.1,
        }

    def _month_weights(self) -> tuple[list[tuple[int, int]], list[float]]:
        months = []
        year, month = self.start_year, 1
        while (year, month) <= (self.today.year, self.today.month):
            months.append((year, month))
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        # The business grew: recent months have about four times the orders of the first.
        weights = [1.0 + 3.0 * i / max(1, len(months) - 1) for i in range(len(months))]
        return months, weights

    def _random_day(self, year: int, month: int) -> dt.date:
        last = calendar.monthrange(year, month)[1]
        if (year, month) == (self.today.year, self.today.month):
            last = self.today.day
        return dt.date(year, month, self.rng.randint(1, last))

    def _status_for(self, day: dt.date) -> str:
        rng = self.rng
        age = (self.today - day).days
        roll = rng.random()
        if age > 180:
            table = (("3", 0.75), ("7", 0.12), ("4", 0.08))
        elif age > 30:
            table = (("3", 0.55), ("7", 0.08), ("4", 0.07))
        else:
            table = (("3", 0.12), ("4", 0.04), ("7", 0.04))
        for status, share in table:
            if roll < share:
                return status
            roll -= share
        # Not final: older ones are the orders someone forgot to close.
        return rng.choices(OPEN_STATUSES, weights=(20, 15, 10, 15, 20))[0]

    def _conclusion(self, status: str, day: dt.date, legacy: bool) -> str:
        rng = self.rng
        if status not in FINAL_STATUSES:
            return rng.choice(("0000-00-00", "0000-00-00", ""))
        if status == "3" and rng.random() < 0.45:
            done = min(self.today, day + dt.timedelta(days=rng.randint(0, 20)))
            return done.isoformat()
        # Finished, yet the API gives no conclusion date: the common case for 4/7 too.
        return rng.choice(("", "0000-00-00")) if not legacy else "0000-00-00"

    def _make_order(self, order_id: int, day: dt.date, status: str | None = None) -> None:
        rng = self.rng
        legacy = day.year <= LEGACY_LAST_YEAR
        if status is None:
            status = self._status_for(day)
        if self._contacts and rng.random() < 0.35:
            contact = rng.choice(self._contacts)  # a returning customer
        else:
            contact = self._make_contact()
            self._contacts.append(contact)
        servicos = rng.randrange(0, 80000, 500)
        pecas = rng.choice((0, 0, rng.randrange(1000, 250000, 10)))
        gross = servicos + pecas
        roll = rng.random()
        if roll < 0.7 or gross == 0:
            discount_cents, desconto = 0, "0,00"
        elif roll < 0.85:
            discount_cents = min(gross, rng.randrange(500, 5001, 50))
            desconto = _comma(discount_cents)
        else:
            pct = rng.choice((5, 10, 15))
            discount_cents, desconto = gross * pct // 100, f"{pct}%"
        numero = str(self._next_numero)
        self._next_numero += 1
        detail: dict[str, Any] = {
            "id": order_id,
            "numeroOrdemServico": numero,
            "situacao": status,
            "data": day.isoformat(),
            "dataConclusao": self._conclusion(status, day, legacy),
            "totalServicos": _money(servicos, legacy),
            "totalPecas": _money(pecas, legacy),
            "totalOrdemServico": _money(gross - discount_cents, legacy),
            "desconto": desconto,
            "equipamento": rng.choice(EQUIPMENT),
            "descricaoProblema": rng.choice(PROBLEMS),
            "observacoes": rng.choice(NOTES),
            "tecnico": rng.choice(("", *FIRST_NAMES[:12])),
            "formaPagamento": dict(zip(("id", "nome"), rng.choice(PAYMENT_METHODS), strict=True)),
        }
        if legacy:
            # The older shape: fewer keys, and some of these missing order by order.
            for key in ("observacoes", "tecnico", "formaPagamento", "descricaoProblema"):
                if rng.random() < 0.3:
                    del detail[key]
            self._legacy.add(order_id)
        else:
            roll = rng.random()
            if roll < 0.4:
                prevista = "0000-00-00 00:00:00"
            elif roll < 0.47:
                prevista = ""
            else:
                when = day + dt.timedelta(days=rng.randint(0, 15))
                clock = (
                    "00:00:00"
                    if rng.random() < 0.7
                    else f"{rng.randint(8, 18):02d}:{rng.choice((0, 15, 30, 45)):02d}:00"
                )
                prevista = f"{when.isoformat()} {clock}"
            detail["dataPrevista"] = prevista
            detail["equipamentoSerie"] = (
                f"{rng.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}{rng.randint(10**7, 10**8 - 1)}"
                if rng.random() < 0.5
                else ""
            )
            detail["observacoesServico"] = rng.choice(SERVICE_NOTES)
            detail["observacoesInternas"] = rng.choice(NOTES)
            if rng.random() < 0.85:
                index = rng.randrange(len(CATEGORIES))
                detail["categoria"] = {"id": 84554620 + index, "descricao": CATEGORIES[index]}
            else:
                detail["categoria"] = {"id": 0, "descricao": ""}
            detail["vendedor"] = (
                None
                if rng.random() < 0.6
                else {"id": 7000 + rng.randint(1, 6), "nome": rng.choice(FIRST_NAMES)}
            )
            detail["marcadores"] = [
                {"descricao": m} for m in rng.sample(MARKERS, rng.choice((0, 0, 0, 1, 1, 2)))
            ]
        if rng.random() < 0.03:
            self._valor_in_list.add(order_id)
        self._orders[order_id] = detail
        self._contact_of[order_id] = contact
        self._by_numero.setdefault(numero, []).append(order_id)
        self._index_add(order_id)

    def _generate(self, n_orders: int, n_broken: int) -> None:
        rng = self.rng
        months, weights = self._month_weights()
        days = sorted(
            self._random_day(*m) for m in rng.choices(months, weights=weights, k=n_orders)
        )
        # Ids and numbers follow creation order; a few orders are back-dated a little, so the
        # (data, id) order is not the id order.
        start = dt.date(self.start_year, 1, 1)
        next_id = 700000000
        for day in days:
            next_id += rng.randint(1, 60)
            if rng.random() < 0.03:
                day = max(start, day - dt.timedelta(days=rng.randint(1, 10)))
            self._make_order(next_id, day)
        self._next_id = next_id
        self._ensure_every_status()
        self._pick_broken(n_broken)

    def _ensure_every_status(self) -> None:
        """Small accounts (tests) still hold every status among their recent orders."""
        present = {o["situacao"] for o in self._orders.values()}
        recent = sorted(self._orders, key=lambda i: (self._orders[i]["data"], i), reverse=True)
        spare = iter(i for i in recent if self._orders[i]["situacao"] in ("0", "3"))
        for status in ALL_STATUSES:
            if status not in present:
                order_id = next(spare, None)
                if order_id is None:
                    return
                # An order that is no longer final has no conclusion date.
                conclusion = None if status in FINAL_STATUSES else "0000-00-00"
                self._set_status_locked(order_id, status, conclusion)
                present = {o["situacao"] for o in self._orders.values()}

    def _pick_broken(self, n_broken: int) -> None:
        ids = sorted(self._orders)
        chosen = sorted(self.rng.sample(ids, min(n_broken, len(ids))))
        for k, order_id in enumerate(chosen):
            year = self._orders[order_id]["data"][:4]
            field, value = (
                ("data", f"31/02/{year}"),
                ("totalOrdemServico", "abc"),
                ("dataConclusao", f"{year}-02-30"),
                ("desconto", "dez por cento"),
                ("totalServicos", "1.234,5O"),
            )[k % 5]
            self._broken[order_id] = {field: value}
        self.broken_ids: list[int] = chosen

    # ---- indexes ----------------------------------------------------------------------

    def _index_add(self, order_id: int) -> None:
        detail = self._orders[order_id]
        key = (detail["data"], order_id)
        month = _month_key(detail["data"])
        if month not in self._index_all:
            bisect.insort(self._months, month)
        bisect.insort(self._index_all.setdefault(month, []), key)
        bisect.insort(self._index_status[detail["situacao"]].setdefault(month, []), key)

    def _segments(
        self, situacao: str | None, first: str | None, last: str | None
    ) -> list[tuple[list[tuple[str, int]], int, int]]:
        """Slices (list, lo, hi) of the (data, id)-sorted indexes, ascending, for a filter."""
        index = self._index_all if situacao is None else self._index_status[situacao]
        lo_month = _month_key(first) if first else -1
        hi_month = _month_key(last) if last else 10**9
        start = bisect.bisect_left(self._months, lo_month)
        stop = bisect.bisect_right(self._months, hi_month)
        inclusive = self.date_filters_inclusive
        segments = []
        for month in self._months[start:stop]:
            keys = index.get(month)
            if not keys:
                continue
            lo, hi = 0, len(keys)
            if first and month == lo_month:
                lo = (
                    bisect.bisect_left(keys, (first,))
                    if inclusive
                    else bisect.bisect_right(keys, (first, math.inf))
                )
            if last and month == hi_month:
                hi = (
                    bisect.bisect_right(keys, (last, math.inf))
                    if inclusive
                    else bisect.bisect_left(keys, (last,))
                )
            if hi > lo:
                segments.append((keys, lo, hi))
        return segments

    @staticmethod
    def _walk(
        segments: list[tuple[list[tuple[str, int]], int, int]], descending: bool
    ) -> Iterator[int]:
        if descending:
            for keys, lo, hi in reversed(segments):
                for i in range(hi - 1, lo - 1, -1):
                    yield keys[i][1]
        else:
            for keys, lo, hi in segments:
                for i in range(lo, hi):
                    yield keys[i][1]

    # ---- rendering --------------------------------------------------------------------

    def list_item(self, order_id: int) -> dict[str, Any]:
        """The order as ``GET /ordem-servico`` shows it."""
        with self._lock:
            detail = self._orders[order_id]
            contact = self._contact_of[order_id]
            legacy = order_id in self._legacy
            cliente = {
                k: contact[k]
                for k in ("id", "nome", "codigo", "tipoPessoa", "cpfCnpj", "celular", "email")
            }
            item: dict[str, Any] = {
                "id": order_id,
                "situacao": detail["situacao"],
                "data": detail["data"],
            }
            if not legacy:
                item["dataPrevista"] = detail["dataPrevista"]
                cliente["endereco"] = {
                    "municipio": contact["endereco"]["municipio"],
                    "uf": contact["endereco"]["uf"],
                }
            item["valor"] = detail["totalOrdemServico"] if order_id in self._valor_in_list else None
            item["numeroOrdemServico"] = detail["numeroOrdemServico"]
            item["cliente"] = cliente
            if not legacy:
                item["marcadores"] = [dict(m) for m in detail["marcadores"]]
            return item

    def detail(self, order_id: int) -> dict[str, Any]:
        """The order as ``GET /ordem-servico/{id}`` shows it (broken ones included)."""
        with self._lock:
            detail = json.loads(json.dumps(self._orders[order_id]))
            contact = self._contact_of[order_id]
            if order_id in self._legacy:
                contato = {k: contact[k] for k in ("id", "nome", "cpfCnpj", "celular")}
            else:
                contato = {k: v for k, v in contact.items() if not k.startswith("_")}
                contato["endereco"] = (
                    {} if contact["_empty_address_in_detail"] else dict(contact["endereco"])
                )
            detail["contato"] = contato
            detail.update(self._broken.get(order_id, {}))
            return detail

    # ---- controls ---------------------------------------------------------------------

    def _set_status_locked(self, order_id: int, situacao: str, data_conclusao: str | None) -> None:
        detail = self._orders[order_id]
        key = (detail["data"], order_id)
        month = _month_key(detail["data"])
        old = self._index_status[detail["situacao"]][month]
        del old[bisect.bisect_left(old, key)]
        detail["situacao"] = situacao
        bisect.insort(self._index_status[situacao].setdefault(month, []), key)
        if data_conclusao is not None:
            detail["dataConclusao"] = data_conclusao

    def set_status(
        self, order_id: int, situacao: str | int, data_conclusao: str | None = None
    ) -> dict[str, Any]:
        """Change an order's status as a Tiny user would. ``data_conclusao`` None leaves the
        conclusion date as it was (Tiny often gives none, even for finished orders)."""
        situacao = str(situacao)
        if situacao not in ALL_STATUSES:
            raise ValueError(f"situacao must be one of {ALL_STATUSES}, got {situacao!r}")
        with self._lock:
            if order_id not in self._orders:
                raise KeyError(order_id)
            self._set_status_locked(order_id, situacao, data_conclusao)
            self._stats["status_changes"] += 1
        return self.detail(order_id)

    def change_status_when_listed(
        self, order_id: int, situacao: str | int, data_conclusao: str | None = None
    ) -> None:
        """Change the order's status once a list reply has shown it, when the next list
        request arrives: the client has read (and may have stored) the old status, and the
        page it asks for now is built after the change."""
        situacao = str(situacao)
        if situacao not in ALL_STATUSES:
            raise ValueError(f"situacao must be one of {ALL_STATUSES}, got {situacao!r}")
        with self._lock:
            if order_id not in self._orders:
                raise KeyError(order_id)
            self._change_when_listed[order_id] = [situacao, data_conclusao, False]

    def edit(self, order_id: int, **fields: Any) -> dict[str, Any]:
        """Set detail fields that no index depends on (``dataPrevista``, ``dataConclusao``...)."""
        fixed = {"id", "data", "situacao", "numeroOrdemServico"} & set(fields)
        if fixed:
            raise ValueError(f"{sorted(fixed)} cannot be edited (use set_status / add_orders)")
        with self._lock:
            self._orders[order_id].update(fields)
        return self.detail(order_id)

    def add_orders(
        self,
        count: int,
        month: str | None = None,
        situacao: str | int | None = "0",
        day: str | None = None,
    ) -> list[int]:
        """Create ``count`` orders emitted in ``month`` ("YYYY-MM"; default: today) or on
        ``day`` ("YYYY-MM-DD"). Ids are always new and larger, so an order emitted in a past
        month is a late arrival in an old window. ``situacao`` None draws a status as the
        seeded data does."""
        with self._lock:
            ids = []
            for _ in range(count):
                if day:
                    day_ = dt.date.fromisoformat(day)
                elif month:
                    year, mon = (int(p) for p in month.split("-"))
                    day_ = self._random_day(year, mon)
                else:
                    day_ = self.today
                self._next_id += self.rng.randint(1, 60)
                self._make_order(self._next_id, day_, None if situacao is None else str(situacao))
                ids.append(self._next_id)
            self._stats["orders_added"] += count
            return ids

    def churn(self, count: int) -> dict[int, str]:
        """Move ``count`` random open orders one step on (finished, cancelled, in progress...)."""
        with self._lock:
            open_ids = sorted(i for i, o in self._orders.items() if o["situacao"] in OPEN_STATUSES)
            moved = {}
            for order_id in self.rng.sample(open_ids, min(count, len(open_ids))):
                new = self.rng.choice(("3", "3", "3", "6", "5", "2", "7"))
                conclusion = (
                    self.today.isoformat() if new == "3" and self.rng.random() < 0.5 else None
                )
                self._set_status_locked(order_id, new, conclusion)
                moved[order_id] = new
            self._stats["status_changes"] += len(moved)
            return moved

    def snapshot(self) -> dict[int, str]:
        """Ground truth: {order id: situacao} of every order."""
        with self._lock:
            return {i: o["situacao"] for i, o in self._orders.items()}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {**self._stats, "orders": len(self._orders)}

    def configure(self, **knobs: Any) -> dict[str, Any]:
        unknown = set(knobs) - set(RUNTIME_KNOBS)
        if unknown:
            raise ValueError(f"unknown knobs {sorted(unknown)}; known: {list(RUNTIME_KNOBS)}")
        with self._lock:
            for name, value in knobs.items():
                setattr(self, name, value)
            self._minute.limit, self._minute.length = (
                int(self.per_minute_limit),
                float(self.window_s),
            )
            self._burst.limit, self._burst.length = (
                int(self.burst_per_second),
                float(self.burst_window_s),
            )
            return {name: getattr(self, name) for name in RUNTIME_KNOBS}

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self._stats.clear()
            self._minute = _FixedWindow(self.per_minute_limit, self.window_s)
            self._burst = _SlidingLog(self.burst_per_second, self.burst_window_s)

    # ---- tokens -----------------------------------------------------------------------

    def _jwt(self, claims: dict[str, Any]) -> str:
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "tiny-sim"}).encode())
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = _b64(hmac.new(self._key, f"{header}.{body}".encode(), hashlib.sha256).digest())
        return f"{header}.{body}.{signature}"

    def _claims(self, token: str, typ: str) -> dict[str, Any] | None:
        """The token's claims if it is one of ours, of type ``typ``; None otherwise."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        expected = _b64(
            hmac.new(self._key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        )
        if not hmac.compare_digest(expected, parts[2]):
            return None
        try:
            claims = json.loads(_unb64(parts[1]))
        except ValueError:
            return None
        return claims if isinstance(claims, dict) and claims.get("typ") == typ else None

    def _issue_pair(self, session: str | None = None) -> dict[str, Any]:
        now = time.time()
        session = session or secrets.token_hex(16)
        common = {
            "iat": round(now, 6),
            "iss": "tiny-sim/realms/tiny",
            "azp": self.client_id,
            "sid": session,
        }
        access = self._jwt(
            {
                **common,
                "exp": round(now + self.access_token_ttl_s, 6),
                "jti": secrets.token_hex(12),
                "typ": "Bearer",
            }
        )
        refresh = self._jwt(
            {
                **common,
                "exp": round(now + self.refresh_token_ttl_s, 6),
                "jti": secrets.token_hex(12),
                "typ": "Refresh",
            }
        )
        return {
            "access_token": access,
            "expires_in": int(self.access_token_ttl_s),
            "refresh_expires_in": int(self.refresh_token_ttl_s),
            "refresh_token": refresh,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "session_state": session,
            "scope": "email profile",
        }

    def issue_initial_tokens(self) -> dict[str, Any]:
        """A fresh token pair, as after a person authorized the app (no HTTP involved)."""
        with self._token_lock:
            return self._issue_pair()

    def issue_authorization_code(self, redirect_uri: str | None = None) -> str:
        """A single-use code valid 60 s; with ``redirect_uri`` the exchange must repeat it."""
        code = f"{secrets.token_hex(18)}.{secrets.token_hex(8)}"
        with self._token_lock:
            self._codes[code] = (time.time() + 60.0, redirect_uri)
        return code

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is now expired (401 on API calls)."""
        with self._token_lock:
            self._access_not_before = time.time()

    def revoke_refresh_tokens(self) -> None:
        """Every refresh token and code issued so far now gives invalid_grant."""
        with self._token_lock:
            self._refresh_not_before = time.time()
            self._codes.clear()

    @staticmethod
    def _oauth_error(status: int, error: str, description: str) -> Response:
        return Response.json(
            {"error": error, "error_description": description},
            status,
            {"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    @route("POST", TOKEN_PATH)
    def token(self, request: Request) -> Response:
        form = request.form()
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        basic = request.header("authorization") or ""
        if basic.lower().startswith("basic "):
            try:
                client_id, _, client_secret = base64.b64decode(basic[6:]).decode().partition(":")
            except ValueError:
                pass
        with self._lock:
            self._stats["token_requests"] += 1
        if client_id != self.client_id:
            self._count("token_client_errors")
            return self._oauth_error(
                401, "invalid_client", "Invalid client or Invalid client credentials"
            )
        if not hmac.compare_digest(client_secret.encode(), self.client_secret.encode()):
            self._count("token_client_errors")
            return self._oauth_error(
                401, "unauthorized_client", "Invalid client or Invalid client credentials"
            )
        grant = form.get("grant_type", "")
        if not grant:
            return self._oauth_error(400, "invalid_request", "Missing form parameter: grant_type")
        now = time.time()
        with self._token_lock:
            if grant == "authorization_code":
                entry = self._codes.pop(form.get("code", ""), None)
                if entry is None or entry[0] < now:
                    return self._invalid_grant("Code not valid")
                if entry[1] is not None and entry[1] != form.get("redirect_uri"):
                    return self._invalid_grant("Incorrect redirect_uri")
                self._count("code_exchanges")
                return self._token_reply(self._issue_pair())
            if grant == "refresh_token":
                claims = self._claims(form.get("refresh_token", ""), "Refresh")
                if claims is None:
                    return self._invalid_grant("Invalid refresh token")
                if claims.get("azp") != self.client_id:
                    return self._invalid_grant(
                        "Invalid refresh token. Token client and authorized client don't match"
                    )
                if claims["exp"] <= now:
                    return self._invalid_grant("Token is not active")
                if claims["iat"] < self._refresh_not_before:
                    return self._invalid_grant("Stale token")
                if claims["jti"] in self._used_refresh:
                    return self._invalid_grant("Maximum allowed refresh token reuse exceeded")
                if self.rotate_refresh_token:
                    self._used_refresh.add(claims["jti"])
                self._count("token_renewals")
                return self._token_reply(self._issue_pair(claims.get("sid")))
        return self._oauth_error(400, "unsupported_grant_type", "Unsupported grant_type")

    def _token_reply(self, pair: dict[str, Any]) -> Response:
        return Response.json(pair, 200, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _invalid_grant(self, description: str) -> Response:
        self._count("invalid_grants")
        return self._oauth_error(400, "invalid_grant", description)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._stats[name] += n

    # ---- the API gate: rate limit, then token -------------------------------------------

    def _api(self, request: Request, handle: Callable[[], Response]) -> Response:
        now = time.monotonic()
        with self._lock:
            self._stats["api_calls"] += 1
            self._minute.roll(now)
            limited = None
            if self._minute.count >= self._minute.limit:
                limited = "rate_limited_minute"
            elif self._burst.full(now):
                limited = "rate_limited_burst"
            else:
                self._minute.count += 1
                self._burst.add(now)
            prefix = self.rate_limit_header_prefix
            headers = {
                f"{prefix}-Limit": str(self._minute.limit),
                f"{prefix}-Remaining": str(self._minute.remaining()),
                f"{prefix}-Reset": str(self._minute.reset_in(now)),
            }
            if limited:
                self._stats[limited] += 1
                self._stats["status_429"] += 1
                return Response(429, b"", headers)
        if not self._access_ok(request):
            reply = Response.json({"mensagem": "Token inválido ou expirado"}, 401)
        else:
            reply = handle()
        reply.headers.update(headers)
        self._count(f"status_{reply.status}")
        return reply

    def _access_ok(self, request: Request) -> bool:
        scheme, _, token = (request.header("authorization") or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        claims = self._claims(token.strip(), "Bearer")
        return (
            claims is not None
            and claims["exp"] > time.time()
            and claims["iat"] >= self._access_not_before
        )

    # ---- API routes -------------------------------------------------------------------

    @route("GET", API_PREFIX + r"/ordem-servico")
    def list_orders(self, request: Request) -> Response:
        return self._api(request, lambda: self._list(request.query))

    @route("GET", API_PREFIX + r"/ordem-servico/(?P<order_id>\d+)")
    def get_order(self, request: Request, order_id: str) -> Response:
        return self._api(request, lambda: self._detail(int(order_id)))

    @route("GET", API_PREFIX + r"/.*")
    def api_not_found(self, request: Request) -> Response:
        return self._api(
            request, lambda: Response.json({"mensagem": "Recurso não encontrado"}, 404)
        )

    def _detail(self, order_id: int) -> Response:
        self._count("detail_calls")
        if order_id not in self._orders:
            return Response.json({"mensagem": "Ordem de serviço não encontrada"}, 404)
        return Response.json(self.detail(order_id))

    def _list(self, query: dict[str, str]) -> Response:
        self._count("list_calls")
        problems = []

        def bad(campo: str, mensagem: str) -> None:
            problems.append({"campo": campo, "mensagem": mensagem})

        situacao = query.get("situacao") or None
        if situacao is not None and situacao not in ALL_STATUSES:
            bad("situacao", "Situação inválida")
        first = query.get("dataInicialEmissao") or None
        last = query.get("dataFinalEmissao") or None
        for campo, value in (("dataInicialEmissao", first), ("dataFinalEmissao", last)):
            if value is not None and not _valid_day(value):
                bad(campo, "Data inválida, use o formato AAAA-MM-DD")
        order = (query.get("orderBy") or self.default_order).lower()
        if order not in ("asc", "desc"):
            bad("orderBy", "Valores aceitos: asc, desc")
        limit_text, offset_text = query.get("limit") or "100", query.get("offset") or "0"
        if not limit_text.isdigit() or int(limit_text) < 1:
            bad("limit", "Deve ser um número inteiro positivo")
        elif int(limit_text) > self.page_limit_max and self.limit_over_max == "reject":
            bad("limit", f"O valor máximo é {self.page_limit_max}")
        if not offset_text.isdigit():
            bad("offset", "Deve ser um número inteiro maior ou igual a zero")
        if problems:
            return Response.json({"mensagem": "Parâmetros inválidos", "detalhes": problems}, 400)
        limit = min(int(limit_text), self.page_limit_max)
        offset = int(offset_text)
        numero = query.get("numeroOrdemServico") or None
        id_contato = query.get("idContato") or None
        nome = (query.get("nomeCliente") or "").strip().lower() or None

        def keep(order_id: int) -> bool:
            detail = self._orders[order_id]
            contact = self._contact_of[order_id]
            return (
                (situacao is None or detail["situacao"] == situacao)
                and (
                    first is None
                    or (
                        detail["data"] >= first
                        if self.date_filters_inclusive
                        else detail["data"] > first
                    )
                )
                and (
                    last is None
                    or (
                        detail["data"] <= last
                        if self.date_filters_inclusive
                        else detail["data"] < last
                    )
                )
                and (id_contato is None or str(contact["id"]) == id_contato)
                and (nome is None or nome in contact["nome"].lower())
            )

        with self._lock:
            for order_id, (new, conclusion, armed) in list(self._change_when_listed.items()):
                if armed:
                    del self._change_when_listed[order_id]
                    self._set_status_locked(order_id, new, conclusion)
                    self._stats["status_changes"] += 1
                    self._stats["changed_while_listed"] += 1
            if numero is not None:
                ids = [i for i in self._by_numero.get(numero, []) if keep(i)]
                ids.sort(key=lambda i: (self._orders[i]["data"], i), reverse=order == "desc")
                total, page = len(ids), ids[offset : offset + limit]
            else:
                segments = self._segments(situacao, first, last)
                walk = self._walk(segments, order == "desc")
                if id_contato is not None or nome is not None:
                    # Rare filters the sync never uses: a scan of the date/status range.
                    ids = [i for i in walk if keep(i)]
                    total, page = len(ids), ids[offset : offset + limit]
                    walked = sum(hi - lo for _, lo, hi in segments)
                else:
                    total = sum(hi - lo for _, lo, hi in segments)
                    page = []
                    walked = 0
                    for position, order_id in enumerate(walk):
                        if position >= offset + limit:
                            break
                        walked += 1
                        if position >= offset:
                            page.append(order_id)
                # Index entries one listing touched: bounded by offset + limit, never by the
                # account's size (tests assert it; bench/bench_tiny_sim.py prints the speed).
                self._stats["list_entries_walked"] += walked
            items = [self.list_item(i) for i in page]
            for order_id in page:
                if order_id in self._change_when_listed:
                    self._change_when_listed[order_id][2] = True
        if self.omit_paginacao:
            return Response.json({"itens": items})
        return Response.json(
            {"itens": items, "paginacao": {"limit": limit, "offset": offset, "total": total}}
        )

    # ---- admin routes -----------------------------------------------------------------

    @route("GET", r"/__admin/tiny/orders")
    def _admin_orders(self, request: Request) -> Response:
        fields = [f for f in (request.query.get("fields") or "id,situacao").split(",") if f]
        with self._lock:
            ids = sorted(self._orders, key=lambda i: (self._orders[i]["data"], i))
            rows = [{f: self._orders[i].get(f) for f in fields} for i in ids]
        return Response.json({"itens": rows, "total": len(rows)})

    @route("POST", r"/__admin/tiny/orders")
    def _admin_add_orders(self, request: Request) -> Response:
        body = request.json() or {}
        situacao = body.get("situacao", "0")
        ids = self.add_orders(int(body.get("count", 1)), body.get("month"), situacao)
        return Response.json({"ids": ids})

    @route("GET", r"/__admin/tiny/orders/(?P<order_id>\d+)")
    def _admin_order(self, request: Request, order_id: str) -> Response:
        if int(order_id) not in self._orders:
            return Response.json({"error": "unknown order"}, 404)
        return Response.json(
            {"item": self.list_item(int(order_id)), "detail": self.detail(int(order_id))}
        )

    @route("POST", r"/__admin/tiny/orders/(?P<order_id>\d+)/status")
    def _admin_set_status(self, request: Request, order_id: str) -> Response:
        body = request.json() or {}
        try:
            detail = self.set_status(
                int(order_id), body.get("situacao", ""), body.get("dataConclusao")
            )
        except KeyError:
            return Response.json({"error": "unknown order"}, 404)
        except ValueError as exc:
            return Response.json({"error": str(exc)}, 400)
        return Response.json(detail)

    @route("POST", r"/__admin/tiny/orders/(?P<order_id>\d+)/change-when-listed")
    def _admin_change_when_listed(self, request: Request, order_id: str) -> Response:
        body = request.json() or {}
        try:
            self.change_status_when_listed(
                int(order_id), body.get("situacao", ""), body.get("dataConclusao")
            )
        except KeyError:
            return Response.json({"error": "unknown order"}, 404)
        except ValueError as exc:
            return Response.json({"error": str(exc)}, 400)
        return Response.json({"ok": True})

    @route("POST", r"/__admin/tiny/churn")
    def _admin_churn(self, request: Request) -> Response:
        moved = self.churn(int((request.json() or {}).get("count", 1)))
        return Response.json({"moved": {str(k): v for k, v in moved.items()}})

    @route("GET", r"/__admin/tiny/stats")
    def _admin_stats(self, request: Request) -> Response:
        return Response.json(self.stats())

    @route("GET", r"/__admin/tiny/broken")
    def _admin_broken(self, request: Request) -> Response:
        return Response.json({"ids": self.broken_ids})

    @route("POST", r"/__admin/tiny/tokens")
    def _admin_tokens(self, request: Request) -> Response:
        return Response.json(self.issue_initial_tokens())

    @route("POST", r"/__admin/tiny/authorization-code")
    def _admin_code(self, request: Request) -> Response:
        body = request.json() or {}
        return Response.json({"code": self.issue_authorization_code(body.get("redirect_uri"))})

    @route("POST", r"/__admin/tiny/tokens/expire-access")
    def _admin_expire(self, request: Request) -> Response:
        self.expire_access_tokens()
        return Response.json({"ok": True})

    @route("POST", r"/__admin/tiny/tokens/revoke-refresh")
    def _admin_revoke(self, request: Request) -> Response:
        self.revoke_refresh_tokens()
        return Response.json({"ok": True})

    @route("GET", r"/__admin/tiny/config")
    def _admin_get_config(self, request: Request) -> Response:
        return Response.json(self.configure())

    @route("POST", r"/__admin/tiny/config")
    def _admin_set_config(self, request: Request) -> Response:
        try:
            return Response.json(self.configure(**(request.json() or {})))
        except ValueError as exc:
            return Response.json({"error": str(exc)}, 400)


# ---- the sandbox part ---------------------------------------------------------------------

DEMO_ORDERS = 800
DEMO_PER_MINUTE = 3000
# A small, fast account so the demo (which also runs the integrity check over everything)
# takes seconds. The burst bucket keeps the real proportion to the per-minute one (4/s is
# twice a 120/min plan's average), so the per-minute bucket is the binding one.
DEMO_BURST_PER_SECOND = 100


def _demo_simulator(seed: int) -> TinySimulator:
    return TinySimulator(
        seed,
        n_orders=DEMO_ORDERS,
        per_minute_limit=DEMO_PER_MINUTE,
        burst_per_second=DEMO_BURST_PER_SECOND,
    )


def _sandbox_env(base_url: str) -> dict[str, str]:
    import requests

    # The sandbox's stand-in for "a person authorized the app": a refresh token the client
    # exchanges on first use and then keeps rotating in its database.
    reply = requests.post(f"{base_url}/__admin/tiny/tokens", timeout=10)
    reply.raise_for_status()
    return {
        "TINY_API_BASE_URL": base_url + API_PREFIX,
        "TINY_TOKEN_URL": base_url + TOKEN_PATH,
        "TINY_CLIENT_ID": SANDBOX_CLIENT_ID,
        "TINY_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
        "TINY_MAX_REQUESTS_PER_MINUTE": str(DEMO_PER_MINUTE),
        "TINY_INITIAL_REFRESH_TOKEN": reply.json()["refresh_token"],
        # The project's one credentials key (lib/crypto.py), the same sandbox value DETRAN's part sets.
        CREDENTIALS_KEY_VAR: SANDBOX_CREDENTIALS_KEY,
    }


TINY_PART = SandboxPart(
    name="tiny",
    simulator=_demo_simulator,
    env=_sandbox_env,
    planted={
        "tiny.import_failures": (
            "the simulator serves 5 orders with malformed details (a 31/02 date, 'abc' as a "
            "total…): each is kept as a failure row with the reason, retried, never dropped"
        ),
        "tiny/integrity_report:api_and_table_agree": (
            "red because those 5 planted orders exist in Tiny but cannot be imported"
        ),
    },
    # A month of the old 2014 shape, a mid-history month and the current one.
    demo_partitions=lambda: {
        asset: [
            "2014-03-01",
            "2020-03-01",
            dt.datetime.now(SAO_PAULO).date().replace(day=1).isoformat(),
        ]
        # The reparse runs after the load, in the same run (same partitions and key).
        for asset in ("tiny/service_orders_history", "tiny/reparse")
    },
)
