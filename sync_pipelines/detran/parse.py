"""Reading the e-CNHsp portal's HTML pages with lxml (libxml2's HTML parser, no browser).

The portal is an old Java web app: every page answers HTTP 200 and the state (logged in,
credentials refused, session open elsewhere, agenda result, expired session) is only in the
HTML. ``parse_page`` turns one page into a ``Page`` (forms, selects, tables, the dialogs its
scripts open). A real HTML parser is needed: the portal's rows may omit ``</td>`` and
``</tr>``, spell tags in capitals and leave attributes unquoted, all valid HTML 4.

Login pages carry the hidden markup of every dialog they might open, so a dialog's text
proves nothing; ``Page.dialogs_opened`` holds the ``openDialog…(`` calls of the page's
scripts, which is what says that a dialog opened (``contracts/detran.md``).

Agenda columns are mapped by header text, never by position (the site has reordered them).
A row that cannot be read is reported by number with a reason free of personal data;
the caller decides what a day with such a row may prove.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass, field

import lxml.html
from lxml import etree

NOT_INFORMED = "nao informado"

# normalised header text -> field name of a booking
COLUMN_FIELDS: dict[str, str] = {
    "hora": "hora",
    "horario": "hora",
    "cpf": "cpf",
    "nome": "nome",
    "telefone": "telefone",
    "e-mail": "email",
    "email": "email",
    "tipo de processo": "tipo_processo",
    "categoria": "categoria",
    "status do exame medico": "status_exame_medico",
    "status do exame psicologico": "status_exame_psicologico",
}
REQUIRED_COLUMNS = ("hora", "cpf")
BOOKING_FIELDS = (
    "hora",
    "cpf",
    "nome",
    "telefone",
    "email",
    "tipo_processo",
    "categoria",
    "status_exame_medico",
    "status_exame_psicologico",
)

LOGIN_FORM = "loginactionform"
SEARCH_FORM = "divisaoequitativaform"
DIALOG_NEW_SESSION = "openDialogNewSession"
DIALOG_UNIT_CHOICE = "openDialogChoice"

# A call of an openDialog… function: the name followed by "(", not its definition
# ("function openDialogChoice(") nor a property access ("x.openDialogChoice(" is still a call).
_DIALOG_CALL = re.compile(r"(?<![\w$])(function\s+)?(openDialog\w*)\s*\(")
_JS_COMMENTS = re.compile(r"/\*.*?\*/|(?m:(?:^|(?<=\s))//[^\n]*)", re.DOTALL)


class PageFormatError(ValueError):
    """A page that looks like the agenda but cannot be read (missing column, bad time)."""


def normalize_text(text: str | None) -> str:
    """Accents stripped, case folded, whitespace collapsed: how markers are compared."""
    if not text:
        return ""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return re.sub(r"\s+", " ", plain).strip().casefold()


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("\xa0", " ")).strip()


@dataclass
class Select:
    name: str
    id: str | None
    options: list[tuple[str, str, bool]] = field(default_factory=list)  # value, label, selected

    @property
    def selected(self) -> str | None:
        for value, _label, chosen in self.options:
            if chosen:
                return value
        return self.options[0][0] if self.options else None

    def label_of(self, value: str) -> str:
        return next((label for v, label, _ in self.options if v == value), "")


@dataclass
class Form:
    name: str
    action: str
    inputs: dict[str, str] = field(default_factory=dict)
    selects: dict[str, Select] = field(default_factory=dict)


@dataclass
class Table:
    id: str | None
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


@dataclass
class Page:
    html: str
    forms: dict[str, Form] = field(default_factory=dict)  # by lower-case form name
    selects: dict[str, Select] = field(default_factory=dict)  # every select, by name
    tables: list[Table] = field(default_factory=list)
    legends: list[str] = field(default_factory=list)
    text: str = ""  # every text outside scripts and styles, hidden dialogs included
    dialogs_opened: frozenset[str] = frozenset()  # openDialog… functions the scripts call

    def form(self, name: str) -> Form | None:
        return self.forms.get(name.lower())

    def table(self, table_id: str) -> Table | None:
        for table in self.tables:
            if table.id == table_id:
                return table
        return None

    @property
    def normalized_text(self) -> str:
        return normalize_text(self.text)


def parse_document(html: str) -> lxml.html.HtmlElement:
    """The page as an lxml tree; never raises, an empty page is an empty document."""
    # An XML-style encoding declaration in an already decoded string makes lxml refuse it.
    html = re.sub(r"^\s*<\?xml[^>]*\?>", "", html)
    if not html.strip():
        return lxml.html.document_fromstring("<html><body></body></html>")
    try:
        return lxml.html.document_fromstring(html)
    except etree.ParserError:  # e.g. only a comment: no element at all
        return lxml.html.document_fromstring("<html><body></body></html>")


def _text(element: lxml.html.HtmlElement) -> str:
    parts: list[str] = []

    def walk(node) -> None:
        if not isinstance(node.tag, str) or node.tag in ("script", "style"):
            return
        if node.text:
            parts.append(node.text)
        for child in node:
            if child.tag == "br":
                parts.append(" ")
            walk(child)
            if child.tail:
                parts.append(child.tail)

    walk(element)
    return _squash("".join(parts))


def _select(element) -> Select:
    select = Select(name=element.get("name", ""), id=element.get("id"))
    for option in element.iter("option"):
        label = _text(option)
        value = option.get("value")
        select.options.append(
            (label if value is None else value, label, "selected" in option.attrib)
        )
    return select


def _form(element) -> Form:
    form = Form(name=element.get("name", ""), action=element.get("action", ""))
    for item in element.iter("input", "select", "textarea"):
        name = item.get("name")
        if not name:
            continue
        if item.tag == "select":
            form.selects[name] = _select(item)
            continue
        if item.tag == "textarea":
            form.inputs.setdefault(name, item.text or "")
            continue
        kind = (item.get("type") or "text").lower()
        if kind in ("button", "submit", "image", "reset"):
            continue
        if kind in ("checkbox", "radio") and "checked" not in item.attrib:
            continue
        form.inputs.setdefault(name, item.get("value", ""))
    return form


def _own_rows(table) -> list:
    # Rows of this table only, not of a table nested in one of its cells.
    return table.xpath("./tr | ./thead/tr | ./tbody/tr | ./tfoot/tr")


def _table(element) -> Table:
    table = Table(id=element.get("id"))
    for row in _own_rows(element):
        cells = [c for c in row if isinstance(c.tag, str) and c.tag in ("td", "th")]
        headers = [_text(c) for c in cells if c.tag == "th"]
        values = [_text(c) for c in cells if c.tag == "td"]
        table.headers.extend(headers)
        if values:
            table.rows.append(values)
    return table


def dialog_calls(script: str) -> set[str]:
    """The ``openDialog…`` functions a script calls (definitions and comments left out)."""
    code = _JS_COMMENTS.sub(" ", script)
    return {m[2] for m in _DIALOG_CALL.finditer(code) if not m[1]}


def parse_page(html: str) -> Page:
    doc = parse_document(html)
    page = Page(html=html)
    for element in doc.iter("form"):
        form = _form(element)
        page.forms[form.name.lower()] = form
    for element in doc.iter("select"):
        page.selects[element.get("name", "")] = _select(element)
    page.tables = [_table(t) for t in doc.iter("table")]
    page.legends = [_text(legend) for legend in doc.iter("legend")]
    page.text = _text(doc)
    opened: set[str] = set()
    for script in doc.iter("script"):
        opened |= dialog_calls(script.text or "")
    # A dialog may also be opened by the body's onload handler; other handlers (a hidden
    # dialog's buttons) only run when clicked, so they say nothing about this page.
    for body in doc.iter("body"):
        opened |= dialog_calls(body.get("onload") or "")
    page.dialogs_opened = frozenset(opened)
    return page


# --- the agenda ---------------------------------------------------------------------------


def clean_cell(value: str | None) -> str | None:
    """A cell's text, or None for empty cells and the portal's "NÃO INFORMADO"."""
    if value is None:
        return None
    value = value.strip()
    if not value or normalize_text(value) == NOT_INFORMED:
        return None
    return value


def parse_hora(value: str | None) -> dt.time:
    """``HH:MM`` (or ``HHhMM``, seconds ignored). The error never quotes the cell: when
    columns shift, the "time" cell may hold a name."""
    match = re.fullmatch(r"(\d{1,2})[:h](\d{2})(?::(\d{2}))?", (value or "").strip())
    if not match:
        raise PageFormatError("unreadable time (not HH:MM)")
    hour, minute = int(match[1]), int(match[2])
    if hour > 23 or minute > 59:
        raise PageFormatError("impossible time (hour over 23 or minute over 59)")
    return dt.time(hour, minute)


@dataclass(frozen=True)
class UnreadableRow:
    """A row of ``table#agenda`` that could not be read; nothing personal in it."""

    row: int  # 1-based position among the table's booking rows
    reason: str
    after: str | None = None  # the time of the nearest readable row before it, if any

    def describe(self) -> str:
        where = f"row {self.row}" + (f" (after {self.after})" if self.after else " (first rows)")
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class AgendaTable:
    """The bookings of one day: each a dict of BOOKING_FIELDS (None when not informed)."""

    bookings: list[dict[str, str | None]]
    columns: list[str]  # header texts in page order, for diagnosis
    unknown_columns: list[str]
    unreadable: list[UnreadableRow] = field(default_factory=list)
    rows: int = 0  # booking rows in the table, readable or not


