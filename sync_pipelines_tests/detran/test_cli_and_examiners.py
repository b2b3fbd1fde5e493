"""Examiners: the add-examiner command (password from stdin, encrypted at rest) and the
work-day parsing the schedules rely on."""

from __future__ import annotations

import io
import os

import pytest
import sqlalchemy as sa

from sync_pipelines.detran.cli import add_examiner_command
from sync_pipelines.detran.examiners import get_examiner, parse_work_days


@pytest.fixture
def cli_env(monkeypatch, detran_db, pg_url, pg_schema):
    monkeypatch.setenv("DETRAN_DATABASE_URL", pg_url)
    monkeypatch.setenv("DETRAN_DATABASE_SCHEMA", pg_schema)
    with detran_db.begin() as conn:
        conn.execute(sa.text("INSERT INTO usuarios (id, nome) VALUES (30, 'Dra. Teste')"))
    return detran_db


def test_add_examiner_reads_the_password_from_stdin_and_stores_it_encrypted(
    cli_env, monkeypatch, capsys
):
    monkeypatch.setattr("sys.stdin", io.StringIO("Segredo#Único1\n"))
    code = add_examiner_command(
        ["--usuario-id", "30", "--cpf", "390.533.447-05", "--profession", "psicologo",
         "--unit", "2001", "--work-days", "seg-qua,sex"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "examiner 30 added" in out
    assert "390.533.447-05" not in out and "39053344705" not in out and "Segredo" not in out
    examiner = get_examiner(cli_env, 30)
    assert examiner.work_days == (1, 2, 3, 5) and examiner.unit == "2001"
    assert examiner.auto_sync and examiner.active
    assert "Segredo" not in examiner.password_encrypted
    assert examiner.credentials(os.environ).password == "Segredo#Único1"
    # update without a new password
    code = add_examiner_command(["--usuario-id", "30", "--no-auto-sync", "--keep-password"])
    assert code == 0 and "updated" in capsys.readouterr().out
    updated = get_examiner(cli_env, 30)
    assert not updated.auto_sync and updated.credentials(os.environ).password == "Segredo#Único1"


def test_add_examiner_refuses_an_incomplete_new_examiner(cli_env, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("x-password\n"))
    assert add_examiner_command(["--usuario-id", "30", "--cpf", "39053344705"]) == 1
    assert "needs profession" in capsys.readouterr().err


def test_add_examiner_without_the_key_says_how_to_make_one(cli_env, monkeypatch, capsys):
    monkeypatch.delenv("DETRAN_CREDENTIALS_KEY")
    monkeypatch.setattr("sys.stdin", io.StringIO("x-password\n"))
    argv = ["--usuario-id", "30", "--cpf", "39053344705", "--profession", "medico"]
    assert add_examiner_command(argv) == 1
    assert "Fernet.generate_key" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, days",
    [("seg-sex", [1, 2, 3, 4, 5]), ("mon,wed,fri", [1, 3, 5]), ("1-6", [1, 2, 3, 4, 5, 6]),
     ("Segunda-feira, sábado", [1, 6])],
)  # fmt: skip
def test_work_days_are_read_in_portuguese_english_or_numbers(text, days):
    assert parse_work_days(text) == days


def test_unknown_work_day_is_an_error():
    with pytest.raises(ValueError, match="unknown work day"):
        parse_work_days("seg,feriado")
