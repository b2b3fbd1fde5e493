"""Secrets and personal data are masked in text, mappings and log records; ordinary text is not."""

from __future__ import annotations

import logging
import time

import pytest

from sync_pipelines.lib.redact import (
    RedactingFilter,
    install_log_redaction,
    mask_cpf,
    mask_email,
    mask_phone,
    redact,
    redact_mapping,
    redact_pii,
    register_secret,
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


def test_redact_is_fast_enough_for_every_log_line() -> None:
    line = (
        "GET https://api.tiny.com.br/public-api/v3/ordem-servico?limit=100&offset=300 "
        "-> 200 in 0.31 s; page 4 of 30, 100 orders, 2 changed, window 2024-03-01..2024-03-31"
    )
    start = time.perf_counter()
    for _ in range(2000):
        redact(line)
    per_line = (time.perf_counter() - start) / 2000
    assert per_line < 1e-3, f"{per_line * 1e6:.0f} µs per line"


@pytest.mark.parametrize("unit", ["x.", "ab-", "a@", "(1", "a://b:", "x@y.", "eyJ.", "1."])
def test_long_repetitive_input_takes_linear_time(unit: str) -> None:
    # A regex that backtracks quadratically would take minutes on a logged HTML page.
    text = unit * (40_000 // len(unit))
    start = time.perf_counter()
    redact(text)
    assert time.perf_counter() - start < 0.5
