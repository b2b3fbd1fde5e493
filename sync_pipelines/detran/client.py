"""The e-CNHsp portal client: the agenda login with its detours, one query per day, logout.

Plain HTTP on ``lib/http.HttpClient`` (one keep-alive ``requests.Session``; the site's WAF
resets new TLS connections) and lxml's HTML parser (``parse.py``). Pages are ISO-8859-1 and
always HTTP 200, so every state is read from the HTML (see ``contracts/detran.md``):

- ``login(unit)``: ``iniciarLogin`` → ``iniciarLoginAgenda`` → ``autenticar``. The login page
  carries the hidden markup of every dialog, so only the script's call decides:
  ``openDialogNewSession(`` → ``autenticar`` again with ``forceLogout=true``;
  ``openDialogChoice(`` → ``openChoice`` and ``autenticar`` again with the unit asked for
  (every offered unit is kept in ``context.units``); neither call and the login form =
  ``WrongCredentials`` (the password was posted once; never retried: the portal locks
  accounts).
- ``fetch_day(date)``: ``DayAgenda`` of the logged-in unit with its bookings (rows that
  cannot be read are listed, never dropped silently), or with none when the search form
  answers for that day without a table; ``SessionExpired`` when the login form comes back;
  ``UnrecognisedPage`` for anything else, with the page saved (PII-masked) for diagnosis.
  An unrecognised page is never "no bookings": that is what used to mark whole days removed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

import lxml.html

from ..lib.http import HttpClient, RetryPolicy
from ..lib.redact import install_log_redaction, mask_cpf, redact, register_secret
from .parse import (
    DIALOG_NEW_SESSION,
    DIALOG_UNIT_CHOICE,
    LOGIN_FORM,
    SEARCH_FORM,
    Page,
    PageFormatError,
    UnreadableRow,
    normalize_text,
    parse_document,
    parse_page,
    read_agenda_table,
)

log = logging.getLogger("sync_pipelines.detran.client")
install_log_redaction("sync_pipelines.detran")

DEFAULT_PORTAL_URL = "https://www.e-cnhsp.sp.gov.br"
LOGIN_PATH = "/gefor/SGU/login.do"
AGENDA_PATH = "/gefor/GFR/divisao/divisaoEquitativa.do"
HTML_CHARSET = "iso-8859-1"
BROWSER_HEADERS = {
    "User-Agent": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0 Safari/537.36"
    ),
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "pt-BR,pt;q=0.9,en;q=0.5",
}
SUCCESS_MARKERS = ("imprimir agenda diaria do psicologo", "imprimir agenda diaria do medico")
PROFESSION_METHODS = {"medico": "consultarAgendaMedico", "psicologo": "consultarAgendaPsicologo"}
PORTAL_TZ = ZoneInfo("America/Sao_Paulo")


class PortalError(RuntimeError):
    """Something the portal answered that the sync cannot use. Messages hold no PII."""

    retryable = True


class WrongCredentials(PortalError):
    """The portal refused the CPF/password: retrying would only risk locking the account."""

    retryable = False


class UnitNotAvailable(PortalError):
    """The examiner works at several units and the one asked for is not among them."""

    retryable = False


class SessionExpired(PortalError):
    """The portal answered with its login form: the session is gone (idle, or logged out)."""


class UnrecognisedPage(PortalError):
    """A page that is neither the agenda, nor the search form, nor the login form."""

    def __init__(self, message: str, saved_to: Path | None = None) -> None:
        self.saved_to = saved_to
        if saved_to is not None:
            message += f" (page saved for diagnosis, PII masked: {saved_to})"
        super().__init__(message)


@dataclass(frozen=True)
class Credentials:
    cpf: str  # digits or 000.000.000-00
    password: str
    profession: str  # "medico" | "psicologo"
    unit: str | None = None  # idUnidTransito to choose when the portal offers several

    @property
    def cpf_formatted(self) -> str:
        digits = re.sub(r"\D", "", self.cpf)
        if len(digits) != 11:
            raise ValueError(f"examiner CPF must have 11 digits (got {len(digits)})")
        return f"{digits[:3]}.{digits[3:6]}.{digits[6:9]}-{digits[9:]}"

    def __repr__(self) -> str:  # never print the password or the CPF
        return f"Credentials(cpf={mask_cpf(self.cpf)!r}, profession={self.profession!r})"


@dataclass
class AgendaContext:
    """What the logged-in page's search form says; kept with cached cookies."""

    method: str
    unit_code: str
    examiner_code: str  # idUsuarioMedicoConsulta
    unit_label: str = ""
    # Every unit the examiner works at (idUnidTransito -> label), as the unit choice offered
    # them at login, or the one unit of the search form. Empty: not known (a session cached
    # before units were recorded), so the caller logs in again to learn them.
    units: dict[str, str] = field(default_factory=dict)


