"""Find secrets and personal data in what Dagster stored: event log, runs, captured logs.

``Needles`` are labelled values to look for: secrets (labelled by their environment variable
or column) and personal data (labelled by ``schema.table.column``). A hit is reported by its
label, where it was found and how often, never by the value, so a failing test does not
become a leak of its own.

Digits-only values (CPF, phone numbers) are matched whatever the formatting around them:
every number-like run in the haystack (``123.456.789-09``, ``+55 (11) 98765-4321``) is
reduced to its digits and searched for the needles, bounded so a CPF inside a longer number
is still found but a timestamp is not taken for one.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

# Environment variables whose value is a secret (by name), as in lib/redact.
SECRET_NAME = re.compile(r"TOKEN|SECRET|KEY|PASSWORD", re.IGNORECASE)
# Columns holding personal data (CPF/CNPJ, phones, e-mails) in any table the sandbox seeds:
# matched by name, so a source that lands later (HubSoft tickets...) is covered without edits.
PERSONAL_COLUMN = re.compile(r"cpf|cnpj|phone|fone|celular|whats|e_?mail", re.IGNORECASE)
# Text columns holding secrets (OAuth tokens, encrypted passwords and cookies).
SECRET_COLUMN = re.compile(r"token|secret|password|senha|cookie", re.IGNORECASE)
SKIPPED_SCHEMAS = {"pg_catalog", "information_schema", "pg_toast"}

NUMBER_RUN = re.compile(r"\+?\(?\d[\d.\-\s()/]{6,24}\d")
EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
MIN_DIGITS = 10  # CPF 11, CNPJ 14, phones 10-13: shorter numbers are not personal data
MIN_SECRET = 6


@dataclass
class Needles:
    texts: dict[str, str] = field(default_factory=dict)  # value -> label (secrets: substring)
    digits: dict[str, str] = field(default_factory=dict)  # digits -> label (CPF, phones)
    emails: dict[str, str] = field(default_factory=dict)  # lowercased e-mail -> label

    def add_secret(self, value: str | None, label: str) -> None:
        if value and len(value.strip()) >= MIN_SECRET:
            self.texts.setdefault(value.strip(), label)

    def add_personal(self, value: object, label: str) -> None:
        if value is None:
            return
        text = str(value).strip()
        if "@" in text:
            self.emails.setdefault(text.lower(), label)
            return
        digits = re.sub(r"\D", "", text)
        if len(digits) >= MIN_DIGITS:
            self.digits.setdefault(digits, label)
            if digits.startswith("55") and len(digits) in (12, 13):
                # the same phone written without Brazil's country code
                self.digits.setdefault(digits[2:], label)

    def counts(self) -> Counter:
        labels = Counter()
        for mapping in (self.texts, self.digits, self.emails):
            labels.update(mapping.values())
        return labels


def secrets_from_env(env: Mapping[str, str], needles: Needles) -> None:
    """Values of secret-named variables, and the password of every URL-valued variable."""
    for name, value in env.items():
        if SECRET_NAME.search(name):
            needles.add_secret(value, f"${name}")
        if "://" in value:
            try:
                password = make_url(value.replace("{", "").replace("}", "")).password
            except Exception:  # noqa: BLE001 - not an SQLAlchemy URL (an http:// base URL)
                password = None
            needles.add_secret(password, f"password in ${name}")


def values_from_database(
    engine: sa.Engine, needles: Needles, *, schemas: Iterable[str] | None = None
) -> list[str]:
    """Personal and secret columns of every table of ``schemas`` (default: all but system).

    Returns the ``schema.table.column`` names collected. Tables are discovered, so a source
    whose tables do not exist yet is simply not there.
    """
    collected = []
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        wanted = (
            list(schemas)
            if schemas is not None
            else [s for s in inspector.get_schema_names() if s not in SKIPPED_SCHEMAS]
        )
        for schema in wanted:
            if schema == "public":
                continue  # Dagster's own tables: what is being scanned, not the seed
            for table in inspector.get_table_names(schema=schema):
                for column in inspector.get_columns(table, schema=schema):
                    name = column["name"]
                    is_text = isinstance(column["type"], sa.String | sa.Text)
                    if isinstance(column["type"], sa.JSON):
                        label = f"{schema}.{table}.{name}"
                        if _values_from_json_column(conn, schema, table, name, needles, label):
                            collected.append(label)
                        continue
                    personal = PERSONAL_COLUMN.search(name)
                    secret = SECRET_COLUMN.search(name) and is_text
                    if not (personal or secret):
                        continue
                    label = f"{schema}.{table}.{name}"
                    rows = conn.execute(
                        sa.text(
                            f'SELECT DISTINCT "{name}" FROM "{schema}"."{table}" '
                            f'WHERE "{name}" IS NOT NULL'
                        )
                    ).scalars()
                    for value in rows:
                        if secret:
                            needles.add_secret(str(value), label)
                        else:
                            needles.add_personal(value, label)
                    collected.append(label)
    return collected


def _values_from_json_column(conn, schema: str, table: str, column: str, needles, label) -> bool:
    """Personal values under personal-looking keys of a JSON column (raw API payloads)."""
    rows = conn.execute(
        sa.text(f'SELECT "{column}" FROM "{schema}"."{table}" WHERE "{column}" IS NOT NULL')
    ).scalars()
    found = False
    for document in rows:
        for key, value in _walk(document):
            if PERSONAL_COLUMN.search(key) and isinstance(value, str | int):
                needles.add_personal(value, f"{label}->{key}")
                found = True
    return found


def _walk(node, key: str = "") -> Iterator[tuple[str, object]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, str(k))
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, key)
    else:
        yield key, node


@dataclass(frozen=True)
class Hit:
    label: str
    where: str


def scan_text(text: str, needles: Needles, where: str) -> Iterator[Hit]:
    for value, label in needles.texts.items():
        if value in text:
            yield Hit(label, where)
    if needles.emails:
        for match in EMAIL.finditer(text):
            label = needles.emails.get(match.group(0).lower())
            if label:
                yield Hit(label, where)
    if needles.digits:
        lengths = sorted({len(d) for d in needles.digits})
        for match in NUMBER_RUN.finditer(text):
            digits = re.sub(r"\D", "", match.group(0))
            for size in lengths:
                for start in range(0, len(digits) - size + 1):
                    label = needles.digits.get(digits[start : start + size])
                    if label:
                        yield Hit(label, where)


def event_log_texts(instance) -> Iterator[tuple[str, str]]:
    """(where, text) for every run record and every event of every run."""
    from dagster._serdes import serialize_value

    for run in instance.get_runs():
        yield f"run {run.run_id[:8]} (config/tags)", serialize_value(run)
        for entry in instance.all_logs(run.run_id):
            kind = entry.dagster_event.event_type_value if entry.dagster_event else "log message"
            yield f"run {run.run_id[:8]} {kind}", serialize_value(entry)


def captured_log_texts(dagster_home: Path) -> Iterator[tuple[str, str]]:
    """(where, text) for every captured stdout/stderr file under DAGSTER_HOME/storage."""
    storage = dagster_home / "storage"
    if not storage.exists():
        return
    for path in sorted(storage.rglob("*")):
        if path.is_file():
            yield f"captured log {path.relative_to(dagster_home)}", path.read_text(errors="replace")


def find_leaks(texts: Iterable[tuple[str, str]], needles: Needles) -> dict[str, Counter]:
    """label -> Counter of places it was found."""
    found: dict[str, Counter] = defaultdict(Counter)
    for where, text in texts:
        for hit in scan_text(text, needles, where):
            found[hit.label][hit.where] += 1
    return dict(found)


def describe(found: Mapping[str, Counter], limit: int = 5) -> str:
    lines = []
    for label, places in sorted(found.items()):
        top = ", ".join(f"{w} ×{n}" for w, n in places.most_common(limit))
        lines.append(f"{label}: {sum(places.values())} occurrence(s) in {top}")
    return "\n".join(lines)