def read_agenda_table(table: Table) -> AgendaTable:
    """Map ``table#agenda`` rows to bookings by header text; extra columns are kept as extras.

    A table without the required columns cannot be read at all (``PageFormatError``); a
    row whose cells do not match the headers or whose time is unreadable is left out of
    ``bookings`` and listed in ``unreadable``."""
    mapping: list[str | None] = []
    unknown: list[str] = []
    for header in table.headers:
        name = COLUMN_FIELDS.get(normalize_text(header))
        if name is None:
            unknown.append(header)
        mapping.append(name)
    missing = [c for c in REQUIRED_COLUMNS if c not in mapping]
    if missing:
        raise PageFormatError(
            f"table#agenda has no {', '.join(missing)} column (headers: {', '.join(table.headers)})"
        )
    bookings = []
    unreadable: list[UnreadableRow] = []
    last_time: str | None = None
    for number, row in enumerate(table.rows, start=1):
        if len(row) != len(mapping):
            reason = f"{len(row)} cells for {len(mapping)} columns"
            unreadable.append(UnreadableRow(number, reason, last_time))
            continue
        booking: dict[str, str | None] = dict.fromkeys(BOOKING_FIELDS)
        extras = {}
        for name, header, cell in zip(mapping, table.headers, row, strict=True):
            if name is None:
                extras[header] = clean_cell(cell)
            else:
                booking[name] = clean_cell(cell)
        try:
            last_time = parse_hora(booking["hora"]).strftime("%H:%M")
        except PageFormatError as exc:
            unreadable.append(UnreadableRow(number, str(exc), last_time))
            continue
        if extras:
            booking["extras"] = extras  # type: ignore[assignment]
        bookings.append(booking)
    return AgendaTable(
        bookings=bookings,
        columns=list(table.headers),
        unknown_columns=unknown,
        unreadable=unreadable,
        rows=len(table.rows),
    )