@dataclass
class DayAgenda:
    date: dt.date
    unit_code: str
    bookings: list[dict] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    unknown_columns: list[str] = field(default_factory=list)
    unit_label: str = ""
    # Rows of the table that could not be read: the day proves nothing about what is gone.
    unreadable: list[UnreadableRow] = field(default_factory=list)
    row_numbers: list[int] = field(default_factory=list)  # table row of each booking


@dataclass(frozen=True)
class PortalSettings:
    base_url: str = DEFAULT_PORTAL_URL
    diagnostics_dir: Path = Path(".diagnostics/detran")
    timeout: tuple[float, float] = (10.0, 60.0)
    retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(max_attempts=3, base_backoff=1.0, max_backoff=8.0)
    )


# Text kept readable in saved pages: labels and headings say which page it was; every other
# text (cells, the welcome line with the examiner's name, messages) is masked.
_READABLE_TAGS = {"th", "legend", "title", "h1", "h2", "h3", "h4", "label", "option", "a"}
_TECHNICAL_INPUTS = {
    "method",
    "forceLogout",
    "alteraSenha",
    "consultaAgenda",
    "autenticadoCyberark",
}
_WORD_TAIL = re.compile(r"(?<=[^\W\d_])[^\W\d_]+")


def _mask_words(text: str | None) -> str | None:
    """Each word reduced to its first letter: "HELENA PRADO" → "H***** P****"."""
    return _WORD_TAIL.sub(lambda w: "*" * len(w[0]), text) if text else text


def mask_page(html: str) -> str:
    """A page fit to keep on disk: names and other free text reduced to first letters, then
    CPFs, phones, e-mails and secrets masked by ``lib/redact``. Markup stays readable.

    Parsed with lxml, so a cell without ``</td>`` is masked like any other."""
    doc = parse_document(html)
    for element in doc.iter():
        if not isinstance(element.tag, str):  # comments, processing instructions
            element.text = _mask_words(element.text)
            element.tail = _mask_words(element.tail)
            continue
        if element.tag in ("script", "style"):
            pass
        elif element.tag not in _READABLE_TAGS:
            element.text = _mask_words(element.text)
        parent = element.getparent()
        if parent is not None and parent.tag not in _READABLE_TAGS:
            element.tail = _mask_words(element.tail)
        if element.tag in ("input", "textarea") and element.get("name") not in _TECHNICAL_INPUTS:
            if element.get("value"):
                element.set("value", _mask_words(element.get("value")))
    return redact(lxml.html.tostring(doc, encoding="unicode"))


