"""Secrets and personal data are masked in text, mappings and log records; ordinary text is not."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

from sync_pipelines.lib.redact import (
    SLOT_HISTORY,
    RedactingFilter,
    install_log_redaction,
    mask_cpf,
    mask_email,
    mask_phone,
    redact,
    redact_mapping,
    redact_pii,
    register_secret,
    registered_secret_count,
)

JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJl-_x"


@pytest.mark.parametrize(
    ("text", "secret", "expected"),
    [
        ("Authorization: Bearer abc.DEF-123", "abc.DEF-123", "Authorization: Bearer ***"),
        ("authorization=Basic dXNlcjpwYXNz", "dXNlcjpwYXNz", "authorization=Basic ***"),
        ("{'Authorization': 'Bearer tok999x'}", "tok999x", "{'Authorization': 'Bearer ***'}"),
        ("apikey: sb_secret_xyz", "sb_secret_xyz", "apikey: ***"),
        ("X-Api-Key: k-123456", "k-123456", "X-Api-Key: ***"),
        ("/x?access_token=SECRET456&limit=100", "SECRET456", "/x?access_token=***&limit=100"),
        ("refresh_token=rt-1&client_id=3", "rt-1", "refresh_token=***&client_id=3"),
        ("client_secret=s3cr3t&x=1", "s3cr3t", "client_secret=***&x=1"),
        ("grant_type=authorization_code&code=OAUTHCODE1", "OAUTHCODE1", None),
        ("password=pw123&senha=minhaSenha", "minhaSenha", "password=***&senha=***"),
        ("apikey=AK1234&service_key=SK5678", "SK5678", "apikey=***&service_key=***"),
        ('{"access_token": "tok1", "expires_in": 14400}', "tok1", None),
        ('{"password":"p\\"w"}', 'p\\"w', '{"password":"***"}'),
        ("[('codigo', ''), ('senha', 'minhaSenha')]", "minhaSenha", None),
        ("token: abcdef123", "abcdef123", "token: ***"),
        ("Cookie: JSESSIONID=ABC123; lang=pt", "ABC123", "Cookie: ***"),
        ("/bot123456:ABC-def/sendMessage", "ABC-def", "/bot***/sendMessage"),
        ("sent with 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0", "AAHdqTcvCH1vGWJxfSeofS", None),
        (f"key {JWT} end", "c2lnbmF0dXJl", "key *** end"),
        ("postgresql+psycopg2://sync:hunter22@db:5432/x", "hunter22", None),
    ],
)
def test_secret_patterns_are_masked(text: str, secret: str, expected: str | None) -> None:
    masked = redact(text)
    assert secret not in masked
    assert "***" in masked
    if expected is not None:
        assert masked == expected


def test_oauth_code_is_masked_as_form_value_but_json_error_codes_stay() -> None:
    assert redact("code=abc123&state=x") == "code=***&state=x"
    body = '{"code": "PGRST204", "message": "Could not find the \'x\' column"}'
    assert redact(body) == body


def test_registered_secret_is_masked_anywhere_and_short_values_are_ignored() -> None:
    register_secret("plain-looking-value-42")
    register_secret("abc")
    assert redact("oops plain-looking-value-42 leaked") == "oops *** leaked"
    assert redact("abc stays") == "abc stays"


def test_personal_data_masks_keep_only_the_last_four_digits() -> None:
    assert mask_cpf("123.456.789-01") == "***.***.*89-01"
    assert mask_cpf("12345678901") == "***.***.*89-01"
    assert mask_phone("(41) 98888-0000") == "(**) *****-0000"
    assert mask_email("ana@example.com") == "a***@example.com"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cpf 862.149.410-81 ok", "cpf ***.***.*10-81 ok"),
        ("termo_busca=86214941081&x", "termo_busca=***.***.*10-81&x"),
        ("tel (41) 98888-0000.", "tel (**) *****-0000."),
        ("tel +55 41 98888 0000", "tel +** ** ***** 0000"),
        ("tel +55 (41) 3333-4444", "tel +** (**) ****-4444"),
        ("tel 41988880000", "tel *******0000"),
        ("tel 41 98888-0000", "tel ** *****-0000"),
        ("wa 5541988880000", "wa *********0000"),
        ("mail Ana.Lima+x@mail.example.com.br!", "mail A***@mail.example.com.br!"),
    ],
)
def test_personal_data_inside_free_text_is_masked(text: str, expected: str) -> None:
    assert redact_pii(text) == expected
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "order 900001 numero 1201 total 2913",
        "dates 2024-03-05 05/03/2024 2024-03-05T10:00:00-03:00 10:00:00",
        "protocol 20250128085356853228 and 202501280853568",
        "took 0.42 s; 127.0.0.1:8080; R$ 1.234,56; ts 1700000000 ms 1700000000123",
        "HTTP 503 after 3 attempts; status code: 500; situacao 3; id 84554620",
        "GET /ordem-servico?limit=100&offset=200&dataInicialEmissao=2024-03-01",
        '{"count": 3, "code": "23505"}',
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_pii_can_be_kept_when_asked() -> None:
    text = "password=x1y2 for ana@example.com"
    assert redact(text, pii=False) == "password=*** for ana@example.com"


def test_redact_mapping_masks_sensitive_keys_and_pii_values() -> None:
    headers = {
        "Authorization": "Bearer abc",
        "apikey": "k",
        "Accept": "application/json",
        "termo_busca": "86214941081",
        "limit": 50,
    }
    assert redact_mapping(headers) == {
        "Authorization": "***",
        "apikey": "***",
        "Accept": "application/json",
        "termo_busca": "***.***.*10-81",
        "limit": 50,
    }


def test_logging_filter_rewrites_message_args_and_traceback(caplog) -> None:
    logger = logging.getLogger("sync_pipelines.test_redact_filter")
    logger.addFilter(RedactingFilter())
    caplog.set_level(logging.DEBUG, logger=logger.name)
    logger.info("calling %s for %s", "/x?access_token=SECRET456", "ana@example.com")
    try:
        raise RuntimeError("failed with password=SECRET789 for CPF 862.149.410-81")
    except RuntimeError:
        logger.exception("boom Bearer SECRET123abc")
    text = caplog.text
    for leaked in ("SECRET456", "SECRET789", "SECRET123abc", "ana@", "862.149"):
        assert leaked not in text
    assert "access_token=***" in text
    assert "RuntimeError: failed with password=***" in text
    assert "a***@example.com" in text


def test_install_log_redaction_covers_existing_child_loggers(caplog) -> None:
    child = logging.getLogger("sync_pipelines_test_parent.child")
    install_log_redaction("sync_pipelines_test_parent")
    install_log_redaction("sync_pipelines_test_parent")  # idempotent
    assert sum(isinstance(f, RedactingFilter) for f in child.filters) == 1
    caplog.set_level(logging.INFO)
    child.info("client_secret=%s", "topsecret")
    assert "topsecret" not in caplog.text
    assert "client_secret=***" in caplog.text


def test_a_rotating_secret_keeps_a_bounded_set_and_masks_its_newest_values() -> None:
    # Each registered value costs every redacted line a little: a token renewed thousands of
    # times in a long run must not make the set (and that cost) grow without bound. The
    # per-line cost is printed by bench/bench_redact.py.
    before = registered_secret_count()
    values = [f"rotating-token-value-{n:04d}" for n in range(600)]
    for value in values:
        register_secret(value, slot="test:rotating")
    assert registered_secret_count() - before <= SLOT_HISTORY
    assert redact(f"a {values[-1]} b {values[-2]} c") == "a *** b *** c"
    assert values[0] in redact(f"x {values[0]}")


def test_slot_values_do_not_replace_values_registered_for_good() -> None:
    register_secret("client-secret-kept-for-good")
    register_secret("rotating-one", slot="test:other")
    register_secret("rotating-two", slot="test:other")
    register_secret("rotating-six", slot="test:other")
    assert redact("client-secret-kept-for-good") == "***"


CPU_BUDGET_S = 60


def test_long_repetitive_input_is_redacted_within_a_cpu_budget() -> None:
    """A regex that backtracks quadratically or worse would spin for minutes on a logged HTML
    page; a linear one needs milliseconds. The child process gets a CPU-time limit (the
    kernel kills it past the budget), so a busy machine cannot make this fail: only the
    process's own CPU work counts. The timings are printed by bench/bench_redact.py."""
    script = textwrap.dedent(
        f"""
        import resource
        resource.setrlimit(resource.RLIMIT_CPU, ({CPU_BUDGET_S}, {CPU_BUDGET_S}))
        from sync_pipelines.lib.redact import redact
        for unit in {REPETITIVE_UNITS!r}:
            redact(unit * (40_000 // len(unit)))
        print("done")
        """
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert child.returncode == 0 and child.stdout.strip() == "done", child.stderr[-2000:]


REPETITIVE_UNITS = ["x.", "ab-", "a@", "(1", "a://b:", "x@y.", "eyJ.", "1."]
