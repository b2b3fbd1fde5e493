"""No secret and no personal data in anything Dagster stored after the demo's syncs.

The demo ran every source against the sandbox with its credentials (OAuth secrets, service
keys, encryption keys, issued tokens) and its seeded people (CPFs, phones, e-mails). The scan
reads every run record, every event of every run (messages, metadata, errors, check results)
and every captured stdout/stderr file, and must find none of them.
"""

from __future__ import annotations

import importlib
from collections import Counter

import sqlalchemy as sa

from sync_pipelines.lib.db import normalize_url

from .leak_scan import (
    Needles,
    captured_log_texts,
    describe,
    event_log_texts,
    find_leaks,
    secrets_from_env,
    values_from_database,
)


def _sandbox_needles(demo_sandbox) -> tuple[Needles, list[str]]:
    needles = Needles()
    secrets_from_env(demo_sandbox.env, needles)
    # DETRAN examiners' portal passwords exist only in the sandbox's seed (stored encrypted).
    try:
        detran_data = importlib.import_module("sync_pipelines.sandbox.detran_data")
    except ImportError:
        detran_data = None
    for examiner in getattr(detran_data, "EXAMINERS", []):
        needles.add_secret(getattr(examiner, "password", None), "DETRAN examiner password")
    engine = sa.create_engine(normalize_url(demo_sandbox.database_url))
    try:
        columns = values_from_database(engine, needles)
        _tiny_tokens(engine, demo_sandbox.env, needles)
    finally:
        engine.dispose()
    return needles, columns


def _tiny_tokens(engine: sa.Engine, env, needles: Needles) -> None:
    """The Tiny token pair is stored encrypted (tiny/client.py): look for the tokens themselves."""
    from sync_pipelines.lib.crypto import CREDENTIALS_KEY_VAR, CredentialsCipher

    cipher = CredentialsCipher(env[CREDENTIALS_KEY_VAR])
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT access_token_encrypted, refresh_token_encrypted FROM tiny.tiny_oauth_tokens"
            )
        ).all()
    for access, refresh in rows:
        label = "tiny.tiny_oauth_tokens"
        needles.add_secret(access and cipher.decrypt(access, "access"), f"{label}.access_token")
        needles.add_secret(cipher.decrypt(refresh, "refresh"), f"{label}.refresh_token")


def test_the_scan_has_something_to_look_for(demo_sandbox):
    """Guards against a vacuous pass: the sandbox's secrets and people were collected."""
    assert demo_sandbox.outcomes.get("failure", 0) == 0, "\n".join(demo_sandbox.log)
    needles, columns = _sandbox_needles(demo_sandbox)
    labels = needles.counts()
    assert "$TINY_CLIENT_SECRET" in labels and "$GESTAO_SCOUTER_SERVICE_KEY" in labels
    assert "tiny.tiny_oauth_tokens.refresh_token" in labels  # issued by the simulator
    assert "tiny.ordens_servico.cliente_cpf_cnpj" in columns
    assert "whatsapp.contacts.phone" in columns
    assert len(needles.digits) > 1000  # CPFs and phones
    assert len(needles.emails) > 10


def test_event_log_and_captured_logs_hold_no_secret_or_personal_data(demo_sandbox):
    needles, _ = _sandbox_needles(demo_sandbox)
    instance = demo_sandbox.instance
    texts = list(event_log_texts(instance)) + list(captured_log_texts(demo_sandbox.dagster_home))
    assert len(instance.get_runs()) >= 5 and len(texts) > 100
    found = find_leaks(texts, needles)
    assert not found, (
        "secrets or personal data in Dagster's storage (labels are variables or "
        "schema.table.column; values are not shown):\n" + describe(found)
    )


def test_a_leak_is_reported_by_its_name_never_by_its_value():
    needles = Needles()
    secrets_from_env(
        {
            "TINY_CLIENT_SECRET": "s3cr3t-value-xyz",
            "TENANT_URL": "mysql+pymysql://app:pw-in-url-123@db:3306/x",
            "TINY_API_BASE_URL": "http://127.0.0.1:1234/api",
        },
        needles,
    )
    needles.add_personal("123.456.789-09", "tiny.ordens_servico.cliente_cpf_cnpj")
    needles.add_personal("+55 (11) 98765-4321", "whatsapp.contacts.phone")
    needles.add_personal("Maria@Example.com", "detran.agendamentos.email")
    texts = [
        ("run a STEP_FAILURE", "error: auth failed with s3cr3t-value-xyz"),
        ("run a log message", "connect mysql://app:pw-in-url-123@db failed"),
        ("run b ASSET_MATERIALIZATION", '{"cpf": "12345678909", "tel": "11 98765 4321"}'),
        ("captured log x", "sending to maria@example.com"),
        ("run c log message", "2024-11-05 10:40:51 run 12345678 fine; ***.***.*89-09"),
    ]
    found = find_leaks(texts, needles)
    assert set(found) == {
        "$TINY_CLIENT_SECRET",
        "password in $TENANT_URL",
        "tiny.ordens_servico.cliente_cpf_cnpj",
        "whatsapp.contacts.phone",
        "detran.agendamentos.email",
    }
    assert found["whatsapp.contacts.phone"] == Counter({"run b ASSET_MATERIALIZATION": 1})
    report = describe(found)
    for value in ("s3cr3t", "pw-in-url", "12345678909", "98765", "maria@"):
        assert value not in report.lower()
