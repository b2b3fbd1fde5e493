"""The examiners (peritos) whose agendas are synced, with their portal passwords encrypted.

Passwords (and cached session cookies) are Fernet tokens (AES-128-CBC + HMAC-SHA256) under
the key in ``DETRAN_CREDENTIALS_KEY``; the database alone never holds a usable credential.
Generate a key with ``python -c "from cryptography.fernet import Fernet;
print(Fernet.generate_key().decode())"``. Several keys separated by commas rotate: the first
encrypts, every one decrypts.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa

from ..lib.crypto import CredentialsCipher
from ..lib.db import Database
from ..lib.redact import mask_cpf, register_secret
from .client import Credentials

KEY_VAR = "DETRAN_CREDENTIALS_KEY"
PROFESSIONS = ("medico", "psicologo")
# Portuguese and English day names, and ISO numbers, to ISO weekday numbers.
DAY_NAMES = {
    "seg": 1, "segunda": 1, "mon": 1, "ter": 2, "terca": 2, "tue": 2, "qua": 3, "quarta": 3,
    "wed": 3, "qui": 4, "quinta": 4, "thu": 4, "sex": 5, "sexta": 5, "fri": 5,
    "sab": 6, "sabado": 6, "sat": 6, "dom": 7, "domingo": 7, "sun": 7,
}  # fmt: skip


class ExaminerNotFound(LookupError):
    pass


def cipher(env: Mapping[str, str] | None) -> CredentialsCipher:
    """The cipher under ``env[DETRAN_CREDENTIALS_KEY]``. Callers pass the key they were
    configured with (the portal resource's field, the CLI's environment): this module never
    reads the environment itself. No key: ``CredentialsKeyError`` saying how to make one."""
    return CredentialsCipher((env or {}).get(KEY_VAR, ""), KEY_VAR)


def encrypt(text: str, env: Mapping[str, str] | None) -> str:
    return cipher(env).encrypt(text)


def decrypt(token: str, env: Mapping[str, str] | None) -> str:
    return cipher(env).decrypt(
        token,
        "examiner credential (or store the password again: sync-pipelines detran add-examiner)",
    )


def cpf_digits(cpf: str) -> str:
    digits = re.sub(r"\D", "", cpf or "")
    if len(digits) != 11:
        raise ValueError(f"a CPF has 11 digits (got {len(digits)})")
    return digits


def parse_work_days(text: str) -> list[int]:
    """``"seg,ter,qua"``, ``"mon-fri"``, ``"1-5"`` or ``"1,3,5"`` → ISO weekdays."""
    import unicodedata

    plain = "".join(
        c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c)
    )

    def day(token: str) -> int:
        token = token.strip().rstrip(".")
        if token.isdigit() and 1 <= int(token) <= 7:
            return int(token)
        if token.removesuffix("-feira") in DAY_NAMES:
            return DAY_NAMES[token.removesuffix("-feira")]
        raise ValueError(f"unknown work day {token!r} (use seg..dom, mon..sun or 1..7)")

    days: set[int] = set()
    for part in filter(None, (p.strip() for p in plain.split(","))):
        if "-" in part and not part.endswith("-feira"):
            first, last = (day(x) for x in part.split("-", 1))
            if first > last:
                raise ValueError(f"work day range {part!r} goes backwards")
            days.update(range(first, last + 1))
        else:
            days.add(day(part))
    if not days:
        raise ValueError("at least one work day is needed")
    return sorted(days)


@dataclass(frozen=True)
class Examiner:
    usuario_id: int
    cpf: str  # digits
    profession: str
    unit: str | None
    work_days: tuple[int, ...]
    auto_sync: bool
    active: bool
    password_encrypted: str

    @property
    def partition_key(self) -> str:
        return str(self.usuario_id)

    def works_on(self, day: dt.date) -> bool:
        return day.isoweekday() in self.work_days

    def credentials(self, env: Mapping[str, str] | None) -> Credentials:
        password = decrypt(self.password_encrypted, env)
        register_secret(password)
        return Credentials(self.cpf, password, self.profession, self.unit)

    def __repr__(self) -> str:
        return (
            f"Examiner(usuario_id={self.usuario_id}, cpf={mask_cpf(self.cpf)!r}, "
            f"profession={self.profession!r}, active={self.active})"
        )


_COLUMNS = "usuario_id, cpf, profession, unit, work_days, auto_sync, active, password_encrypted"


def _examiner(row) -> Examiner:
    return Examiner(
        row.usuario_id,
        row.cpf,
        row.profession,
        row.unit,
        tuple(row.work_days or ()),
        row.auto_sync,
        row.active,
        row.password_encrypted,
    )


def save_examiner(
    db: Database,
    usuario_id: int,
    *,
    cpf: str | None = None,
    password: str | None = None,
    profession: str | None = None,
    unit: str | None = None,
    work_days: Iterable[int] | None = None,
    auto_sync: bool | None = None,
    active: bool | None = None,
    env: dict[str, str] | None = None,
) -> tuple[Examiner, bool]:
    """Add an examiner or update the given fields of one; returns (examiner, created).

    A new examiner needs cpf, password and profession. Changing the password drops the
    cached session, so the next run logs in with the new one.
    """
    if profession is not None and profession not in PROFESSIONS:
        raise ValueError(f"profession must be one of {', '.join(PROFESSIONS)}")
    values: dict[str, object] = {}
    if cpf is not None:
        values["cpf"] = cpf_digits(cpf)
    if password is not None:
        if not password:
            raise ValueError("the password is empty")
        values["password_encrypted"] = encrypt(password, env)
    if profession is not None:
        values["profession"] = profession
    if unit is not None:
        values["unit"] = unit.strip() or None
    if work_days is not None:
        values["work_days"] = sorted(set(work_days))
    if auto_sync is not None:
        values["auto_sync"] = auto_sync
    if active is not None:
        values["active"] = active
    with db.begin() as conn:
        exists = conn.execute(
            sa.text("SELECT 1 FROM detran_examiners WHERE usuario_id = :u FOR UPDATE"),
            {"u": usuario_id},
        ).first()
        if exists is None:
            missing = [k for k in ("cpf", "password_encrypted", "profession") if k not in values]
            if missing:
                names = ", ".join(m.replace("_encrypted", "") for m in missing)
                raise ValueError(f"a new examiner needs {names}")
            has_user = conn.execute(
                sa.text("SELECT 1 FROM usuarios WHERE id = :u"), {"u": usuario_id}
            ).first()
            if has_user is None:
                raise ExaminerNotFound(f"usuario {usuario_id} does not exist in usuarios")
            cols = ["usuario_id", *values]
            conn.execute(
                sa.text(
                    f"INSERT INTO detran_examiners ({', '.join(cols)}) "
                    f"VALUES ({', '.join(':' + c for c in cols)})"
                ),
                {"usuario_id": usuario_id, **values},
            )
        elif values:
            sets = ", ".join(f"{c} = :{c}" for c in values)
            conn.execute(
                sa.text(
                    f"UPDATE detran_examiners SET {sets}, updated_at = now() WHERE usuario_id = :usuario_id"
                ),
                {"usuario_id": usuario_id, **values},
            )
        if "password_encrypted" in values or "unit" in values or "cpf" in values:
            conn.execute(
                sa.text("DELETE FROM detran_sessions WHERE usuario_id = :u"), {"u": usuario_id}
            )
        row = conn.execute(
            sa.text(f"SELECT {_COLUMNS} FROM detran_examiners WHERE usuario_id = :u"),
            {"u": usuario_id},
        ).one()
    return _examiner(row), exists is None


def get_examiner(db: Database, usuario_id: int) -> Examiner:
    with db.connect() as conn:
        row = conn.execute(
            sa.text(f"SELECT {_COLUMNS} FROM detran_examiners WHERE usuario_id = :u"),
            {"u": usuario_id},
        ).first()
    if row is None:
        raise ExaminerNotFound(
            f"examiner {usuario_id} is not in detran_examiners "
            "(add it with `sync-pipelines detran add-examiner`)"
        )
    return _examiner(row)


def list_examiners(db: Database, *, active_only: bool = True) -> list[Examiner]:
    where = "WHERE active" if active_only else ""
    with db.connect() as conn:
        rows = conn.execute(
            sa.text(f"SELECT {_COLUMNS} FROM detran_examiners {where} ORDER BY usuario_id")
        ).all()
    return [_examiner(r) for r in rows]
