"""``sync-pipelines detran add-examiner``: add an examiner or update one, password from stdin.

The password is read from standard input (a prompt without echo on a terminal, the first
line otherwise), never from an argument: arguments end up in shell history and ``ps``.
The examiner becomes a Dagster partition at the next tick of ``detran_examiners_sensor``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence

from ..lib.crypto import CredentialsKeyError
from ..lib.db import DatabaseConfigError, database_for_role
from ..lib.redact import mask_cpf
from .examiners import (
    PROFESSIONS,
    ExaminerNotFound,
    parse_work_days,
    save_examiner,
)

WEEKDAY_NAMES = {1: "seg", 2: "ter", 3: "qua", 4: "qui", 5: "sex", 6: "sáb", 7: "dom"}


def add_examiner_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="sync-pipelines detran add-examiner", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--usuario-id", type=int, required=True, help="usuarios.id of the examiner")
    parser.add_argument("--cpf", help="the portal login (000.000.000-00 or 11 digits)")
    parser.add_argument("--profession", choices=PROFESSIONS, help="medico or psicologo")
    parser.add_argument(
        "--unit",
        help="idUnidTransito to log in at first when the portal offers several units "
        "(every offered unit is read; empty: the first offered)",
    )
    parser.add_argument(
        "--work-days", help="days to sync: 'seg-sex', 'seg,qua,sex', 'mon-sat' or '1-5'"
    )
    parser.add_argument(
        "--auto-sync", action=argparse.BooleanOptionalAction, help="picked up by the schedules"
    )
    parser.add_argument(
        "--active", action=argparse.BooleanOptionalAction, help="synced at all (a partition)"
    )
    parser.add_argument(
        "--keep-password",
        action="store_true",
        help="update other fields only; do not read a password from standard input",
    )
    return parser


def _read_password() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("portal password: ")
    return sys.stdin.readline().rstrip("\r\n")


def add_examiner_command(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv``, store the examiner, print a summary. Returns an exit code."""
    return add_examiner_from_args(add_examiner_parser().parse_args(argv))


def add_examiner_from_args(args: argparse.Namespace) -> int:
    """The command for arguments parsed by ``add_examiner_parser`` (or a subparser it filled)."""
    try:
        work_days = parse_work_days(args.work_days) if args.work_days else None
    except ValueError as exc:
        print(f"--work-days: {exc}", file=sys.stderr)
        return 2
    password = None
    if not args.keep_password:
        password = _read_password()
        if not password:
            print("no password on standard input (use --keep-password to keep it)", file=sys.stderr)
            return 2
    try:
        db = database_for_role("detran", os.environ)
    except DatabaseConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    try:
        examiner, created = save_examiner(
            db,
            args.usuario_id,
            cpf=args.cpf,
            password=password,
            profession=args.profession,
            unit=args.unit,
            work_days=work_days,
            auto_sync=args.auto_sync,
            active=args.active,
            env=os.environ,  # the command's environment holds DETRAN_CREDENTIALS_KEY
        )
    except (ValueError, ExaminerNotFound, CredentialsKeyError) as exc:
        print(f"examiner {args.usuario_id}: {exc}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
    days = ",".join(WEEKDAY_NAMES[d] for d in examiner.work_days)
    print(
        f"examiner {examiner.usuario_id} {'added' if created else 'updated'}: "
        f"{mask_cpf(examiner.cpf)}, {examiner.profession}, unit {examiner.unit or '-'}, "
        f"work days {days}, auto-sync {'on' if examiner.auto_sync else 'off'}, "
        f"{'active' if examiner.active else 'inactive'}"
        + ("; password stored encrypted" if password else "")
    )
    return 0
