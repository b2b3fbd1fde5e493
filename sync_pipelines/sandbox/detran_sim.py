"""Simulator of the DETRAN-SP e-CNHsp agenda ("Agenda Diária do Perito"), on the harness.

Written from ``contracts/detran.md``: the same URLs, form fields and detours, pages in
ISO-8859-1 (gzip when asked), every state answered with HTTP 200 and told apart only by the
HTML. Knobs for what goes wrong on the real site:

- ``session_idle_seconds`` (1800): a session unused that long answers with the login page;
  ``advance_clock(s)`` moves the simulator's clock, ``expire_sessions()`` drops them all;
- every login page (the first one, the refused login, both detours, the unit choice)
  carries the hidden markup of ALL the dialogs the portal might open and the functions that
  open them, as the real page does: "Já existe uma sessão aberta" is on every one of them.
  Only the script's call (``openDialogNewSession(...)`` / ``openDialogChoice(...)``) says
  which dialog opened;
- one open session per examiner: a second login gets the new-session dialog until it
  sends ``forceLogout=true`` (``open_session_elsewhere(cpf)`` plays the examiner's browser);
- an examiner with several units gets the unit-choice dialog and works at one unit a day
  (``PortalUser.schedule``: ISO weekday → unit); the session belongs to the chosen unit and
  only that unit can be queried;
- a wrong password gets the login form back with the portal's error text and no dialog;
  ``password_posts`` counts the passwords posted per CPF;
- booking rows in valid but sloppy HTML 4: cells and rows without ``</td>``/``</tr>``,
  capital tags, unquoted attributes, ``&nbsp;`` padding and accents as character
  references; ``garble_booking`` makes one row unreadable (a bad time, or missing cells);
- ``columns_reordered``: ``table#agenda`` columns in another order (the site has done it);
- ``broken_pages``: the next N agenda queries answer a maintenance page (neither form);
- ``expire_next_queries``: the next N agenda queries find their session gone (login page);
- admin calls to add, move and cancel bookings (Python methods, or ``POST
  /__admin/detran/bookings`` with ``{"action": "add"|"move"|"cancel", ...}``), and ``POST
  /__admin/detran/config`` for the knobs.

Bookings are generated per (examiner, unit, day) from the seed the first time that day is
asked for, so any window of dates has deterministic, realistic fake candidates (valid CPF
check digits, Brazilian names, mobile phones, e-mails, "NÃO INFORMADO" cells).
"""

from __future__ import annotations

import datetime as dt
import gzip
import html
import random
import secrets
import time
import unicodedata
from dataclasses import dataclass
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

from .harness import Request, Response, Simulator, route

CHARSET = "iso-8859-1"
PORTAL_TZ = ZoneInfo("America/Sao_Paulo")
NOT_INFORMED = "NÃO INFORMADO"
COLUMNS = [
    ("hora", "Hora"),
    ("cpf", "CPF"),
    ("nome", "Nome"),
    ("telefone", "Telefone"),
    ("email", "E-mail"),
    ("tipo_processo", "Tipo de Processo"),
    ("categoria", "Categoria"),
    ("status_exame_medico", "Status do Exame Médico"),
    ("status_exame_psicologico", "Status do Exame Psicológico"),
]
REORDERED = [2, 0, 6, 1, 4, 3, 8, 7, 5]  # Nome | Hora | Categoria | CPF | E-mail | ...

