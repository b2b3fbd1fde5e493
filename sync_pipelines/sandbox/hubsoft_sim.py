"""HubSoft's integration API (one ISP tenant), simulated on the shared harness.

Written from contracts/hubsoft.md:
- ``POST /oauth/token`` password grant (JSON or form); 401 ``invalid_credentials`` for bad
  credentials. ``revoke_tokens()`` (or ``POST /__admin/hubsoft/revoke``) invalidates every
  token issued so far, as a HubSoft admin can.
- Replies use the real envelope: ``{"status": "success", "msg": ..., <payload>}``; business
  and validation errors are **HTTP 200** ``{"status": "error", "msg", "errors"}``; adding a
  message answers ``"suscess"`` (sic), as one documented reply does.
- Clients with services (deterministic from the seed), tenant-configured ticket statuses and
  types, tickets with protocols of 20 digits, messages and ``parametros``.
- ``cliente/atendimento`` hides closed tickets unless ``apenas_pendente=nao``;
  ``atendimento/todos`` pages from 0 with ``itens_por_pagina`` ≤ 500.
- Faults come from the harness: ``outage`` ("refuse" | "503" | "timeout") takes the whole
  API down; ``drop_after_commit`` with ``path="atendimento$"`` opens the ticket and then hangs
  up without a reply.
- ``set_ticket_status(id, prefixo)`` (or ``POST /__admin/hubsoft/tickets/<id>/status``)
  moves a ticket as an agent would; a closing status sets ``data_fechamento``;
  ``reopen_ticket(id)`` reopens a closed one (``data_fechamento``/``status_fechamento``
  cleared, status ``pendente``), as agents do when the customer calls back.
- Ticket types are the tenant's own: ids such as 109, not 1..N, listed under
  ``tipos_atendimento`` (the key of HubSoft's documented reply). A create without
  ``id_tipo_atendimento`` is accepted and silently gets the tenant's default type (SAC), the
  trap a client falls into when it cannot resolve a type; an unknown id is a 200 error.
- Faults between the create and the history message come from the harness with
  ``path="adicionar_mensagem"``: ``error_rate``/``fail_next`` (5xx before processing),
  ``outage`` "refuse" (connection reset before processing), ``drop_after_commit`` (message
  stored, reply lost). HubSoft has no call that lists a ticket's messages.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .harness import Request, Response, Simulator, route

API = "/api/v1/integracao"
SANDBOX_CLIENT_ID = "3"
SANDBOX_CLIENT_SECRET = "sandbox-hubsoft-client-secret"
SANDBOX_USERNAME = "api@sandbox-isp.com.br"
SANDBOX_PASSWORD = "sandbox-hubsoft-password"

# (id, descricao, prefixo, closes the ticket)
STATUSES: list[tuple[int, str, str, bool]] = [
    (1, "Aguardando Análise", "aguardando_analise", False),
    (2, "Pendente", "pendente", False),
    (3, "Novo Atendimento", "novo_atendimento", False),
    (4, "Retornar Contato", "retornar_contato", False),
    (5, "Base Técnica", "base_tecnica", False),
    (6, "Resolvido", "resolvido", True),
]
# The tenant's ticket types (ids are the tenant's own, as in HubSoft's documented reply).
TICKET_TYPES: list[tuple[int, str]] = [
    (101, "SAC"),
    (109, "SEM ACESSO A INTERNET"),
    (111, "INTERNET LENTA"),
    (115, "FINANCEIRO"),
    (120, "SUPORTE TÉCNICO"),
    (130, "CANCELAMENTO"),
]
# What HubSoft gives a ticket opened without ``id_tipo_atendimento``.
DEFAULT_TICKET_TYPE = 101
FIRST_NAMES = ["MARIA", "JOSE", "ANA", "JOAO", "FRANCISCA", "ANTONIO", "ADRIANA", "CARLOS"]
LAST_NAMES = ["SOUZA", "SILVA", "SANTOS", "OLIVEIRA", "PEREIRA", "LIMA", "COSTA", "ALVES"]


def make_cpf(rng) -> str:
    """A CPF with valid check digits (11 digits, no punctuation)."""
    digits = [rng.randrange(10) for _ in range(9)]
    for length in (9, 10):
        total = sum(d * (length + 1 - i) for i, d in enumerate(digits[:length]))
        digits.append((total * 10 % 11) % 10)
    return "".join(map(str, digits))


@dataclass
class SimClient:
    codigo_cliente: int
    nome_razaosocial: str
    cpf_cnpj: str
    telefone: str
    email: str
    service_ids: list[int]

    def as_json(self) -> dict[str, Any]:
        return {
            "id_cliente": self.codigo_cliente,
            "codigo_cliente": self.codigo_cliente,
            "nome_razaosocial": self.nome_razaosocial,
            "cpf_cnpj": self.cpf_cnpj,
            "telefone_primario": self.telefone,
            "email_principal": self.email,
            "servicos": [
                {
                    "id_cliente_servico": sid,
                    "nome": "FIBRA 300MB",
                    "status": "Serviço Habilitado",
                    "status_prefixo": "servico_habilitado",
                }
                for sid in self.service_ids
            ],
        }


@dataclass
class SimTicket:
    id_atendimento: int
    protocolo: str
    client: SimClient
    id_cliente_servico: int
    descricao_abertura: str
    id_tipo_atendimento: int
    id_atendimento_status: int
    data_cadastro: dt.datetime
    nome: str
    telefone: str
    parametros: dict[str, Any] = field(default_factory=dict)
    data_fechamento: dt.datetime | None = None
    status_fechamento: str | None = None
    mensagens: list[dict[str, Any]] = field(default_factory=list)

    @property
    def closed(self) -> bool:
        return self.data_fechamento is not None

    def status(self) -> tuple[int, str, str, bool]:
        return next(s for s in STATUSES if s[0] == self.id_atendimento_status)

    def listed(self) -> dict[str, Any]:
        """As ``cliente/atendimento`` and the create reply show it (status as display text)."""
        return {
            "id_atendimento": self.id_atendimento,
            "protocolo": self.protocolo,
            "descricao_abertura": self.descricao_abertura,
            "tipo_atendimento": dict(TICKET_TYPES)[self.id_tipo_atendimento],
            "status": self.status()[1],
            "data_cadastro": self.data_cadastro.strftime("%d/%m/%Y %H:%M:%S"),
            "data_fechamento": _br(self.data_fechamento),
            "status_fechamento": self.status_fechamento,
            "id_cliente_servico": self.id_cliente_servico,
            "parametros": dict(self.parametros),
            "cliente": {
                "codigo_cliente": self.client.codigo_cliente,
                "nome_razaosocial": self.client.nome_razaosocial,
                "cpf_cnpj": self.client.cpf_cnpj,
            },
        }

    def raw(self) -> dict[str, Any]:
        """As ``atendimento/todos`` shows it: raw row with the status id and object."""
        ident, descricao, prefixo, _ = self.status()
        return {
            "id_atendimento": self.id_atendimento,
            "protocolo": self.protocolo,
            "descricao_abertura": self.descricao_abertura,
            "id_atendimento_status": ident,
            "status": {"id_atendimento_status": ident, "descricao": descricao, "prefixo": prefixo},
            "id_tipo_atendimento": self.id_tipo_atendimento,
            "id_cliente_servico": self.id_cliente_servico,
            "data_cadastro": self.data_cadastro.strftime("%Y-%m-%d %H:%M:%S"),
            "data_fechamento": self.data_fechamento.strftime("%Y-%m-%d %H:%M:%S")
            if self.data_fechamento
            else None,
        }


def _br(value: dt.datetime | None) -> str | None:
    return value.strftime("%d/%m/%Y %H:%M:%S") if value else None


def _error(msg: str, *errors: str) -> Response:
    # HubSoft's business errors are HTTP 200: only the body says it failed.
    return Response.json({"status": "error", "msg": msg, "errors": list(errors) or [msg]})


class HubSoftSimulator(Simulator):
    name = "hubsoft"

    def __init__(
        self,
        seed: int = 0,
        *,
        n_clients: int = 12,
        n_tickets: int = 6,
        faults: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(seed, faults)
        self._data_lock = threading.RLock()
        self.clients: list[SimClient] = []
        self.tickets: dict[int, SimTicket] = {}
        self.tokens: set[str] = set()
        self._next_ticket = 1000
        self._next_service = 5000
        for index in range(n_clients):
            services = [self._new_service_id() for _ in range(1 + index % 2)]
            first, last = self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)
            self.clients.append(
                SimClient(
                    codigo_cliente=1200 + index,
                    nome_razaosocial=f"{first} {last}",
                    cpf_cnpj=make_cpf(self.rng),
                    telefone=f"419{self.rng.randrange(10**7, 10**8)}",
                    email=f"{first.lower()}.{last.lower()}{index}@example.com",
                    service_ids=services,
                )
            )
        start = dt.datetime(2025, 1, 6, 9, 0)
        for index in range(n_tickets):
            client = self.clients[index % len(self.clients)]
            self._add_ticket(
                client,
                client.service_ids[0],
                f"Chamado pré-existente {index + 1} | ATENDIMENTO ABERTO VIA API",
                id_tipo_atendimento=TICKET_TYPES[index % len(TICKET_TYPES)][0],
                when=start + dt.timedelta(days=index, minutes=17 * index),
            )

    def _new_service_id(self) -> int:
        self._next_service += 1
        return self._next_service

    def _protocol(self, when: dt.datetime) -> str:
        return when.strftime("%Y%m%d%H%M%S") + f"{self.rng.randrange(10**6):06d}"

    def _add_ticket(
        self,
        client: SimClient,
        service_id: int,
        descricao: str,
        *,
        id_tipo_atendimento: int = DEFAULT_TICKET_TYPE,
        id_atendimento_status: int = 1,
        when: dt.datetime | None = None,
        nome: str = "",
        telefone: str = "",
        parametros: dict[str, Any] | None = None,
    ) -> SimTicket:
        with self._data_lock:
            self._next_ticket += 1
            when = when or dt.datetime.now().replace(microsecond=0)
            ticket = SimTicket(
                id_atendimento=self._next_ticket,
                protocolo=self._protocol(when),
                client=client,
                id_cliente_servico=service_id,
                descricao_abertura=descricao,
                id_tipo_atendimento=id_tipo_atendimento,
                id_atendimento_status=id_atendimento_status,
                data_cadastro=when,
                nome=nome or client.nome_razaosocial,
                telefone=telefone or client.telefone,
                parametros=dict(parametros or {}),
            )
            self.tickets[ticket.id_atendimento] = ticket
            return ticket

    # ---- helpers for tests and the demo -----------------------------------------------

    def client_of_service(self, service_id: int) -> SimClient | None:
        return next((c for c in self.clients if service_id in c.service_ids), None)

    def tickets_with(self, text: str) -> list[SimTicket]:
        """Tickets whose opening description contains ``text`` (e.g. a local protocol)."""
        with self._data_lock:
            return [t for t in self.tickets.values() if text in t.descricao_abertura]

    def revoke_tokens(self) -> None:
        with self._data_lock:
            self.tokens.clear()

    def set_ticket_status(self, id_atendimento: int, prefixo: str) -> SimTicket:
        """Move a ticket to a status as an agent would; a closing status closes it."""
        status = next((s for s in STATUSES if s[2] == prefixo), None)
        if status is None:
            raise ValueError(f"unknown status {prefixo!r}; known: {[s[2] for s in STATUSES]}")
        with self._data_lock:
            ticket = self.tickets[id_atendimento]
            ticket.id_atendimento_status = status[0]
            if status[3]:
                ticket.data_fechamento = dt.datetime.now().replace(microsecond=0)
                ticket.status_fechamento = "concluido"
            else:
                ticket.data_fechamento = ticket.status_fechamento = None
            return ticket

    def reopen_ticket(self, id_atendimento: int, prefixo: str = "pendente") -> SimTicket:
        """Reopen a closed ticket as an agent does when the customer calls back."""
        with self._data_lock:
            if not self.tickets[id_atendimento].closed:
                raise ValueError(f"ticket {id_atendimento} is not closed")
            return self.set_ticket_status(id_atendimento, prefixo)

    # ---- auth -------------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        header = request.header("authorization") or ""
        token = header[7:] if header.lower().startswith("bearer ") else ""
        with self._data_lock:
            return token in self.tokens

    @staticmethod
    def _unauthorized() -> Response:
        return Response.json({"message": "Unauthenticated."}, 401)

    @route("POST", r"/oauth/token")
    def token(self, request: Request) -> Response:
        content_type = request.header("content-type", "") or ""
        fields: Mapping[str, Any] = (
            (request.json() or {}) if "json" in content_type else request.form()
        )
        good = (
            str(fields.get("grant_type")) == "password"
            and str(fields.get("client_id")) == SANDBOX_CLIENT_ID
            and fields.get("client_secret") == SANDBOX_CLIENT_SECRET
            and fields.get("username") == SANDBOX_USERNAME
            and fields.get("password") == SANDBOX_PASSWORD
        )
        if not good:
            return Response.json(
                {
                    "error": "invalid_credentials",
                    "error_description": "The user credentials were incorrect.",
                    "message": "The user credentials were incorrect.",
                },
                401,
            )
        token = "hs_" + secrets.token_urlsafe(32)
        with self._data_lock:
            self.tokens.add(token)
        return Response.json(
            {
                "token_type": "Bearer",
                "expires_in": 2592000,
                "access_token": token,
                "refresh_token": "hsr_" + secrets.token_urlsafe(32),
            }
        )

    # ---- configuration ----------------------------------------------------------------

    @route("GET", API + r"/configuracao/status_atendimento")
    def statuses(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        rows = [
            {"id_atendimento_status": i, "descricao": d, "prefixo": p} for i, d, p, _ in STATUSES
        ]
        return Response.json({"status": "success", "msg": "ok", "status_atendimento": rows})

    @route("GET", API + r"/configuracao/tipo_atendimento")
    def ticket_types(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        rows = [{"id_tipo_atendimento": i, "descricao": d} for i, d in TICKET_TYPES]
        return Response.json(
            {"status": "success", "msg": "Dados consultados com sucesso", "tipos_atendimento": rows}
        )

    # ---- clients and tickets ----------------------------------------------------------

    @route("GET", API + r"/cliente")
    def find_client(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        if request.query.get("busca") != "cpf_cnpj":
            return _error("Tipo de busca inválido", "busca deve ser cpf_cnpj")
        term = request.query.get("termo_busca", "")
        found = [c.as_json() for c in self.clients if c.cpf_cnpj == term]
        msg = "Dados consultados com sucesso" if found else "Nenhum cliente encontrado"
        return Response.json({"status": "success", "msg": msg, "clientes": found})

    @route("POST", API + r"/atendimento")
    def open_ticket(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        try:
            body = request.json() or {}
        except ValueError:
            return _error("Requisição inválida", "corpo não é JSON")
        missing = [
            k for k in ("id_cliente_servico", "descricao", "nome", "telefone") if not body.get(k)
        ]
        if missing:
            return _error("Dados inválidos", *(f"O campo {k} é obrigatório." for k in missing))
        try:
            service_id = int(body["id_cliente_servico"])
        except (TypeError, ValueError):
            return _error("Dados inválidos", "O campo id_cliente_servico deve ser um número.")
        client = self.client_of_service(service_id)
        if client is None:
            return _error(
                "Serviço do cliente não encontrado",
                f"id_cliente_servico {service_id} não existe.",
            )
        phone = str(body["telefone"])
        if not phone.isdigit() or len(phone) not in (10, 11):
            return _error("Dados inválidos", "O campo telefone deve ter DDD + número.")
        tipo = int(body.get("id_tipo_atendimento") or DEFAULT_TICKET_TYPE)
        if tipo not in dict(TICKET_TYPES):
            return _error("Tipo de atendimento não encontrado", f"id_tipo_atendimento {tipo}")
        status = int(body.get("id_atendimento_status") or 1)
        if status not in {s[0] for s in STATUSES}:
            return _error("Status de atendimento não encontrado", f"id_atendimento_status {status}")
        parametros = body.get("parametros") or {}
        if not isinstance(parametros, dict):
            return _error("Dados inválidos", "parametros deve ser um objeto")
        ticket = self._add_ticket(
            client,
            service_id,
            f"{body['descricao']} | ATENDIMENTO ABERTO VIA API",
            id_tipo_atendimento=tipo,
            id_atendimento_status=status,
            nome=str(body["nome"]),
            telefone=phone,
            parametros=parametros,
        )
        return Response.json(
            {
                "status": "success",
                "msg": f"Atendimento aberto com sucesso. Anote o protocolo: {ticket.protocolo}.",
                "atendimento": ticket.listed(),
            }
        )

    @route("PUT", API + r"/atendimento/(?P<ident>\d+)")
    def update_ticket(self, request: Request, ident: str) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        ticket = self.tickets.get(int(ident))
        if ticket is None:
            return _error("Atendimento não encontrado", f"id_atendimento {ident}")
        body = request.json() or {}
        if "id_atendimento_status" in body:
            status = next((s for s in STATUSES if s[0] == int(body["id_atendimento_status"])), None)
            if status is None:
                return _error("Status de atendimento não encontrado")
            self.set_ticket_status(ticket.id_atendimento, status[2])
        if body.get("descricao"):
            ticket.descricao_abertura = str(body["descricao"])
        return Response.json(
            {"status": "success", "msg": "Atendimento alterado", "atendimento": ticket.listed()}
        )

    @route("POST", API + r"/atendimento/adicionar_mensagem/(?P<ident>\d+)")
    def add_message(self, request: Request, ident: str) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        ticket = self.tickets.get(int(ident))
        if ticket is None:
            return _error("Atendimento não encontrado", f"id_atendimento {ident}")
        text = str((request.json() or {}).get("mensagem") or "").strip()
        if not text:
            return _error("Dados inválidos", "O campo mensagem é obrigatório.")
        with self._data_lock:
            ticket.mensagens.append({"mensagem": text, "data": dt.datetime.now().isoformat()})
        # "suscess" (sic): the spelling of this reply in HubSoft's own documentation.
        return Response.json({"status": "suscess", "msg": "Mensagem adicionada com sucesso"})

    @route("GET", API + r"/cliente/atendimento")
    def client_tickets(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        busca = request.query.get("busca", "")
        term = request.query.get("termo_busca", "")
        try:
            limit = int(request.query.get("limit", "20"))
            start = _date(request.query.get("data_inicio"))
            end = _date(request.query.get("data_fim"))
        except ValueError as exc:
            return _error("Parâmetros inválidos", str(exc))
        if not 1 <= limit <= 50:
            return _error("Parâmetros inválidos", "limit deve estar entre 1 e 50")
        only_open = request.query.get("apenas_pendente", "sim") != "nao"
        with self._data_lock:
            tickets = sorted(self.tickets.values(), key=lambda t: t.id_atendimento, reverse=True)
        if busca == "cpf_cnpj":
            tickets = [t for t in tickets if t.client.cpf_cnpj == term]
        elif busca == "protocolo":
            tickets = [t for t in tickets if t.protocolo == term]
        elif busca == "codigo_cliente":
            tickets = [t for t in tickets if str(t.client.codigo_cliente) == term]
        else:
            return _error("Tipo de busca inválido", f"busca {busca!r}")
        tickets = [
            t
            for t in tickets
            if not (only_open and t.closed)
            and (start is None or t.data_cadastro.date() >= start)
            and (end is None or t.data_cadastro.date() <= end)
        ]
        return Response.json(
            {
                "status": "success",
                "msg": "Dados consultados com sucesso",
                "atendimentos": [t.listed() for t in tickets[:limit]],
            }
        )

    @route("GET", API + r"/atendimento/todos")
    def all_tickets(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        try:
            page = int(request.query.get("pagina", "0"))
            size = int(request.query.get("itens_por_pagina", "100"))
            start = _date(request.query.get("data_inicio"))
            end = _date(request.query.get("data_fim"))
            wanted = {
                int(s) for s in request.query.get("status_atendimento", "").split(",") if s.strip()
            }
        except ValueError as exc:
            return _error("Parâmetros inválidos", str(exc))
        if page < 0 or not 1 <= size <= 500:
            return _error("Parâmetros inválidos", "pagina >= 0 e itens_por_pagina entre 1 e 500")
        with self._data_lock:
            tickets = sorted(self.tickets.values(), key=lambda t: t.id_atendimento)
        tickets = [
            t
            for t in tickets
            if (start is None or t.data_cadastro.date() >= start)
            and (end is None or t.data_cadastro.date() <= end)
            and (not wanted or t.id_atendimento_status in wanted)
        ]
        last_page = max(0, (len(tickets) - 1) // size)
        rows = [t.raw() for t in tickets[page * size : (page + 1) * size]]
        return Response.json(
            {
                "status": "success",
                "msg": "Dados consultados com sucesso",
                "paginacao": {
                    "pagina_atual": page,
                    "ultima_pagina": last_page,
                    "total_registros": len(tickets),
                },
                "atendimentos": rows,
            }
        )

    # ---- admin (what a HubSoft agent or admin does by hand) ---------------------------

    @route("POST", r"/__admin/hubsoft/revoke")
    def admin_revoke(self, request: Request) -> Response:
        self.revoke_tokens()
        return Response.json({"ok": True})

    @route("POST", r"/__admin/hubsoft/tickets/(?P<ident>\d+)/status")
    def admin_status(self, request: Request, ident: str) -> Response:
        prefixo = str((request.json() or {}).get("prefixo", ""))
        try:
            ticket = self.set_ticket_status(int(ident), prefixo)
        except (KeyError, ValueError) as exc:
            return Response.json({"error": str(exc)}, 400)
        return Response.json(ticket.raw())

    @route("GET", r"/__admin/hubsoft/clients")
    def admin_clients(self, request: Request) -> Response:
        return Response.json([c.as_json() for c in self.clients])

    @route("POST", r"/__admin/hubsoft/tickets")
    def admin_open_ticket(self, request: Request) -> Response:
        """Open a ticket directly, as if an earlier create reached HubSoft but its reply was
        lost: ``{"id_cliente_servico", "descricao", "parametros"}``."""
        body = request.json() or {}
        client = self.client_of_service(int(body["id_cliente_servico"]))
        if client is None:
            return Response.json({"error": "unknown id_cliente_servico"}, 400)
        ticket = self._add_ticket(
            client,
            int(body["id_cliente_servico"]),
            f"{body['descricao']} | ATENDIMENTO ABERTO VIA API",
            parametros=body.get("parametros") or {},
        )
        return Response.json(ticket.listed())

    @route("GET", r"/__admin/hubsoft/tickets")
    def admin_tickets(self, request: Request) -> Response:
        with self._data_lock:
            rows = [
                t.raw() | {"parametros": t.parametros, "mensagens": t.mensagens}
                for t in self.tickets.values()
            ]
        return Response.json(rows)


def _date(value: str | None) -> dt.date | None:
    if not value:
        return None
    return dt.date.fromisoformat(value)
