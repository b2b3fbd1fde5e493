"""The page reader on its own: which dialog a login page opened, and agenda rows in the
sloppy but valid HTML the portal may send."""

from __future__ import annotations

from sync_pipelines.detran.parse import parse_page, read_agenda_table

DIALOGS = (
    '<div id="dialogNewSession" style="display:none">Já existe uma sessão aberta.'
    '<button onclick="openDialogNewSession()">Sim</button></div>'
    "<script>// openDialogChoice() is called by the server\n"
    "/* openDialogNewSession('x') */\n"
    "function openDialogNewSession(msg) { $('#d').dialog('open'); }\n"
    "var f = function openDialogChoice () { };</script>"
)


def test_hidden_dialogs_definitions_comments_and_buttons_open_no_dialog():
    page = parse_page(f"<html><body>{DIALOGS}<form name=LoginActionForm></form></body></html>")
    assert page.dialogs_opened == frozenset()
    assert "ja existe uma sessao aberta" in page.normalized_text  # the text proves nothing
    assert page.form("LoginActionForm") is not None


def test_the_script_call_says_which_dialog_opened():
    ready = "<script>$(document).ready(function(){ openDialogChoice(); });</script>"
    onload = "<body onload=\"openDialogNewSession('Já existe')\">"
    assert parse_page(f"<html><body>{DIALOGS}{ready}</body></html>").dialogs_opened == {
        "openDialogChoice"
    }
    assert parse_page(f"<html>{onload}{DIALOGS}</body></html>").dialogs_opened == {
        "openDialogNewSession"
    }


def test_rows_without_end_tags_capitals_and_unquoted_attributes_are_read():
    html = (
        "<html><body><TABLE id=agenda><THEAD><TR><TH class=list_titulo>Hora"
        "<TH>CPF<TH>Nome</THEAD><TBODY>"
        "<TR class=l><TD>08:00<TD>529.982.247-25<TD>Jo&#227;o&nbsp;Silva"
        "<TR><TD> 08:20 <TD>111.444.777-35<TD>Ana<br>Lima"
        "<tr><td>--:--<td>x<td>y"
        "<tr><td>09:00<td>only two cells"
        "</TABLE></body></html>"
    )
    table = read_agenda_table(parse_page(html).table("agenda"))
    assert [(b["hora"], b["cpf"], b["nome"]) for b in table.bookings] == [
        ("08:00", "529.982.247-25", "João Silva"),
        ("08:20", "111.444.777-35", "Ana Lima"),
    ]
    assert [(u.row, u.after) for u in table.unreadable] == [(3, "08:20"), (4, "08:20")]
    assert "x" not in table.unreadable[0].reason and "only" not in table.unreadable[1].reason