class PortalClient:
    """One examiner's session on the portal. Not thread-safe; one per run."""

    def __init__(
        self,
        settings: PortalSettings,
        credentials: Credentials,
        *,
        http: HttpClient | None = None,
    ) -> None:
        self.settings = settings
        self.credentials = credentials
        register_secret(credentials.password)
        self.http = http or HttpClient(
            settings.base_url,
            headers=BROWSER_HEADERS,
            timeout=settings.timeout,
            retry=settings.retry,
        )
        self.http.session.headers.update(BROWSER_HEADERS)
        self.context: AgendaContext | None = None
        self.logins = 0
        self.pages_saved: list[Path] = []

    # ---- transport ------------------------------------------------------------------

    def _origin(self) -> str:
        parts = urlsplit(self.http.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    def _get(self, path: str, params: dict[str, str]) -> Page:
        response = self.http.request("GET", path, params=params, expected=(200,))
        return parse_page(_decode(response))

    def _post(self, path: str, fields: list[tuple[str, str]], *, referer: str) -> Page:
        # Java servlets of this age read forms as ISO-8859-1; encoding the body ourselves
        # keeps an accented password intact and the field order (``codigo`` twice) exact.
        body = urlencode(fields, encoding=HTML_CHARSET)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": self._origin(),
            "Referer": self.http.url(referer),
        }
        response = self.http.request(
            "POST", path, data=body, headers=headers, retry_safe=True, expected=(200,)
        )
        return parse_page(_decode(response))

    # ---- login ----------------------------------------------------------------------

    def _autenticar_fields(self, *, force_logout: bool, unit: str) -> list[tuple[str, str]]:
        return [
            ("method", "autenticar"),
            ("novaSenha", ""),
            ("novaSenha1", ""),
            ("alteraSenha", "false"),
            ("idGrupoUsuario", "-1"),
            ("idCFC", ""),
            ("idUnidTransito", unit),
            ("msgPublicacao", ""),
            ("consultaAgenda", "true"),
            ("autenticadoCyberark", "false"),
            ("codigo", self.credentials.cpf_formatted),
            ("senha", self.credentials.password),
            ("forceLogout", "true" if force_logout else "false"),
        ]

    def login(self, unit: str | None = None) -> AgendaContext:
        """Log in to the agenda and return its search context. Raises ``WrongCredentials``,
        ``UnitNotAvailable`` or ``UnrecognisedPage``.

        ``unit``: the idUnidTransito to choose when the portal asks (several units); default
        the configured unit, else the first one offered. ``context.units`` lists them all.

        Which detour the portal took is read from the ``openDialog…(`` call of its script,
        never from a dialog's text: the login page carries the hidden markup of every
        dialog. The password is posted again only when a detour asks for it, so a refused
        password is posted once (the portal locks accounts after a few)."""
        self._offered: dict[str, str] = {}
        self.http.session.cookies.clear()
        self._get(LOGIN_PATH, {"method": "iniciarLogin"})
        start_fields = [
            ("method", "iniciarLoginAgenda"),
            ("isCyberark", ""),
            ("codigo", ""),
            ("senha", ""),
            ("autenticadoCyberark", "false"),
            ("cpfStorage", ""),
            ("novaSenha", ""),
            ("novaSenha1", ""),
            ("alteraSenha", "false"),
            ("idGrupoUsuario", "-1"),
            ("idCFC", ""),
            ("idUnidTransito", "-1"),
            ("msgPublicacao", ""),
            ("forceLogout", "false"),
            ("codigo", ""),
        ]
        page = self._post(LOGIN_PATH, start_fields, referer=LOGIN_PATH)
        if page.form(LOGIN_FORM) is None:
            raise self._unrecognised(page, "login", "the agenda login form did not appear")
        force_logout, chosen = False, "-1"
        # At most: session open → force, several units → choose, then success.
        for _ in range(4):
            page = self._post(
                LOGIN_PATH,
                self._autenticar_fields(force_logout=force_logout, unit=chosen),
                referer=LOGIN_PATH,
            )
            if self._logged_in(page):
                self.logins += 1
                self.context = self._context_from(page)
                log.info(
                    "logged in to the agenda as %s (unit %s)",
                    mask_cpf(self.credentials.cpf),
                    self.context.unit_code,
                )
                return self.context
            opened = page.dialogs_opened
            if DIALOG_NEW_SESSION in opened:
                if force_logout:
                    raise self._unrecognised(page, "login", "session still open after forceLogout")
                force_logout = True
                continue
            if DIALOG_UNIT_CHOICE in opened:
                if chosen != "-1":
                    raise self._unrecognised(page, "login", "unit choice asked twice")
                chosen = self._choose_unit(unit)
                continue
            if page.form(LOGIN_FORM) is not None:
                # The login page again and no detour opened: the contract's refusal.
                raise WrongCredentials(
                    "the portal refused credentials of examiner "
                    f"{mask_cpf(self.credentials.cpf)}{_portal_message(page)}; fix them with "
                    "`sync-pipelines detran add-examiner` (not retried: repeated failures can"
                    " lock the account)"
                )
            raise self._unrecognised(page, "login", "unexpected page after autenticar")
        raise self._unrecognised(page, "login", "login did not finish after its detours")

    def _logged_in(self, page: Page) -> bool:
        text = page.normalized_text
        has_cookie = any(c.name == "JSESSIONID" for c in self.http.session.cookies)
        return has_cookie and any(marker in text for marker in SUCCESS_MARKERS)

    def _choose_unit(self, unit: str | None) -> str:
        page = self._get(LOGIN_PATH, {"method": "openChoice", "autenticadoCyberark": "false"})
        select = page.selects.get("idUnidTransito")
        if select is None or not select.options:
            raise self._unrecognised(page, "choice", "no idUnidTransito select in the unit choice")
        offered = [(v, label) for v, label, _ in select.options if v not in ("", "-1")]
        if not offered:
            raise self._unrecognised(page, "choice", "the unit choice offers no unit")
        self._offered = dict(offered)
        wanted = (unit or self.credentials.unit or "").strip()
        if not wanted:
            return offered[0][0]
        for value, label in offered:
            if value == wanted or normalize_text(label) == normalize_text(wanted):
                return value
        names = "; ".join(f"{value} = {label}" for value, label in offered)
        raise UnitNotAvailable(
            f"examiner {mask_cpf(self.credentials.cpf)} works at several units and the "
            f"unit {wanted!r} is not one of them: {names}. Every offered unit is read; set "
            "the one to log in at first with `sync-pipelines detran add-examiner --unit"
            " <value>`, or leave it empty."
        )

    def _context_from(self, page: Page) -> AgendaContext:
        form = page.form(SEARCH_FORM)
        if form is None:
            raise self._unrecognised(page, "login", "logged in but no agenda search form")
        unit_select = form.selects.get("idUnidadeTransitoConsulta")
        unit_code = unit_select.selected if unit_select else None
        examiner_code = form.inputs.get("idUsuarioMedicoConsulta")
        if not unit_code or not examiner_code:
            raise self._unrecognised(page, "login", "search form without unit or examiner id")
        method = form.inputs.get("method") or ""
        if not method.startswith("consultarAgenda"):
            method = PROFESSION_METHODS.get(self.credentials.profession, "consultarAgendaMedico")
        label = unit_select.label_of(unit_code)
        units = dict(self._offered) or {unit_code: label}
        return AgendaContext(method, unit_code, examiner_code, label, units)

    # ---- cached sessions -------------------------------------------------------------

    def cookies(self) -> dict[str, str]:
        return {c.name: c.value for c in self.http.session.cookies if c.value is not None}

    def restore(self, cookies: dict[str, str], context: AgendaContext) -> None:
        """Use a cached session instead of logging in (check it with ``session_alive``)."""
        self.http.session.cookies.clear()
        host = urlsplit(self.http.base_url).hostname or ""
        for name, value in cookies.items():
            self.http.session.cookies.set(name, value, domain=host, path="/")
        self.context = context

    def session_alive(self) -> bool:
        """Ask the portal's small JSON helper: JSON back means the session is still valid."""
        if self.context is None:
            return False
        response = self.http.request(
            "POST",
            AGENDA_PATH,
            data={
                "method": "refreshAgendaMedicaByMedico",
                # The portal's "today" is São Paulo's, whatever the machine's zone.
                "dataReferencia": dt.datetime.now(PORTAL_TZ).strftime("%d/%m/%Y"),
                "idUsuarioMedicoConsulta": self.context.examiner_code,
            },
            headers={"Origin": self._origin(), "Referer": self.http.url(AGENDA_PATH)},
            retry_safe=True,
            expected=(200,),
        )
        if "json" not in response.headers.get("Content-Type", ""):
            return False
        try:
            return isinstance(json.loads(response.content.decode("utf-8")), list)
        except ValueError:
            return False

    # ---- the agenda ------------------------------------------------------------------

    def fetch_day(self, day: dt.date) -> DayAgenda:
        """The bookings of one day. Raises ``SessionExpired`` or ``UnrecognisedPage``."""
        if self.context is None:
            raise SessionExpired("not logged in")
        ctx = self.context
        text_day = day.strftime("%d/%m/%Y")
        page = self._post(
            AGENDA_PATH,
            [
                ("method", ctx.method),
                ("idUnidadeTransitoConsulta", ctx.unit_code),
                ("idUsuarioMedicoConsulta", ctx.examiner_code),
                ("dataReferencia", text_day),
                ("data", text_day),
            ],
            referer=AGENDA_PATH,
        )
        table = page.table("agenda")
        form = page.form(SEARCH_FORM)
        if table is not None:
            try:
                agenda = read_agenda_table(table)
            except PageFormatError as exc:
                raise self._unrecognised(page, day.isoformat(), str(exc)) from None
            self._check_answer_is_for(page, day)
            unit, label = self._answered_unit(page)
            if agenda.unreadable:
                # Kept (masked) so the unreadable row can be looked at; the day is still used.
                saved = save_page(self.settings.diagnostics_dir, f"{day}_rows", page.html)
                if saved is not None:
                    self.pages_saved.append(saved)
            unreadable_numbers = {u.row for u in agenda.unreadable}
            return DayAgenda(
                day,
                unit,
                agenda.bookings,
                agenda.columns,
                agenda.unknown_columns,
                unit_label=label,
                unreadable=agenda.unreadable,
                row_numbers=[r for r in range(1, agenda.rows + 1) if r not in unreadable_numbers],
            )
        if form is not None:
            self._check_answer_is_for(page, day)
            unit, label = self._answered_unit(page)
            return DayAgenda(day, unit, unit_label=label)
        if page.form(LOGIN_FORM) is not None or "iniciarLogin" in page.html:
            raise SessionExpired(
                f"the portal answered the {day.isoformat()} query with its login page"
            )
        raise self._unrecognised(page, day.isoformat(), "neither the agenda nor the search form")

    def _answered_unit(self, page: Page) -> tuple[str, str]:
        """The unit the page answers for (its search form's select), with its label."""
        ctx = self.context
        select = page.selects.get("idUnidadeTransitoConsulta")
        unit = (select.selected if select else None) or ctx.unit_code
        label = (select.label_of(unit) if select else "") or ctx.units.get(unit, "")
        if unit != ctx.unit_code:
            raise self._unrecognised(
                page, "unit", f"the page answers for unit {unit}, not {ctx.unit_code}"
            )
        return unit, label

    def _check_answer_is_for(self, page: Page, day: dt.date) -> None:
        form = page.form(SEARCH_FORM)
        answered = (form.inputs.get("dataReferencia") if form else None) or ""
        if answered and answered.strip() != day.strftime("%d/%m/%Y"):
            raise self._unrecognised(
                page,
                day.isoformat(),
                f"the page answers for {answered.strip()}, not {day:%d/%m/%Y}",
            )

    def logout(self) -> None:
        try:
            self._get(LOGIN_PATH, {"method": "finalizarLogin"})
        finally:
            self.context = None

    def close(self) -> None:
        self.http.close()

    # ---- diagnosis -------------------------------------------------------------------

    def _unrecognised(self, page: Page, what: str, reason: str) -> UnrecognisedPage:
        saved = save_page(self.settings.diagnostics_dir, what, page.html)
        if saved is not None:
            self.pages_saved.append(saved)
        return UnrecognisedPage(f"unrecognised portal page ({what}): {reason}", saved)