FIRST_NAMES = [
    "Ana", "João", "Maria", "José", "Francisca", "Antônio", "Adriana", "Carlos", "Juliana",
    "Paulo", "Márcia", "Lucas", "Fernanda", "Luiz", "Patrícia", "Gabriel", "Aline", "Rafael",
    "Sônia", "Matheus", "Camila", "Pedro", "Letícia", "Thiago", "Bruna", "Felipe", "Conceição",
]  # fmt: skip
SURNAMES = [
    "Silva", "Santos", "Oliveira", "Souza", "Rodrigues", "Ferreira", "Alves", "Pereira",
    "Lima", "Gomes", "Ribeiro", "Carvalho", "Araújo", "Melo", "Barbosa", "Conceição",
    "Gonçalves", "Assunção", "Magalhães", "Nogueira", "Brandão", "Simões",
]  # fmt: skip
EMAIL_DOMAINS = ["gmail.com", "hotmail.com", "outlook.com", "uol.com.br", "bol.com.br"]
AREA_CODES = ["11", "11", "11", "12", "13", "14", "15", "16", "17", "18", "19"]
PROCESS_TYPES = [
    "PRIMEIRA HABILITAÇÃO", "RENOVAÇÃO", "ADIÇÃO DE CATEGORIA", "MUDANÇA DE CATEGORIA",
    "REABILITAÇÃO",
]  # fmt: skip
CATEGORIES = ["A", "B", "AB", "AC", "AD", "AE", "C", "D", "E", "ACC"]
EXAM_STATUSES = ["AGENDADO", "AGENDADO", "AGENDADO", "APTO", "INAPTO TEMPORÁRIO", NOT_INFORMED]


def cpf_check_digits(base9: str) -> str:
    digits = [int(d) for d in base9]
    for size in (9, 10):
        total = sum(d * w for d, w in zip(digits, range(size + 1, 1, -1), strict=False))
        rest = (total * 10) % 11
        digits.append(0 if rest == 10 else rest)
    return "".join(str(d) for d in digits[9:])


def fake_cpf(rng: random.Random) -> str:
    base = "".join(str(rng.randint(0, 9)) for _ in range(9))
    full = base + cpf_check_digits(base)
    return f"{full[:3]}.{full[3:6]}.{full[6:9]}-{full[9:]}"


def _ascii(text: str) -> str:
    return "".join(
        c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)
    ).lower()


def fake_candidate(rng: random.Random) -> dict[str, str]:
    first, last, other = rng.choice(FIRST_NAMES), rng.choice(SURNAMES), rng.choice(SURNAMES)
    name = f"{first} {other} {last}".upper()
    phone = f"({rng.choice(AREA_CODES)}) 9{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}"
    email = f"{_ascii(first)}.{_ascii(last)}{rng.randint(1, 99)}@{rng.choice(EMAIL_DOMAINS)}"
    return {
        "cpf": fake_cpf(rng),
        "nome": name,
        "telefone": phone if rng.random() > 0.1 else NOT_INFORMED,
        "email": email if rng.random() > 0.35 else NOT_INFORMED,
        "tipo_processo": rng.choice(PROCESS_TYPES),
        "categoria": rng.choice(CATEGORIES),
        "status_exame_medico": rng.choice(EXAM_STATUSES),
        "status_exame_psicologico": rng.choice(EXAM_STATUSES),
    }


@dataclass
class PortalUser:
    cpf: str  # 000.000.000-00, as the login form sends it
    password: str
    code: str  # idUsuarioMedicoConsulta (5 characters)
    profession: str  # "medico" | "psicologo"
    units: dict[str, str]  # idUnidTransito -> label
    name: str = ""
    # ISO weekday -> the unit the examiner works at that day (several units only); a unit
    # has no generated bookings on the other days.
    schedule: dict[int, str] | None = None

    def works_at(self, unit: str, day: dt.date) -> bool:
        if self.schedule is None or len(self.units) < 2:
            return True
        return self.schedule.get(day.isoweekday()) == unit


# The dialogs of the login page, hidden until a script opens one; every login page has them.
HIDDEN_DIALOGS = (
    '<div id="dialogNewSession" title="Atenção" style="display:none">'
    "<p>Já existe uma sessão aberta. Deseja encerrá-la e continuar?</p>"
    '<button type="button" onclick="openDialogNewSession(); confirmarNovaSessao()">Sim</button>'
    "</div>"
    '<div id="dialogChoice" class="ui-dialog-content" style="display:none">'
    "<p>Você está vinculado a mais de uma unidade de trânsito.</p>"
    '<h3>Selecione a unidade de trânsito</h3><div id="conteudoChoice"></div></div>'
    '<div id="dialogMensagem" hidden><p>Sessão expirada. Acesse novamente.</p></div>'
    '<script type="text/javascript">\n'
    "// openDialogNewSession(msg) and openDialogChoice() are called by the server when needed\n"
    "function openDialogNewSession(msg) { $('#dialogNewSession').dialog('open'); }\n"
    "function openDialogChoice() { $('#conteudoChoice').load("
    "'login.do?method=openChoice&autenticadoCyberark=false');"
    " $('#dialogChoice').dialog('open'); }\n"
    "function confirmarNovaSessao() { document.forms[0].forceLogout.value = 'true'; }\n"
    "</script>"
)


