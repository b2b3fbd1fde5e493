"""Sandbox part of the DETRAN agenda sync: the portal simulator, two examiners, demo days.

- examiner 1: a doctor (médico) at one unit, Monday to Friday;
- examiner 2: a psychologist (psicólogo) accredited at two units, so every login goes
  through the portal's unit choice, Monday to Saturday: at Campinas (2001) on Monday,
  Wednesday and Friday, at Jundiaí (2002) on Tuesday, Thursday and Saturday. The sync
  reads both units; 2002 is only the unit it logs in at first.

``prepare`` creates their ``usuarios`` rows and ``detran_examiners`` entries (passwords
encrypted with the sandbox key); the demo then syncs today and the next two days for both.
Tests import ``EXAMINERS`` and ``build_simulator`` from here.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ..detran.examiners import KEY_VAR, save_examiner
from ..lib.db import database_for_role
from ..lib.migrations import migrate
from .detran_sim import DetranPortalSimulator, PortalUser
from .simulators import SandboxPart

PARTITIONS_NAME = "detran_examiners"
# A fixed Fernet key, for the sandbox only (never reuse it for real credentials).
SANDBOX_KEY = "c2FuZGJveC1kZXRyYW4ta2V5LW5vdC1mb3ItcmVhbCE="
DEMO_DAYS = 3


@dataclass(frozen=True)
class SandboxExaminer:
    usuario_id: int
    nome: str
    cpf: str
    password: str
    code: str
    profession: str
    units: dict[str, str]
    unit: str | None = None
    work_days: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    schedule: dict[int, str] | None = None  # ISO weekday -> unit, for several units

    def portal_user(self) -> PortalUser:
        return PortalUser(
            self.cpf,
            self.password,
            self.code,
            self.profession,
            self.units,
            self.nome,
            schedule=self.schedule,
        )

    def unit_on(self, day: dt.date) -> str:
        """The unit this examiner works at on ``day``."""
        if self.schedule is None:
            return next(iter(self.units))
        return self.schedule[day.isoweekday()]


EXAMINERS = [
    SandboxExaminer(
        1,
        "Dra. Helena Prado",
        "529.982.247-25",
        "Perito#2024",
        "M1A2B",
        "medico",
        {"1234": "CIRETRAN SÃO PAULO - BUTANTÃ"},
    ),
    SandboxExaminer(
        2,
        "Dr. Otávio Lins",
        "111.444.777-35",
        "Psicólogo@9",
        "P7Q8R",
        "psicologo",
        {"2001": "CIRETRAN CAMPINAS", "2002": "CIRETRAN JUNDIAÍ"},
        unit="2002",
        work_days=[1, 2, 3, 4, 5, 6],
        schedule={1: "2001", 2: "2002", 3: "2001", 4: "2002", 5: "2001", 6: "2002", 7: "2001"},
    ),
]


def build_simulator(seed: int = 0, **knobs) -> DetranPortalSimulator:
    return DetranPortalSimulator(
        seed, users=[e.portal_user() for e in EXAMINERS], bookings_per_day=(1, 8), **knobs
    )


def sandbox_env(base_url: str) -> dict[str, str]:
    root = os.environ.get("SYNC_SANDBOX_DIR") or ".sandbox"
    return {
        "DETRAN_PORTAL_URL": base_url,
        KEY_VAR: SANDBOX_KEY,
        "DETRAN_DIAGNOSTICS_DIR": os.path.join(root, "detran_pages"),
    }


def seed_examiners(db, env: Mapping[str, str]) -> None:
    """Create the sandbox examiners' usuarios rows and detran_examiners entries (idempotent)."""
    with db.begin() as conn:
        for ex in EXAMINERS:
            conn.execute(
                sa.text(
                    "INSERT INTO usuarios (id, nome) VALUES (:id, :nome) ON CONFLICT (id) DO NOTHING"
                ),
                {"id": ex.usuario_id, "nome": ex.nome},
            )
        # Rows inserted with explicit ids: move the sequence past them.
        conn.execute(
            sa.text(
                "SELECT setval(pg_get_serial_sequence('usuarios', 'id'),"
                " GREATEST((SELECT max(id) FROM usuarios), 1))"
            )
        )
    for ex in EXAMINERS:
        save_examiner(
            db,
            ex.usuario_id,
            cpf=ex.cpf,
            password=ex.password,
            profession=ex.profession,
            unit=ex.unit,
            work_days=ex.work_days,
            auto_sync=True,
            active=True,
            env=dict(env),
        )


def prepare(env: Mapping[str, str]) -> None:
    db = database_for_role("detran", os.environ)
    try:
        migrate(db, "detran")
        seed_examiners(db, env)
    finally:
        db.dispose()


def demo_partition_keys(days: int = DEMO_DAYS) -> list[str]:
    today = dt.datetime.now(ZoneInfo("America/Sao_Paulo")).date()
    return [
        f"{today + dt.timedelta(days=i)}|{ex.usuario_id}" for i in range(days) for ex in EXAMINERS
    ]


DETRAN_PART = SandboxPart(
    name="detran",
    simulator=build_simulator,
    env=sandbox_env,
    prepare=prepare,
    dynamic_partitions=lambda env: {PARTITIONS_NAME: [str(e.usuario_id) for e in EXAMINERS]},
    demo_partitions=lambda: {
        "detran/agenda_slots": demo_partition_keys(),
        "detran/agendamentos": demo_partition_keys(),
    },
)