def save_page(folder: Path, what: str, html: str) -> Path | None:
    """Write a PII-masked copy of a page; a failure to save never hides the real error."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = Path(folder) / f"{stamp}_{re.sub(r'[^A-Za-z0-9_-]', '_', what)}.html"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(mask_page(html), encoding="utf-8")
    except OSError as exc:
        log.warning("could not save the unrecognised page to %s: %s", path, exc)
        return None
    return path


def _decode(response) -> str:
    """Pages are ISO-8859-1; trust a charset the server states, latin-1 otherwise."""
    match = re.search(r"charset=([\w-]+)", response.headers.get("Content-Type", ""), re.I)
    charset = match.group(1) if match else HTML_CHARSET
    try:
        return response.content.decode(charset)
    except (LookupError, UnicodeDecodeError):
        return response.content.decode(HTML_CHARSET)


def _portal_message(page: Page) -> str:
    """The portal's own error text (e.g. "Senha inválida"), redacted, if it shows one."""
    match = re.search(r'class="(?:erro|msgErro|error)"[^>]*>([^<]{1,200})<', page.html, re.I)
    return f" ({redact(match.group(1).strip())})" if match else ""


def context_to_json(context: AgendaContext) -> dict:
    return asdict(context)


def context_from_json(data: dict) -> AgendaContext:
    return AgendaContext(**data)
