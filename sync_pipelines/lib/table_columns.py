"""The columns of each table the project creates, read from its migration files.

The migrations in ``sql/<role>/`` are the one source of truth for stored shapes; the asset
catalog shows the same columns by replaying their ``CREATE TABLE`` and ``ALTER TABLE ... ADD
COLUMN`` / ``DROP COLUMN`` statements here instead of keeping a second, hand-written list.
Only the statement shapes the migrations use are understood; an unknown table raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .migrations import SQL_ROOT

_CREATE = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)\s*\(", re.I)
_ALTER = re.compile(r"ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(\w+)\s+(.*?);", re.I | re.S)
_ADD = re.compile(r"^ADD\s+(?:COLUMN\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(\w+)\s+(.+)$", re.I | re.S)
_DROP = re.compile(r"^DROP\s+COLUMN\s+(?:IF\s+EXISTS\s+)?(\w+)", re.I)
_NOT_A_COLUMN = ("PRIMARY", "UNIQUE", "CONSTRAINT", "FOREIGN", "CHECK", "EXCLUDE")
# Words that end a column's type and start its constraints.
_TYPE_END = re.compile(
    r"\s+(?:NOT\s+NULL|NULL|DEFAULT|PRIMARY|REFERENCES|UNIQUE|CHECK|GENERATED|CONSTRAINT|"
    r"COLLATE|AUTO_INCREMENT|COMMENT|ON\s+UPDATE)\b",
    re.I,
)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool


def _strip_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*", "", sql)


def _split_top_level(body: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in body:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


def _parenthesised(sql: str, start: int) -> str:
    """The text inside the parenthesis that opens just before ``start``."""
    depth = 1
    for i in range(start, len(sql)):
        if sql[i] == "(":
            depth += 1
        elif sql[i] == ")":
            depth -= 1
            if depth == 0:
                return sql[start:i]
    raise ValueError("unbalanced parentheses in a CREATE TABLE")


def _column(definition: str) -> Column | None:
    words = definition.split(None, 1)
    if len(words) < 2 or words[0].upper() in _NOT_A_COLUMN:
        return None
    rest = words[1]
    end = _TYPE_END.search(rest)
    type_ = (rest[: end.start()] if end else rest).strip().lower()
    nullable = not re.search(r"NOT\s+NULL|PRIMARY\s+KEY", rest, re.I)
    return Column(words[0].strip('"`'), type_, nullable)


def _files(role: str, root: Path) -> list[Path]:
    folder = root / role
    files = sorted(folder.glob("*.sql"))
    # Tenant tables exist in a MySQL and a PostgreSQL flavour; the catalog shows one shape.
    flavoured = [f for f in files if f.name.endswith(".postgresql.sql")]
    return flavoured or [f for f in files if f.name.count(".") == 1]


def role_tables(role: str, root: Path = SQL_ROOT) -> dict[str, list[Column]]:
    """Every table of ``role`` with its columns after all of the role's migrations."""
    tables: dict[str, dict[str, Column]] = {}
    for path in _files(role, root):
        sql = _strip_comments(path.read_text())
        for match in _CREATE.finditer(sql):
            columns = tables.setdefault(match.group(1).lower(), {})
            for part in _split_top_level(_parenthesised(sql, match.end())):
                column = _column(part)
                if column is not None:
                    columns.setdefault(column.name, column)
        for match in _ALTER.finditer(sql):
            table = tables.setdefault(match.group(1).lower(), {})
            for clause in _split_top_level(match.group(2)):
                if added := _ADD.match(clause.strip()):
                    column = _column(f"{added.group(1)} {added.group(2)}")
                    if column is not None and added.group(1).upper() not in _NOT_A_COLUMN:
                        table.setdefault(column.name, column)
                elif dropped := _DROP.match(clause.strip()):
                    table.pop(dropped.group(1), None)
    return {name: list(columns.values()) for name, columns in tables.items() if columns}


def table_columns(role: str, table: str, root: Path = SQL_ROOT) -> list[Column]:
    """The columns of one table; raises KeyError naming the table when no migration has it."""
    tables = role_tables(role, root)
    if table not in tables:
        raise KeyError(f"no migration in sql/{role}/ creates a table {table!r}")
    return tables[table]
