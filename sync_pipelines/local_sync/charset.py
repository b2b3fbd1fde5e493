"""Text that a tenant column can hold: the closest storable form, and whether it had to change.

Tenant servers default to latin1, and MySQL in strict mode refuses a whole statement when one
value has a character the column cannot store (an emoji in a name). The old routine stripped
every non-latin character; here each value is adapted on its own: a character the charset
lacks becomes its unaccented base letter when there is one (``ő`` → ``o``), otherwise ``?``.
Values longer than the column are cut to fit. The caller counts the rows this touched and
reports them, so nothing is lost silently and no batch fails.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

REPLACEMENT = "?"


def _storable_latin1(ch: str) -> bool:
    # MySQL's latin1 is cp1252 with the five undefined bytes kept as C1 controls.
    if ord(ch) < 256:
        return True
    try:
        ch.encode("cp1252")
    except UnicodeEncodeError:
        return False
    return True


def storable(ch: str, charset: str | None) -> bool:
    """Can a column of ``charset`` (MySQL's names; None = Unicode) hold this character?"""
    cs = (charset or "utf8mb4").lower()
    if cs in ("utf8mb4", "utf16", "utf16le", "utf32", "binary"):
        return True
    if cs in ("utf8", "utf8mb3", "ucs2"):
        return ord(ch) < 0x10000  # three-byte UTF-8: no emoji
    if cs == "latin1":
        return _storable_latin1(ch)
    if cs == "ascii":
        return ord(ch) < 128
    try:
        ch.encode(cs)
    except LookupError:
        return True  # a charset Python does not know: let the server decide
    except UnicodeEncodeError:
        return False
    return True


def _closest(ch: str, charset: str | None) -> str:
    base = "".join(
        c
        for c in unicodedata.normalize("NFKD", ch)
        if not unicodedata.combining(c) and storable(c, charset)
    )
    return base or REPLACEMENT


@dataclass(frozen=True)
class Fitted:
    value: str
    replaced: bool  # some character could not be stored as is
    truncated: bool  # the value was longer than the column


def fit_text(value: str, charset: str | None, max_length: int | None = None) -> Fitted:
    """``value`` as a column of ``charset`` and ``max_length`` characters can store it."""
    replaced = False
    if not value.isascii() and not all(storable(ch, charset) for ch in value):
        value = "".join(ch if storable(ch, charset) else _closest(ch, charset) for ch in value)
        replaced = True
    truncated = max_length is not None and len(value) > max_length
    if truncated:
        value = value[:max_length]
    return Fitted(value, replaced, truncated)