@dataclass
class _Session:
    sid: str
    last_seen: float
    cpf: str | None = None  # set once authenticated
    unit: str | None = None
    pending_cpf: str | None = None  # passed the password, waiting for the unit choice


class DetranPortalSimulator(Simulator):
    name = "detran"

    def __init__(
        self,
        seed: int = 0,
        *,
        session_idle_seconds: float = 1800.0,
        columns_reordered: bool = False,
        broken_pages: int = 0,
        bookings_per_day: tuple[int, int] = (0, 8),
        users: list[PortalUser] | None = None,
        faults: dict | None = None,
    ) -> None:
        super().__init__(seed=seed, faults=faults)
        self.session_idle_seconds = session_idle_seconds
        self.columns_reordered = columns_reordered
        self.broken_pages = broken_pages
        self.expire_next_queries = 0
        self.bookings_per_day = bookings_per_day
        self.users: dict[str, PortalUser] = {u.cpf: u for u in users or []}
        self.password_posts: dict[str, int] = {}  # CPF -> passwords posted to autenticar
        self.helper_references: list[str] = []  # dataReferencia of each JSON helper call
        self._clock_offset = 0.0
        self._sessions: dict[str, _Session] = {}
        self._days: dict[tuple[str, str, dt.date], list[dict[str, str]]] = {}

    # ---- Python admin API -----------------------------------------------------------

    def add_user(self, user: PortalUser) -> PortalUser:
        with self._lock:
            self.users[user.cpf] = user
        return user

    def now(self) -> float:
        return time.monotonic() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        with self._lock:
            self._clock_offset += seconds

    def expire_sessions(self) -> None:
        with self._lock:
            self._sessions.clear()

    def open_session_elsewhere(self, cpf: str) -> None:
        """The examiner logs in from a browser: our session is displaced."""
        user = self.users[cpf]
        with self._lock:
            self._end_sessions_of(cpf)
            sid = secrets.token_hex(16).upper()
            self._sessions[sid] = _Session(sid, self.now(), cpf=cpf, unit=next(iter(user.units)))

    def bookings(self, code: str, unit: str, day: dt.date) -> list[dict[str, str]]:
        """The day's bookings (generated on first use), ordered by time."""
        with self._lock:
            key = (code, unit, day)
            if key not in self._days:
                self._days[key] = self._generate(code, unit, day)
            return self._days[key]

    def add_booking(self, code: str, unit: str, day: dt.date, hora: str, **fields: str) -> dict:
        rng = random.Random(f"{self.seed}-add-{code}-{unit}-{day}-{hora}-{len(self._days)}")
        booking = {**fake_candidate(rng), **fields, "hora": hora}
        with self._lock:
            day_list = self.bookings(code, unit, day)
            day_list.append(booking)
            day_list.sort(key=lambda b: b["hora"])
        return booking

    def edit_booking(self, code: str, unit: str, day: dt.date, cpf: str, **fields: str) -> dict:
        """The portal corrects a booking in place (a name, a phone...)."""
        with self._lock:
            for booking in self.bookings(code, unit, day):
                if booking["cpf"] == cpf:
                    booking.update(fields)
                    return booking
        raise KeyError(f"no booking for that CPF on {day}")

    def garble_booking(
        self, code: str, unit: str, day: dt.date, cpf: str, how: str = "time"
    ) -> dict:
        """Make one booking's row unreadable: ``time`` (a time that is not HH:MM) or
        ``cells`` (a row with cells missing)."""
        if how not in ("time", "cells"):
            raise ValueError("how must be 'time' or 'cells'")
        return self.edit_booking(code, unit, day, cpf, _garbled=how)

    def cancel_booking(self, code: str, unit: str, day: dt.date, cpf: str) -> dict:
        with self._lock:
            day_list = self.bookings(code, unit, day)
            for i, booking in enumerate(day_list):
                if booking["cpf"] == cpf:
                    return day_list.pop(i)
        raise KeyError(f"no booking for that CPF on {day}")

    def move_booking(
        self, code: str, unit: str, day: dt.date, cpf: str, new_day: dt.date, new_hora: str
    ) -> dict:
        with self._lock:
            booking = self.cancel_booking(code, unit, day, cpf)
            booking = {**booking, "hora": new_hora}
            target = self.bookings(code, unit, new_day)
            target.append(booking)
            target.sort(key=lambda b: b["hora"])
        return booking

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.password_posts.clear()
            self.helper_references.clear()
            self._sessions.clear()
            self._days.clear()
            self.columns_reordered = False
            self.broken_pages = 0
            self.expire_next_queries = 0
            self._clock_offset = 0.0

    def _generate(self, code: str, unit: str, day: dt.date) -> list[dict[str, str]]:
        rng = random.Random(f"{self.seed}-{code}-{unit}-{day.isoformat()}")
        if day.weekday() == 6:
            return []
        user = next((u for u in self.users.values() if u.code == code), None)
        if user is not None and not user.works_at(unit, day):
            return []
        low, high = self.bookings_per_day
        count = rng.randint(low, high) if day.weekday() < 5 else rng.randint(0, 2)
        slots = sorted(rng.sample(range(7 * 3, 17 * 3), count))  # 20-minute grid 07:00-17:00
        return [{**fake_candidate(rng), "hora": f"{s // 3:02d}:{(s % 3) * 20:02d}"} for s in slots]

    # ---- HTTP admin -----------------------------------------------------------------

    @route("POST", r"/__admin/detran/bookings")
    def _admin_bookings(self, request: Request) -> Response:
        body = request.json() or {}
        day = dt.date.fromisoformat(body["date"])
        action = body.get("action")
        try:
            if action == "add":
                extra = {k: v for k, v in body.get("fields", {}).items()}
                booking = self.add_booking(body["code"], body["unit"], day, body["hora"], **extra)
            elif action == "cancel":
                booking = self.cancel_booking(body["code"], body["unit"], day, body["cpf"])
            elif action == "move":
                booking = self.move_booking(
                    body["code"],
                    body["unit"],
                    day,
                    body["cpf"],
                    dt.date.fromisoformat(body["new_date"]),
                    body["new_hora"],
                )
            else:
                return Response.json({"error": "action must be add, move or cancel"}, 400)
        except KeyError as exc:
            return Response.json({"error": str(exc)}, 404)
        return Response.json(booking)

    @route("GET", r"/__admin/detran/bookings")
    def _admin_list(self, request: Request) -> Response:
        q = request.query
        return Response.json(self.bookings(q["code"], q["unit"], dt.date.fromisoformat(q["date"])))

    @route("POST", r"/__admin/detran/config")
    def _admin_config(self, request: Request) -> Response:
        body = request.json() or {}
        with self._lock:
            for knob in (
                "session_idle_seconds",
                "columns_reordered",
                "broken_pages",
                "expire_next_queries",
            ):
                if knob in body:
                    setattr(self, knob, body[knob])
            if body.get("expire_sessions"):
                self._sessions.clear()
        return Response.json(
            {
                "session_idle_seconds": self.session_idle_seconds,
                "columns_reordered": self.columns_reordered,
                "broken_pages": self.broken_pages,
            }
        )

    # ---- sessions -------------------------------------------------------------------

    def _session(self, request: Request) -> _Session | None:
        sid = request.cookies().get("JSESSIONID")
        with self._lock:
            sess = self._sessions.get(sid or "")
            if sess is None:
                return None
            if self.now() - sess.last_seen > self.session_idle_seconds:
                del self._sessions[sess.sid]
                return None
            sess.last_seen = self.now()
            return sess

    def _new_session(self) -> _Session:
        sess = _Session(secrets.token_hex(16).upper(), self.now())
        self._sessions[sess.sid] = sess
        return sess

    def _end_sessions_of(self, cpf: str) -> None:
        for sid in [s.sid for s in self._sessions.values() if s.cpf == cpf]:
            del self._sessions[sid]

    def _open_elsewhere(self, cpf: str, mine: _Session) -> bool:
        now = self.now()
        return any(
            s.cpf == cpf and s is not mine and now - s.last_seen <= self.session_idle_seconds
            for s in self._sessions.values()
        )

    # ---- pages ----------------------------------------------------------------------

    def _page(self, request: Request, body: str, sid: str | None = None) -> Response:
        text = (
            '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01 Transitional//EN">\n<html><head>'
            f'<meta http-equiv="Content-Type" content="text/html; charset={CHARSET.upper()}">'
            f"<title>e-CNHsp</title></head><body>{body}</body></html>"
        )
        reply = Response.html(text, charset=CHARSET)
        if sid:
            reply.headers["Set-Cookie"] = f"JSESSIONID={sid}; Path=/gefor; HttpOnly"
        if "gzip" in (request.header("accept-encoding") or ""):
            reply.body = gzip.compress(reply.body)
            reply.headers["Content-Encoding"] = "gzip"
        return reply

    @staticmethod
    def _form(request: Request) -> dict[str, str]:
        # A servlet container of this age decodes form bodies as ISO-8859-1.
        pairs = parse_qs(
            request.body.decode("ascii", "replace"), keep_blank_values=True, encoding=CHARSET
        )
        return {k: v[0] for k, v in pairs.items()}

    def _login_form_page(self, request: Request, message: str = "", opens: str = "") -> Response:
        """The agenda login page; ``opens`` is the dialog call its script makes, if any."""
        error = f'<div class="erro">{html.escape(message)}</div>' if message else ""
        script = f"<script>$(document).ready(function() {{ {opens}; }});</script>" if opens else ""
        body = (
            "<h2>Acesso à Agenda Diária do Perito</h2>"
            f"{HIDDEN_DIALOGS}{error}{script}"
            '<form name="LoginActionForm" method="post" action="/gefor/SGU/login.do">'
            '<input type="hidden" name="method" value="autenticar">'
            '<input type="hidden" name="forceLogout" value="false">'
            '<input type="hidden" name="idUnidTransito" value="-1">'
            'CPF: <input type="text" name="codigo" value="">'
            'Senha: <input type="password" name="senha" value="">'
            '<input type="submit" value="Entrar"></form>'
        )
        return self._page(request, body)

    def _search_form(self, user: PortalUser, unit: str, day: dt.date | None, method: str) -> str:
        options = "".join(
            f'<option value="{uid}"{" selected" if uid == unit else ""}>{html.escape(label)}</option>'
            for uid, label in user.units.items()
            if uid == unit
        )
        reference = day or dt.datetime.now(PORTAL_TZ).date()
        dates = [
            reference + dt.timedelta(days=i)
            for i in range(8)
            if self.bookings(user.code, unit, reference + dt.timedelta(days=i))
        ]
        date_options = '<option value="">- SELECIONE -</option>' + "".join(
            f'<option value="{d:%d/%m/%Y}"{" selected" if d == day else ""}>{d:%d/%m/%Y}</option>'
            for d in dates
        )
        return (
            '<form name="DivisaoEquitativaForm" method="POST" '
            'action="/gefor/GFR/divisao/divisaoEquitativa.do">'
            f'<input type="hidden" name="method" value="{method}">'
            f'<select name="idUnidadeTransitoConsulta">{options}</select>'
            f'<input type="hidden" name="idUsuarioMedicoConsulta" value="{user.code}">'
            f'<input type="text" name="dataReferencia" value="{reference:%d/%m/%Y}">'
            f'<select name="data" id="agendamentos">{date_options}</select>'
            '<input type="button" value="Pesquisar"></form>'
        )

    def _home_page(self, request: Request, user: PortalUser, unit: str, sid: str) -> Response:
        who = "Psicólogo" if user.profession == "psicologo" else "Médico"
        method = (
            "consultarAgendaPsicologo"
            if user.profession == "psicologo"
            else "consultarAgendaMedico"
        )
        body = (
            f"<div id='cabecalho'>Bem-vindo(a), {html.escape(user.name or user.code)}"
            " - sessão expira em <span id='contador'>30:00</span></div>"
            f'<a href="#" onclick="imprimir()">Imprimir Agenda Diária do {who}</a>'
            + self._search_form(user, unit, None, method)
        )
        return self._page(request, body, sid)

    def _result_page(self, request: Request, user: PortalUser, unit: str, day: dt.date) -> Response:
        who = "Psicólogo" if user.profession == "psicologo" else "Médico"
        rows = self.bookings(user.code, unit, day)
        order = [COLUMNS[i] for i in REORDERED] if self.columns_reordered else COLUMNS
        table = ""
        if rows:
            head = "".join(f'<th class="list_titulo">{html.escape(t)}</th>' for _, t in order)
            body_rows = "".join(_row_markup(i, r, order) for i, r in enumerate(rows))
            # No </tbody>: the table's end closes it, as HTML allows.
            table = (
                '<table id="agenda" class="list"><thead><tr>'
                f"{head}</tr></thead><TBODY>{body_rows}</table>"
            )
        else:
            table = "<p>Nenhum agendamento encontrado para a data informada.</p>"
        body = (
            f'<a href="#" onclick="imprimir()">Imprimir Agenda Diária do {who}</a>'
            + self._search_form(user, unit, day, "agendaMedico")
            + f"<fieldset><legend>Resultado</legend>{table}</fieldset>"
        )
        return self._page(request, body)

    # ---- portal routes ---------------------------------------------------------------

    @route("GET", r"/gefor/SGU/login\.do")
    def login_get(self, request: Request) -> Response:
        method = request.query.get("method", "")
        with self._lock:
            if method == "iniciarLogin":
                sess = self._new_session()
                body = (
                    f"<h2>e-CNHsp</h2>{HIDDEN_DIALOGS}<form name='LoginActionForm' "
                    "method='post' action='/gefor/SGU/login.do'><input type='hidden' "
                    "name='method' value='iniciarLogin'><a href='#'>Continuar</a></form>"
                )
                return self._page(request, body, sess.sid)
            sess = self._session(request)
            if method == "openChoice":
                if sess is None or sess.pending_cpf is None:
                    return self._login_form_page(request, "Sessão expirada.")
                user = self.users[sess.pending_cpf]
                options = '<option value="-1">- SELECIONE -</option>' + "".join(
                    f'<option value="{uid}">{html.escape(label)}</option>'
                    for uid, label in user.units.items()
                )
                return self._page(
                    request,
                    f"{HIDDEN_DIALOGS}<h3>Selecione a unidade de trânsito</h3>"
                    f'<select name="idUnidTransito">{options}</select>',
                )
            if method == "finalizarLogin":
                if sess is not None:
                    self._sessions.pop(sess.sid, None)
                return self._login_form_page(request, "Sessão finalizada.")
        return self._login_form_page(request)

    @route("POST", r"/gefor/SGU/login\.do")
    def login_post(self, request: Request) -> Response:
        form = self._form(request)
        method = form.get("method")
        with self._lock:
            sess = self._session(request)
            if sess is None:
                return self._login_form_page(request, "Sessão expirada. Acesse novamente.")
            if method == "iniciarLoginAgenda":
                return self._login_form_page(request)
            if method != "autenticar":
                return self._login_form_page(request, "Operação inválida.")
            codigo = form.get("codigo", "")
            if form.get("senha"):
                self.password_posts[codigo] = self.password_posts.get(codigo, 0) + 1
            user = self.users.get(codigo)
            if user is None or form.get("senha") != user.password:
                return self._login_form_page(request, "Usuário ou senha inválidos.")
            if self._open_elsewhere(user.cpf, sess) and form.get("forceLogout") != "true":
                return self._login_form_page(
                    request, "", "openDialogNewSession('Já existe uma sessão aberta.')"
                )
            unit = form.get("idUnidTransito", "-1")
            if len(user.units) > 1 and unit == "-1":
                sess.pending_cpf = user.cpf
                return self._login_form_page(request, "", "openDialogChoice()")
            if len(user.units) == 1:
                unit = next(iter(user.units))
            if unit not in user.units:
                return self._login_form_page(request, "Unidade de trânsito inválida.")
            self._end_sessions_of(user.cpf)
            self._sessions.pop(sess.sid, None)
            fresh = self._new_session()  # a new id after login, as servlet containers do
            fresh.cpf, fresh.unit = user.cpf, unit
            return self._home_page(request, user, unit, fresh.sid)

    @route("POST", r"/gefor/GFR/divisao/divisaoEquitativa\.do")
    def agenda(self, request: Request) -> Response:
        form = self._form(request)
        with self._lock:
            sess = self._session(request)
            querying = form.get("method", "").startswith("consultarAgenda")
            if sess is not None and querying and self.expire_next_queries > 0:
                self.expire_next_queries -= 1
                self._sessions.pop(sess.sid, None)
                sess = None
            if sess is None or sess.cpf is None:
                # An expired session gets the portal's first page again, as a 200.
                return self._login_form_page(request, "Sua sessão expirou.")
            user = self.users[sess.cpf]
            method = form.get("method", "")
            if method == "refreshAgendaMedicaByMedico":
                self.helper_references.append(form.get("dataReferencia", ""))
                day = _parse_day(form.get("dataReferencia")) or dt.datetime.now(PORTAL_TZ).date()
                dates = [
                    day + dt.timedelta(days=i)
                    for i in range(8)
                    if self.bookings(user.code, sess.unit or "", day + dt.timedelta(days=i))
                ]
                return Response.json(
                    [{"value": f"{d:%d/%m/%Y}", "label": f"{d:%d/%m/%Y}"} for d in dates]
                )
            if self.broken_pages > 0:
                self.broken_pages -= 1
                return self._page(
                    request,
                    "<h1>Sistema temporariamente indisponível</h1><p>Tente novamente mais tarde.</p>",
                )
            if method not in ("consultarAgendaMedico", "consultarAgendaPsicologo"):
                return self._login_form_page(request, "Operação inválida.")
            day = _parse_day(form.get("data")) or _parse_day(form.get("dataReferencia"))
            unit = form.get("idUnidadeTransitoConsulta") or sess.unit or ""
            if day is None or unit != sess.unit or form.get("idUsuarioMedicoConsulta") != user.code:
                return self._login_form_page(request, "Parâmetros inválidos.")
            return self._result_page(request, user, unit, day)


