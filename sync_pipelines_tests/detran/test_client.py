"""The portal client against the simulator (real HTTP, ISO-8859-1 pages): login detours,
the day's bookings, empty days, wrong credentials, expired sessions, unrecognised pages."""

from __future__ import annotations

import pytest

from sync_pipelines.detran.client import (
    Credentials,
    PortalClient,
    SessionExpired,
    UnitNotAvailable,
    UnrecognisedPage,
    WrongCredentials,
)

from .conftest import DAY, DOCTOR, PSYCHOLOGIST


def client(settings, ex=DOCTOR, **changes) -> PortalClient:
    fields = {"password": ex.password, "unit": ex.unit, **changes}
    return PortalClient(
        settings, Credentials(ex.cpf, fields["password"], ex.profession, fields["unit"])
    )


def test_login_reads_the_search_form_and_a_day_of_bookings_in_latin1(portal, settings):
    c = client(settings)
    context = c.login()
    assert (context.method, context.unit_code, context.examiner_code) == (
        "consultarAgendaMedico",
        "1234",
        DOCTOR.code,
    )
    assert context.unit_label == "CIRETRAN SÃO PAULO - BUTANTÃ"
    day = c.fetch_day(DAY)
    expected = portal.bookings(DOCTOR.code, "1234", DAY)
    assert len(day.bookings) == len(expected) > 0
    first = day.bookings[0]
    assert first["cpf"] == expected[0]["cpf"] and first["nome"] == expected[0]["nome"]
    assert first["tipo_processo"] == expected[0]["tipo_processo"]  # accents intact
    # "NÃO INFORMADO" cells are None, never the text
    for got, want in zip(day.bookings, expected, strict=True):
        assert got["email"] == (None if want["email"] == "NÃO INFORMADO" else want["email"])


def test_reordered_columns_give_the_same_bookings(portal, settings):
    c = client(settings)
    c.login()
    before = c.fetch_day(DAY).bookings
    portal.columns_reordered = True
    after = c.fetch_day(DAY)
    assert after.columns[0] == "Nome"
    assert after.bookings == before


def test_day_without_bookings_is_empty_not_an_error(portal, settings):
    c = client(settings)
    c.login()
    sunday = DAY.replace(day=16)
    assert c.fetch_day(sunday).bookings == []


def test_wrong_password_is_a_clear_non_retryable_error_without_the_password(settings):
    c = client(settings, password="wrong-password-123")
    with pytest.raises(WrongCredentials) as info:
        c.login()
    assert not info.value.retryable
    message = str(info.value)
    assert "refused" in message and "wrong-password-123" not in message
    assert DOCTOR.cpf not in message and "52998224725" not in message


def test_open_session_elsewhere_is_forced_out_and_unit_choice_is_answered(portal, settings):
    portal.open_session_elsewhere(PSYCHOLOGIST.cpf)
    c = client(settings, PSYCHOLOGIST)
    context = c.login()
    assert context.unit_code == "2002" and context.method == "consultarAgendaPsicologo"
    assert portal.count(r"login\.do", "GET") == 2  # iniciarLogin + openChoice
    assert c.fetch_day(DAY).unit_code == "2002"


def test_unit_not_offered_names_the_offered_units(settings):
    c = client(settings, PSYCHOLOGIST, unit="9999")
    with pytest.raises(UnitNotAvailable, match="2001 = CIRETRAN CAMPINAS"):
        c.login()


def test_expired_session_is_reported_as_such(portal, settings):
    c = client(settings)
    c.login()
    portal.advance_clock(portal.session_idle_seconds + 1)
    with pytest.raises(SessionExpired):
        c.fetch_day(DAY)


def test_unrecognised_page_raises_and_is_saved_with_personal_data_masked(portal, settings):
    c = client(settings)
    c.login()
    portal.broken_pages = 1
    with pytest.raises(UnrecognisedPage) as info:
        c.fetch_day(DAY)
    saved = info.value.saved_to
    assert saved is not None and saved.parent == settings.diagnostics_dir
    assert "indispon" in saved.read_text()


def test_saved_pages_mask_cpfs_names_phones_and_emails(portal, settings):
    c = client(settings)
    c.login()
    bookings = portal.bookings(DOCTOR.code, "1234", DAY)
    # A table the parser cannot map (no CPF column) is unrecognised, and saved masked.
    portal.columns_reordered = True
    from sync_pipelines.sandbox import detran_sim

    original = detran_sim.COLUMNS[1]
    detran_sim.COLUMNS[1] = ("cpf", "Documento")
    try:
        with pytest.raises(UnrecognisedPage, match="no cpf column") as info:
            c.fetch_day(DAY)
    finally:
        detran_sim.COLUMNS[1] = original
    text = info.value.saved_to.read_text()
    assert "table" in text and "Documento" in text
    for booking in bookings:
        assert booking["cpf"] not in text
        assert booking["nome"] not in text
        if booking["telefone"] != "NÃO INFORMADO":
            assert booking["telefone"] not in text
        if booking["email"] != "NÃO INFORMADO":
            assert booking["email"] not in text


