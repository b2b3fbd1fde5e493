"""Keep secrets and personal data out of logs, exception messages and run metadata.

``redact(text)`` is the one function everything that leaves the process goes through: it
masks credentials (Authorization headers, API keys, OAuth tokens and codes, passwords, bot
tokens in Telegram URLs, JWTs, URL passwords, values registered with ``register_secret``)
and personal data (CPF, Brazilian phone numbers, e-mail addresses). It is a handful of
precompiled regexes applied once each, cheap enough for every log line.

Masks keep enough to tell records apart in a log (the last four digits of a CPF or phone,
the first letter and the domain of an e-mail) and nothing that identifies a person.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"

# A key whose value is a credential wherever it appears (query, form, JSON, header).
_SECRET_KEY = (
    r"[\w-]*(?:token|secret|password|passwd|senha|api[_-]?key"
    r"|service[_-]?(?:role[_-]?)?key|jsessionid)[\w-]*"
)
# "code" is an OAuth authorization code only as a query/form value; in JSON it is usually an
# error code (PostgREST's "PGRST204") that error messages must keep.
_FORM_KEY = rf"(?:{_SECRET_KEY}|code)"

_SECRETS = re.compile(
    r"""
    (?P<auth>\b(?:proxy-)?authorization["']?\s*[:=]\s*["']?(?:(?:bearer|basic|token|digest)\s+)?)
        (?P<auth_v>[^\s"',;&}]+)
  | (?P<cookie>(?<![\w-])(?:set-)?cookie["']?\s*[:=]\s*["']?)(?P<cookie_v>[^\r\n"']+)
  | (?P<bearer>\bbearer\s+)(?P<bearer_v>[\w.~+/=-]{8,})
  | (?P<url>(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*://[^/\s:@]+:)(?P<url_v>[^@\s/]+)(?=@)
  | (?P<bot>/bot)(?P<bot_v>\d+:[\w-]+)
  | (?P<tg>)(?P<tg_v>(?<![\w:])\d{6,12}:[\w-]{30,})
  | (?P<jwt>)(?P<jwt_v>(?<![\w-])eyJ[\w-]+\.[\w-]+\.[\w-]*)
  | (?P<json>["']"""
    + _SECRET_KEY
    + r"""["']\s*[:,]\s*)(?P<json_v>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,}\]]+)
  | (?P<form>(?<![\w-])"""
    + _FORM_KEY
    + r"""=)(?P<form_v>[^&\s"',;]+)
  | (?P<header>(?<![\w-])"""
    + _SECRET_KEY
    + r"""\s*:\s*)(?P<header_v>[^\s"',;]+)
    """,
    re.IGNORECASE | re.VERBOSE,
)
# Every alternative is a kept prefix group plus a masked value group "<name>_v" (the prefix
# is empty for bare tokens such as JWTs).
_SECRET_GROUPS = ("auth", "cookie", "bearer", "url", "bot", "tg", "jwt", "json", "form", "header")

_PII = re.compile(
    r"""
    (?P<email>(?<![\w.%+-])[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})
  | (?P<cpf>(?<![\d.])\d{3}\.\d{3}\.\d{3}-\d{2}(?!\d))
  | (?P<phone>(?<![\w+])(?:
        (?:\+55[\s-]?)?\(\d\d\)[\s-]?9?\d{4}[\s-]?\d{4}     # (41) 98888-0000
      | \+55[\s-]?\d\d[\s-]?9?\d{4}[\s-]?\d{4}              # +55 41 98888 0000
      | [1-9]\d[\s-]9?\d{4}[\s-]\d{4}                       # 41 98888-0000
      | 9\d{4}-\d{4}                                        # 98888-0000
      | 55[1-9]{2}9?\d{8}                                   # 5541988880000 (WhatsApp ids)
    )(?!\w))
    # 11 bare digits standing alone: a CPF or a mobile number with its area code.
  | (?P<digits>(?<![\w.])\d{11}(?!\w|\.\d))
    """,
    re.VERBOSE,
)

_registered: frozenset[str] = frozenset()  # values registered for good
_slots: dict[str, tuple[str, ...]] = {}  # slot -> its newest values, newest first
_registered_re: re.Pattern[str] | None = None
_registered_lock = threading.Lock()
# A rotating secret (an OAuth token renewed every few minutes) keeps its newest value and the
# one before it: a line logged while the renewal was in flight still shows the previous one.
SLOT_HISTORY = 2


def _rebuild_locked() -> None:
    global _registered_re
    values = set(_registered).union(*_slots.values())
    # Longest first, so a secret containing another is masked whole.
    alternatives = sorted(values, key=len, reverse=True)
    _registered_re = (
        re.compile("|".join(re.escape(v) for v in alternatives)) if alternatives else None
    )


def register_secret(value: str | None, *, slot: str | None = None) -> None:
    """Mask this exact value wherever it appears from now on (tokens read at runtime...).

    ``slot`` names a secret that rotates (``"tiny:access_token"``): its new value replaces
    the old ones but the last ``SLOT_HISTORY``, so a long run that renews a token thousands of
    times keeps a bounded set of values (and a bounded cost per masked line) instead of
    every token it ever saw.
    """
    global _registered
    # Very short values would mask ordinary text everywhere.
    if not value or len(value) < 4:
        return
    with _registered_lock:
        if slot is None:
            if value in _registered:
                return
            _registered = _registered | {value}
        else:
            current = _slots.get(slot, ())
            if current[:1] == (value,):
                return
            _slots[slot] = (value, *(v for v in current if v != value))[:SLOT_HISTORY]
        _rebuild_locked()


def registered_secret_count() -> int:
    """How many distinct values ``redact`` masks by exact match (bounded for rotating slots)."""
    with _registered_lock:
        return len(set(_registered).union(*_slots.values()))


def _keep_last_digits(text: str, keep: int = 4) -> str:
    total = sum(ch.isdigit() for ch in text)
    seen = 0
    out = []
    for ch in text:
        if ch.isdigit():
            seen += 1
            out.append(ch if seen > total - keep else "*")
        else:
            out.append(ch)
    return "".join(out)


def mask_cpf(cpf: str) -> str:
    """``"123.456.789-01"`` or ``"12345678901"`` → ``"***.***.*89-01"``."""
    digits = re.sub(r"\D", "", cpf)
    if len(digits) == 11:
        cpf = f"{digits[:3]}.{digits[3:6]}.{digits[6:9]}-{digits[9:]}"
    return _keep_last_digits(cpf)


def mask_phone(phone: str) -> str:
    """``"(41) 98888-0000"`` → ``"(**) *****-0000"``: every digit but the last four hidden."""
    return _keep_last_digits(phone)


def mask_email(email: str) -> str:
    """``"ana@example.com"`` → ``"a***@example.com"``."""
    local, at, domain = email.partition("@")
    if not at:
        return MASK
    return f"{local[:1]}{MASK}@{domain}"


def _mask_secret(match: re.Match[str]) -> str:
    for name in _SECRET_GROUPS:
        value = match.group(f"{name}_v")
        if value is None:
            continue
        if value[:1] in "\"'" and name == "json":
            return f"{match.group(name)}{value[0]}{MASK}{value[0]}"
        return f"{match.group(name)}{MASK}"
    return MASK


def _mask_pii(match: re.Match[str]) -> str:
    kind = match.lastgroup
    text = match.group()
    if kind == "email":
        return mask_email(text)
    if kind == "cpf":
        return mask_cpf(text)
    if kind == "digits" and text[2] != "9":
        return mask_cpf(text)
    return mask_phone(text)


def redact_secrets(text: str) -> str:
    """Mask credentials only (see the module docstring for what counts as one)."""
    pattern = _registered_re
    if pattern is not None:
        text = pattern.sub(MASK, text)
    return _SECRETS.sub(_mask_secret, text)


def redact_pii(text: str) -> str:
    """Mask CPFs, Brazilian phone numbers and e-mail addresses inside free text."""
    return _PII.sub(_mask_pii, text)


def redact(text: Any, pii: bool = True) -> str:
    """Mask secrets and, unless ``pii=False``, personal data; non-strings are ``str()``-ed."""
    if not isinstance(text, str):
        text = str(text)
    text = redact_secrets(text)
    return redact_pii(text) if pii else text


_SENSITIVE_KEY = re.compile(rf"^(?:{_FORM_KEY}|(?:proxy-)?authorization|(?:set-)?cookie)$", re.I)


def redact_mapping(mapping: Mapping[str, Any] | None, pii: bool = True) -> dict[str, Any]:
    """A copy of headers/params with sensitive keys' values replaced by ``"***"``.

    Other string values still go through ``redact``, so a CPF in ``termo_busca`` is masked too.
    """
    result: dict[str, Any] = {}
    for key, value in (mapping or {}).items():
        if _SENSITIVE_KEY.match(str(key)):
            result[key] = MASK
        elif isinstance(value, str):
            result[key] = redact(value, pii=pii)
        else:
            result[key] = value
    return result


class RedactingFilter(logging.Filter):
    """Rewrites each record's formatted message, traceback and stack through ``redact``."""

    def __init__(self, pii: bool = True) -> None:
        super().__init__()
        self.pii = pii

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message, pii=self.pii)
        record.args = None
        if record.exc_info:
            # Formatters print exc_text when set; pre-rendering it here means the raw
            # exception (whose message may hold a URL with a token) is never formatted.
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text, pii=self.pii)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, pii=self.pii)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, pii=self.pii)
        return True


def _loggers_under(name: str) -> Iterable[logging.Logger]:
    yield logging.getLogger(name)
    prefix = name + "."
    for other, logger in list(logging.Logger.manager.loggerDict.items()):
        if other.startswith(prefix) and isinstance(logger, logging.Logger):
            yield logger


def install_log_redaction(logger_name: str = "sync_pipelines", pii: bool = True) -> None:
    """Attach a ``RedactingFilter`` to a logger and its existing child loggers (idempotent).

    A logger's filters do not see records logged by its children, hence the walk; call this
    again after creating new child loggers, or log through one that already has it.
    """
    for logger in _loggers_under(logger_name):
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter(pii=pii))
