"""Reading the e-CNHsp portal's HTML pages (stdlib ``html.parser``, no browser).

The portal is an old Java web app: every page answers HTTP 200 and the state (logged in,
credentials refused, session open elsewhere, agenda result, expired session) is only in the
HTML. ``parse_page`` turns one page into a ``Page`` (forms, selects, the ``table#agenda``)
and ``classify_agenda_page`` says which of the known agenda states it is. Columns of the
agenda are mapped by their header text, never by position (the site has reordered them).
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass, field
from html.parser import HTMLParser

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


class PageFormatError(ValueError):
    """A page that looks like the agenda but cannot be read (missing column, bad time)."""


def normalize_text(text: str | None) -> str:
    """Accents stripped, case folded, whitespace collapsed: how markers are compared."""
    if not text:
        return ""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return re.sub(r"\s+", " ", plain).strip().casefold()


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
    text: str = ""

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


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page(html="")
        self._form: Form | None = None
        self._select: Select | None = None
        self._option: list | None = None  # [value, label parts, selected]
        self._tables: list[Table] = []
        self._cell: list[str] | None = None
        self._cell_is_header = False
        self._row: list[str] | None = None
        self._legend: list[str] | None = None
        self._skip = 0  # inside <script>/<style>
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "form":
            self._form = Form(name=a.get("name", ""), action=a.get("action", ""))
            self.page.forms[self._form.name.lower()] = self._form
        elif tag == "input":
            kind = a.get("type", "text").lower()
            if self._form is not None and a.get("name") and kind not in ("button", "submit"):
                if kind in ("checkbox", "radio") and "checked" not in a:
                    return
                self._form.inputs.setdefault(a["name"], a.get("value", ""))
        elif tag == "select":
            self._select = Select(name=a.get("name", ""), id=a.get("id"))
            self.page.selects[self._select.name] = self._select
            if self._form is not None:
                self._form.selects[self._select.name] = self._select
        elif tag == "option" and self._select is not None:
            self._option = [a.get("value"), [], "selected" in a]
        elif tag == "table":
            table = Table(id=a.get("id"))
            self._tables.append(table)
            self.page.tables.append(table)
        elif tag == "tr" and self._tables:
            self._row = []
        elif tag in ("td", "th") and self._tables:
            self._cell = []
            self._cell_is_header = tag == "th"
        elif tag == "legend":
            self._legend = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag == "form":
            self._form = None
        elif tag == "select":
            self._close_option()
            self._select = None
        elif tag == "option":
            self._close_option()
        elif tag in ("td", "th") and self._cell is not None:
            text = re.sub(r"\s+", " ", "".join(self._cell)).strip()
            table = self._tables[-1]
            if self._cell_is_header:
                table.headers.append(text)
            elif self._row is not None:
                self._row.append(text)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row:
                self._tables[-1].rows.append(self._row)
            self._row = None
        elif tag == "table" and self._tables:
            self._tables.pop()
        elif tag == "legend" and self._legend is not None:
            self.page.legends.append("".join(self._legend).strip())
            self._legend = None

    def _close_option(self) -> None:
        if self._option is not None and self._select is not None:
            value, parts, chosen = self._option
            label = re.sub(r"\s+", " ", "".join(parts)).strip()
            self._select.options.append((label if value is None else value, label, chosen))
        self._option = None

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self._text.append(data)
        if self._option is not None:
            self._option[1].append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._legend is not None:
            self._legend.append(data)

    def close(self) -> None:
        super().close()
        self.page.text = " ".join(self._text)


def parse_page(html: str) -> Page:
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    page = parser.page
    page.html = html
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
    match = re.fullmatch(r"(\d{1,2})[:h](\d{2})(?::(\d{2}))?", (value or "").strip())
    if not match:
        raise PageFormatError(f"unreadable time {value!r} in the agenda")
    hour, minute = int(match[1]), int(match[2])
    if hour > 23 or minute > 59:
        raise PageFormatError(f"impossible time {value!r} in the agenda")
    return dt.time(hour, minute)


@dataclass(frozen=True)
class AgendaTable:
    """The bookings of one day: each a dict of BOOKING_FIELDS (None when not informed)."""

    bookings: list[dict[str, str | None]]
    columns: list[str]  # header texts in page order, for diagnosis
    unknown_columns: list[str]


def read_agenda_table(table: Table) -> AgendaTable:
    """Map ``table#agenda`` rows to bookings by header text; extra columns are kept as extras."""
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
    for row in table.rows:
        if len(row) != len(mapping):
            raise PageFormatError(
                f"table#agenda row has {len(row)} cells for {len(mapping)} headers"
            )
        booking: dict[str, str | None] = dict.fromkeys(BOOKING_FIELDS)
        extras = {}
        for name, header, cell in zip(mapping, table.headers, row, strict=True):
            if name is None:
                extras[header] = clean_cell(cell)
            else:
                booking[name] = clean_cell(cell)
        if extras:
            booking["extras"] = extras  # type: ignore[assignment]
        bookings.append(booking)
    return AgendaTable(bookings=bookings, columns=list(table.headers), unknown_columns=unknown)