def _row_markup(index: int, booking: dict[str, str], order: list[tuple[str, str]]) -> str:
    """One booking row, in one of the sloppy but valid spellings the portal uses: odd rows
    omit every ``</td>`` and ``</tr>``, use capital tags, unquoted attributes and character
    references for accents; even rows are tidy but pad cells with ``&nbsp;``."""
    garbled = booking.get("_garbled")
    cells = [(key, booking[key]) for key, _ in order]
    if garbled == "time":
        cells = [(k, "--:--" if k == "hora" else v) for k, v in cells]
    elif garbled == "cells":
        cells = [(k, v) for k, v in cells if k in ("hora", "cpf", "nome")]
    if index % 2:
        refs = [html.escape(v).encode("ascii", "xmlcharrefreplace").decode() for _, v in cells]
        return "<TR class=list_linha>" + "".join(f"<TD class=list_linha>{v}\n" for v in refs)
    return (
        '<tr class="list_linha2">'
        + "".join(f'<td class="list_linha">&nbsp;{html.escape(v)}&nbsp;</td>' for _, v in cells)
        + "</tr>"
    )


def _parse_day(text: str | None) -> dt.date | None:
    try:
        return dt.datetime.strptime((text or "").strip(), "%d/%m/%Y").date()
    except ValueError:
        return None