def test_logout_ends_the_session(portal, settings):
    c = client(settings)
    context = c.login()
    cookies = c.cookies()
    assert c.session_alive()
    c.logout()
    again = client(settings)
    again.restore(cookies, context)
    assert not again.session_alive()


# ---- the portal as strict as the contract: hidden dialogs, units, sloppy rows ---------------


def test_every_login_page_carries_the_new_session_text_so_only_the_script_call_decides(
    portal, settings
):
    import requests

    with requests.Session() as browser:
        first = browser.get(f"{portal.base_url}/gefor/SGU/login.do?method=iniciarLogin")
        refused = browser.post(
            f"{portal.base_url}/gefor/SGU/login.do",
            data={
                "method": "autenticar",
                "codigo": DOCTOR.cpf,
                "senha": "x",
                "forceLogout": "false",
            },
        )
    for page in (first, refused):
        text = page.content.decode("iso-8859-1")
        assert "Já existe uma sessão aberta" in text and "openDialogNewSession(" in text
    # Still the client reads the refusal as one, and the multi-unit login as a unit choice.
    with pytest.raises(WrongCredentials):
        client(settings, password="wrong").login()
    assert client(settings, PSYCHOLOGIST).login().unit_code == "2002"


def test_wrong_password_is_posted_once_and_reported_as_refused_credentials(portal, settings):
    c = client(settings, PSYCHOLOGIST, password="wrong-password-123")
    with pytest.raises(WrongCredentials, match="refused credentials"):
        c.login()
    assert portal.password_posts == {PSYCHOLOGIST.cpf: 1}
    assert portal.count(r"openChoice") == 0


def test_two_unit_login_offers_both_units_and_logs_in_at_the_one_asked(portal, settings):
    c = client(settings, PSYCHOLOGIST, unit=None)
    context = c.login()
    assert context.units == {"2001": "CIRETRAN CAMPINAS", "2002": "CIRETRAN JUNDIAÍ"}
    assert context.unit_code == "2001"  # no configured unit: the first one offered
    c.logout()
    assert c.login("2002").unit_code == "2002"
    assert c.context.unit_label == "CIRETRAN JUNDIAÍ"
    assert portal.password_posts == {PSYCHOLOGIST.cpf: 4}  # two logins, each with a choice


def test_rows_without_closing_tags_and_with_character_references_are_all_read(portal, settings):
    c = client(settings)
    c.login()
    expected = portal.bookings(DOCTOR.code, "1234", DAY)
    assert len(expected) >= 2  # odd rows are the sloppy ones
    day = c.fetch_day(DAY)
    assert day.unreadable == []
    assert [(b["hora"], b["cpf"], b["nome"]) for b in day.bookings] == [
        (e["hora"], e["cpf"], e["nome"]) for e in expected
    ]
    assert [b["tipo_processo"] for b in day.bookings] == [e["tipo_processo"] for e in expected]


def test_an_unreadable_row_is_listed_by_number_and_the_others_are_read(portal, settings):
    c = client(settings)
    c.login()
    expected = portal.bookings(DOCTOR.code, "1234", DAY)
    victim = expected[1]
    portal.garble_booking(DOCTOR.code, "1234", DAY, victim["cpf"], how="cells")
    day = c.fetch_day(DAY)
    assert [(u.row, u.after) for u in day.unreadable] == [(2, expected[0]["hora"])]
    assert "cells" in day.unreadable[0].reason
    assert [b["cpf"] for b in day.bookings] == [e["cpf"] for e in expected if e is not victim]
    assert day.row_numbers == [n for n in range(1, len(expected) + 1) if n != 2]


def test_saved_pages_mask_names_in_cells_without_closing_tags(portal, settings):
    from sync_pipelines.detran.client import mask_page

    c = client(settings)
    c.login()
    if len(portal.bookings(DOCTOR.code, "1234", DAY)) % 2:
        portal.add_booking(DOCTOR.code, "1234", DAY, "17:40")
    bookings = portal.bookings(DOCTOR.code, "1234", DAY)
    assert len(bookings) % 2 == 0  # the last row is a sloppy one: no </td> after it at all
    response = c.http.request(
        "POST",
        "/gefor/GFR/divisao/divisaoEquitativa.do",
        data={
            "method": "consultarAgendaMedico",
            "idUnidadeTransitoConsulta": "1234",
            "idUsuarioMedicoConsulta": DOCTOR.code,
            "dataReferencia": f"{DAY:%d/%m/%Y}",
            "data": f"{DAY:%d/%m/%Y}",
        },
    )
    page = response.content.decode("iso-8859-1")
    assert "<TD class=list_linha>" in page  # the sloppy rows are there
    masked = mask_page(page)
    import html as html_module

    plain = html_module.unescape(masked)
    for booking in bookings:
        for word in booking["nome"].split():
            assert word not in plain, "a name survived the masking"
        assert booking["cpf"] not in plain
    assert "Hora" in plain and "agenda" in plain
