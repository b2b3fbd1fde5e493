"""The Tiny v3 simulator behaves like contracts/tiny.md: paging, filters, payload traps,
OAuth token flow, both rate-limit buckets and their headers, and the admin controls — all
over real sockets with ``requests``."""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal, InvalidOperation

import pytest
import requests

from sync_pipelines.sandbox.parts import PARTS
from sync_pipelines.sandbox.tiny_sim import API_PREFIX, TINY_PART, TOKEN_PATH, TinySimulator

TODAY = dt.date(2024, 6, 15)
# Tests that are not about rate limits get a limit they never reach.
UNLIMITED = {"per_minute_limit": 10**6, "burst_per_second": 10**6}


@pytest.fixture
def make_sim() -> Iterator[Callable[..., TinySimulator]]:
    started: list[TinySimulator] = []

    def make(**kwargs) -> TinySimulator:
        options = {"seed": 11, "n_orders": 400, "today": TODAY, **UNLIMITED, **kwargs}
        sim = TinySimulator(**options)
        sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim) -> TinySimulator:
    return make_sim()


def api_session(sim: TinySimulator, token: str | None = None) -> requests.Session:
    session = requests.Session()
    token = token or sim.issue_initial_tokens()["access_token"]
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def api(session: requests.Session, sim: TinySimulator, path: str = "/ordem-servico", **params):
    return session.get(f"{sim.base_url}{API_PREFIX}{path}", params=params, timeout=5)


def token_request(sim: TinySimulator, **form) -> requests.Response:
    form = {"client_id": sim.client_id, "client_secret": sim.client_secret, **form}
    return requests.post(f"{sim.base_url}{TOKEN_PATH}", data=form, timeout=5)


def all_items(session, sim, **params) -> list[dict]:
    items, offset = [], 0
    while True:
        body = api(session, sim, offset=offset, limit=100, orderBy="asc", **params).json()
        items += body["itens"]
        offset += len(body["itens"])
        if not body["itens"] or offset >= body["paginacao"]["total"]:
            return items


def ground_truth(sim: TinySimulator, fields: str) -> list[dict]:
    reply = requests.get(
        f"{sim.base_url}/__admin/tiny/orders", params={"fields": fields}, timeout=5
    )
    return reply.json()["itens"]


def rate_headers(reply: requests.Response) -> tuple[int, int, int]:
    return tuple(
        int(reply.headers[f"X-RateLimit-{name}"]) for name in ("Limit", "Remaining", "Reset")
    )


# ---- listing ------------------------------------------------------------------------------


def test_offset_pages_cover_every_order_once_in_stable_data_id_order(sim) -> None:
    session = api_session(sim)
    seen, offset = [], 0
    while True:
        body = api(session, sim, offset=offset, limit=37, orderBy="asc").json()
        assert body["paginacao"] == {"limit": 37, "offset": offset, "total": 400}
        if not body["itens"]:
            break
        seen += body["itens"]
        offset += 37
    assert len(seen) == 400
    assert {item["id"] for item in seen} == set(sim.snapshot())
    keys = [(item["data"], item["id"]) for item in seen]
    assert keys == sorted(keys)
    # Some orders were back-dated: (data, id) order is not id order.
    assert [item["id"] for item in seen] != sorted(item["id"] for item in seen)
    # Same page twice, same content; descending is the exact reverse.
    assert api(session, sim, offset=74, limit=37, orderBy="asc").json()["itens"] == seen[74:111]
    first_desc = api(session, sim, offset=0, limit=5, orderBy="desc").json()["itens"]
    assert first_desc == list(reversed(seen))[:5]


def test_limit_defaults_to_100_and_larger_values_are_capped(sim, make_sim) -> None:
    session = api_session(sim)
    body = api(session, sim).json()
    assert body["paginacao"]["limit"] == 100 and len(body["itens"]) == 100
    body = api(session, sim, limit=500).json()
    assert body["paginacao"]["limit"] == 100 and len(body["itens"]) == 100
    strict = make_sim(limit_over_max="reject")
    reply = api(api_session(strict), strict, limit=500)
    assert reply.status_code == 400
    assert reply.json()["detalhes"][0]["campo"] == "limit"


def test_date_filters_are_inclusive_on_both_ends(sim) -> None:
    truth = ground_truth(sim, "id,data")
    day = Counter(row["data"] for row in truth).most_common(1)[0][0]
    session = api_session(sim)
    body = api(session, sim, dataInicialEmissao=day, dataFinalEmissao=day, orderBy="asc").json()
    assert body["paginacao"]["total"] == sum(row["data"] == day for row in truth) >= 2
    assert {item["data"] for item in body["itens"]} == {day}

    items = all_items(session, sim, dataInicialEmissao="2020-03-01", dataFinalEmissao="2020-05-31")
    expected = {row["id"] for row in truth if "2020-03-01" <= row["data"] <= "2020-05-31"}
    assert {item["id"] for item in items} == expected


def test_situacao_filter_matches_ground_truth_for_every_status(sim) -> None:
    truth = Counter(sim.snapshot().values())
    assert set(truth) == {str(s) for s in range(8)}
    session = api_session(sim)
    for status in range(8):
        items = all_items(session, sim, situacao=str(status))
        assert len(items) == truth[str(status)]
        assert {item["situacao"] for item in items} == {str(status)}


def test_empty_result_numero_filter_unknown_detail_and_bad_parameters(sim) -> None:
    session = api_session(sim)
    empty = api(session, sim, dataInicialEmissao="2010-01-01", dataFinalEmissao="2010-12-31")
    assert empty.status_code == 200
    assert empty.json() == {"itens": [], "paginacao": {"limit": 100, "offset": 0, "total": 0}}

    some_id = next(iter(sim.snapshot()))
    numero = sim.detail(some_id)["numeroOrdemServico"]
    body = api(session, sim, numeroOrdemServico=numero).json()
    assert [item["id"] for item in body["itens"]] == [some_id]

    missing = api(session, sim, "/ordem-servico/1")
    assert missing.status_code == 404 and missing.json()["mensagem"]

    bad = api(session, sim, situacao="9", dataInicialEmissao="01/02/2024", orderBy="up")
    assert bad.status_code == 400
    assert {d["campo"] for d in bad.json()["detalhes"]} == {
        "situacao",
        "dataInicialEmissao",
        "orderBy",
    }


# ---- payload traps --------------------------------------------------------------------------


def cpf_is_valid(cpf: str) -> bool:
    digits = [int(c) for c in re.sub(r"\D", "", cpf)]
    for size in (9, 10):
        total = sum(d * (size + 1 - i) for i, d in enumerate(digits[:size]))
        if total * 10 % 11 % 10 != digits[size]:
            return False
    return len(digits) == 11


def test_payloads_carry_every_trap_of_the_contract(sim) -> None:
    session = api_session(sim)
    items = all_items(session, sim)
    broken = set(sim.broken_ids)
    details = {
        item["id"]: api(session, sim, f"/ordem-servico/{item['id']}").json()
        for item in items
        if item["id"] not in broken
    }
    legacy = [i for i in items if i["data"] < "2017-01-01"]
    modern = [i for i in items if i["data"] >= "2017-01-01"]
    assert legacy and modern

    # situacao as a string digit, valor null (usually), cliente in the list, contato in detail.
    assert all(isinstance(i["situacao"], str) and i["situacao"].isdigit() for i in items)
    assert all(isinstance(d["situacao"], str) and d["situacao"].isdigit() for d in details.values())
    assert sum(i["valor"] is None for i in items) > 0.9 * len(items)
    assert all("cliente" in i and "contato" not in i for i in items)
    assert all("contato" in d and "cliente" not in d for d in details.values())
    assert all(isinstance(i["numeroOrdemServico"], str) for i in items)

    # "No date" in its three spellings; dataPrevista with a time; finished orders without
    # a conclusion date.
    values = [d.get(k) for d in details.values() for k in ("dataPrevista", "dataConclusao")]
    assert {"0000-00-00", "0000-00-00 00:00:00", ""} <= set(values)
    assert any(re.fullmatch(r"\d{4}-\d\d-\d\d (?!00:00:00)\d\d:\d\d:\d\d", v or "") for v in values)
    finished = [d for d in details.values() if d["situacao"] == "3"]
    assert any(d["dataConclusao"] in ("", "0000-00-00") for d in finished)
    assert any(re.fullmatch(r"\d{4}-\d\d-\d\d", d["dataConclusao"]) for d in finished)

    # Money: dot-decimal strings; desconto with a comma or a percentage.
    for d in details.values():
        for key in ("totalServicos", "totalPecas", "totalOrdemServico"):
            assert re.fullmatch(r"\d+(\.\d+)?", d[key]), (key, d[key])
    descontos = {d["desconto"] for d in details.values()}
    assert "0,00" in descontos
    assert any(re.fullmatch(r"\d+,\d\d", x) and x != "0,00" for x in descontos)
    assert any(x.endswith("%") for x in descontos)

    # 2014-2016: the older, sparser shape.
    for item in legacy:
        assert "endereco" not in item["cliente"]
        assert "marcadores" not in item and "dataPrevista" not in item
        detail = details.get(item["id"])
        if detail:
            assert not {"categoria", "marcadores", "dataPrevista", "vendedor"} & set(detail)
    for item in modern:
        assert {"municipio", "uf"} <= set(item["cliente"]["endereco"])
        assert isinstance(item["marcadores"], list)
        detail = details.get(item["id"])
        if detail:
            assert {"categoria", "dataPrevista", "vendedor", "equipamento", "tecnico"} <= set(
                detail
            )
            assert "formaPagamento" in detail
    assert any(i["marcadores"] for i in modern)
    assert any(d.get("vendedor") is None for d in details.values() if "categoria" in d)
    assert any(d.get("vendedor") for d in details.values() if "categoria" in d)

    # Personal data: well-formed fake CPFs, phones, e-mails.
    customers = [i["cliente"] for i in items]
    cpfs = [c["cpfCnpj"] for c in customers if c["tipoPessoa"] == "F" and c["cpfCnpj"]]
    assert cpfs and all(cpf_is_valid(c) for c in cpfs)
    assert any(re.fullmatch(r"\(\d\d\) 9\d{4}-\d{4}", c["celular"]) for c in customers)
    assert any(re.fullmatch(r"[\w.]+@[\w.]+\.\w+", c["email"]) for c in customers)


def test_broken_details_are_listed_and_really_malformed(sim) -> None:
    assert len(sim.broken_ids) == 5
    assert requests.get(f"{sim.base_url}/__admin/tiny/broken", timeout=5).json() == {
        "ids": sim.broken_ids
    }
    session = api_session(sim)
    for order_id in sim.broken_ids:
        detail = api(session, sim, f"/ordem-servico/{order_id}").json()
        assert not _parses(detail), detail
    # Their list items are fine, so a sync meets them while listing.
    listed = {i["id"]: i for i in all_items(session, sim)}
    assert set(sim.broken_ids) <= set(listed)
    assert all(_valid_day(listed[i]["data"]) for i in sim.broken_ids)


def _valid_day(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _parses(detail: dict) -> bool:
    for key in ("data", "dataConclusao"):
        value = detail.get(key) or ""
        if value not in ("", "0000-00-00") and not _valid_day(value):
            return False
    try:
        for key in ("totalServicos", "totalPecas", "totalOrdemServico"):
            Decimal(detail[key])
        Decimal(detail["desconto"].rstrip("%").replace(",", "."))
    except InvalidOperation:
        return False
    return True


def test_same_seed_gives_the_same_account() -> None:
    one = TinySimulator(seed=5, n_orders=300, today=TODAY)
    two = TinySimulator(seed=5, n_orders=300, today=TODAY)
    other = TinySimulator(seed=6, n_orders=300, today=TODAY)
    assert one.snapshot() == two.snapshot()
    assert one.broken_ids == two.broken_ids
    assert all(one.detail(i) == two.detail(i) for i in one.snapshot())
    assert all(one.list_item(i) == two.list_item(i) for i in one.snapshot())
    assert one.snapshot() != other.snapshot()


# ---- OAuth ----------------------------------------------------------------------------------


def test_code_exchange_then_refresh_rotation_invalidates_the_old_refresh_token(sim) -> None:
    code = requests.post(f"{sim.base_url}/__admin/tiny/authorization-code", timeout=5).json()[
        "code"
    ]
    first = token_request(sim, grant_type="authorization_code", code=code, redirect_uri="x")
    assert first.status_code == 200
    pair = first.json()
    assert pair["expires_in"] == 14400 and pair["refresh_expires_in"] == 86400
    assert pair["token_type"] == "Bearer" and pair["access_token"] and pair["refresh_token"]
    # A code is single-use.
    again = token_request(sim, grant_type="authorization_code", code=code)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"

    renewed = token_request(sim, grant_type="refresh_token", refresh_token=pair["refresh_token"])
    assert renewed.status_code == 200
    new_pair = renewed.json()
    assert new_pair["refresh_token"] != pair["refresh_token"]
    stale = token_request(sim, grant_type="refresh_token", refresh_token=pair["refresh_token"])
    assert stale.status_code == 400 and stale.json()["error"] == "invalid_grant"
    assert api(api_session(sim, new_pair["access_token"]), sim).status_code == 200
    assert sim.stats()["token_renewals"] == 1


def test_without_rotation_the_old_refresh_token_stays_valid(make_sim) -> None:
    sim = make_sim(rotate_refresh_token=False)
    refresh = sim.issue_initial_tokens()["refresh_token"]
    for _ in range(2):
        assert token_request(sim, grant_type="refresh_token", refresh_token=refresh).ok


def test_racing_renewals_with_one_refresh_token_second_gets_invalid_grant(sim) -> None:
    for _ in range(3):
        refresh = sim.issue_initial_tokens()["refresh_token"]
        barrier = threading.Barrier(2)
        replies: list[requests.Response] = []

        def renew(refresh=refresh, barrier=barrier, replies=replies) -> None:
            barrier.wait()
            replies.append(token_request(sim, grant_type="refresh_token", refresh_token=refresh))

        threads = [threading.Thread(target=renew) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(r.status_code for r in replies) == [200, 400]
        assert [r.json()["error"] for r in replies if r.status_code == 400] == ["invalid_grant"]


def test_bad_client_secret_bad_refresh_token_and_revocation(sim) -> None:
    refresh = sim.issue_initial_tokens()["refresh_token"]
    wrong = token_request(sim, grant_type="refresh_token", refresh_token=refresh, client_secret="x")
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized_client"
    garbage = token_request(sim, grant_type="refresh_token", refresh_token="not-a-token")
    assert garbage.status_code == 400 and garbage.json()["error"] == "invalid_grant"
    sim.revoke_refresh_tokens()
    revoked = token_request(sim, grant_type="refresh_token", refresh_token=refresh)
    assert revoked.status_code == 400 and revoked.json()["error"] == "invalid_grant"


def test_expired_refresh_token_is_invalid_grant(make_sim) -> None:
    sim = make_sim()
    sim.configure(refresh_token_ttl_s=0)
    refresh = sim.issue_initial_tokens()["refresh_token"]
    reply = token_request(sim, grant_type="refresh_token", refresh_token=refresh)
    assert reply.status_code == 400 and reply.json()["error"] == "invalid_grant"


def test_expired_unknown_or_missing_access_token_gives_401_with_rate_headers(make_sim) -> None:
    sim = make_sim(access_token_ttl_s=1)
    pair = sim.issue_initial_tokens()
    assert pair["expires_in"] == 1
    session = api_session(sim, pair["access_token"])
    assert api(session, sim).status_code == 200
    time.sleep(1.1)
    expired = api(session, sim)
    assert expired.status_code == 401
    rate_headers(expired)

    sim.configure(access_token_ttl_s=3600)
    fresh = api_session(sim)
    assert api(fresh, sim).status_code == 200
    sim.expire_access_tokens()
    assert api(fresh, sim).status_code == 401
    assert api(api_session(sim, "eyJhbGciOi.bogus.token"), sim).status_code == 401
    no_auth = requests.get(f"{sim.base_url}{API_PREFIX}/ordem-servico", timeout=5)
    assert no_auth.status_code == 401 and rate_headers(no_auth)
    # The refresh token still works after the access tokens expired.
    renewed = token_request(sim, grant_type="refresh_token", refresh_token=pair["refresh_token"])
    assert api(api_session(sim, renewed.json()["access_token"]), sim).status_code == 200


# ---- rate limits ----------------------------------------------------------------------------


def test_every_reply_carries_per_minute_headers_counting_down(make_sim) -> None:
    sim = make_sim(per_minute_limit=50, burst_per_second=1000)
    session = api_session(sim)
    ok = api(session, sim)
    not_found = api(session, sim, "/ordem-servico/1")
    unauthorized = requests.get(f"{sim.base_url}{API_PREFIX}/ordem-servico", timeout=5)
    assert (ok.status_code, not_found.status_code, unauthorized.status_code) == (200, 404, 401)
    assert [rate_headers(r)[:2] for r in (ok, not_found, unauthorized)] == [
        (50, 49),
        (50, 48),
        (50, 47),
    ]
    assert 59 <= rate_headers(ok)[2] <= 60
    time.sleep(1.2)
    assert rate_headers(api(session, sim))[2] < rate_headers(ok)[2]
    # The token endpoint and admin calls are outside the API's buckets.
    token_request(sim, grant_type="refresh_token", refresh_token="x")
    assert rate_headers(api(session, sim))[1] == 45


def test_per_minute_bucket_is_per_account_answers_429_empty_and_reopens(make_sim) -> None:
    sim = make_sim(per_minute_limit=5, burst_per_second=1000, window_s=1.5)
    one, two = api_session(sim), api_session(sim)  # two tokens, one account
    statuses = [api(one if i % 2 else two, sim).status_code for i in range(5)]
    assert statuses == [200] * 5
    limited = api(one, sim)
    assert limited.status_code == 429
    assert limited.content == b""
    assert "Retry-After" not in limited.headers
    limit, remaining, reset = rate_headers(limited)
    assert (limit, remaining) == (5, 0) and 1 <= reset <= 2
    assert api(two, sim).status_code == 429
    time.sleep(1.6)
    assert api(one, sim).status_code == 200
    stats = sim.stats()
    assert stats["rate_limited_minute"] == 2 and stats["status_429"] == 2


def test_burst_bucket_allows_four_requests_per_second(make_sim) -> None:
    sim = make_sim(per_minute_limit=1000, burst_per_second=4)
    session = api_session(sim)
    replies = [api(session, sim, limit=1) for _ in range(6)]
    assert [r.status_code for r in replies] == [200, 200, 200, 200, 429, 429]
    # The headers describe the per-minute bucket, which still has room.
    assert rate_headers(replies[-1])[:2] == (1000, 996)
    assert replies[-1].content == b"" and "Retry-After" not in replies[-1].headers
    time.sleep(1.05)
    assert api(session, sim).status_code == 200
    assert sim.stats()["rate_limited_burst"] == 2


def test_header_prefix_can_be_spelled_like_the_other_variant_seen(make_sim) -> None:
    sim = make_sim(rate_limit_header_prefix="X-Ratelimit")
    reply = api(api_session(sim), sim)
    assert "X-Ratelimit-Remaining" in reply.raw.headers.keys()


# ---- admin controls -------------------------------------------------------------------------


def test_status_change_shows_in_list_and_detail_and_shifts_status_pages(sim) -> None:
    session = api_session(sim)
    before = [i["id"] for i in all_items(session, sim, situacao="3")]
    page_size = 5
    first_page = api(session, sim, situacao="3", orderBy="asc", limit=page_size).json()["itens"]
    assert [i["id"] for i in first_page] == before[:page_size]

    moved = before[0]
    reply = requests.post(
        f"{sim.base_url}/__admin/tiny/orders/{moved}/status",
        json={"situacao": "6", "dataConclusao": ""},
        timeout=5,
    )
    assert reply.status_code == 200
    # The second page now starts one order later: before[page_size] slid onto page one and a
    # sync paging "situacao=3" by offset never sees it.
    second = api(session, sim, situacao="3", orderBy="asc", offset=page_size, limit=page_size)
    assert [i["id"] for i in second.json()["itens"]] == before[page_size + 1 : 2 * page_size + 1]

    detail = api(session, sim, f"/ordem-servico/{moved}").json()
    assert detail["situacao"] == "6" and detail["dataConclusao"] == ""
    in_progress = {i["id"]: i for i in all_items(session, sim, situacao="6")}
    assert in_progress[moved]["situacao"] == "6"
    assert sim.snapshot()[moved] == "6"

    sim.set_status(moved, 3, "2024-06-14")
    assert api(session, sim, f"/ordem-servico/{moved}").json()["dataConclusao"] == "2024-06-14"
    truth = {row["id"]: row["situacao"] for row in ground_truth(sim, "id,situacao")}
    assert truth == sim.snapshot()


def test_an_order_listed_on_one_page_changes_before_the_next_page_is_served(sim) -> None:
    session = api_session(sim)
    before = [i["id"] for i in all_items(session, sim, situacao="3")]
    moved = before[0]
    reply = requests.post(
        f"{sim.base_url}/__admin/tiny/orders/{moved}/change-when-listed",
        json={"situacao": "7"},
        timeout=5,
    )
    assert reply.status_code == 200
    first = api(session, sim, situacao="3", orderBy="asc", limit=5).json()["itens"]
    assert first[0] == {**first[0], "id": moved, "situacao": "3"}  # read before the change
    assert sim.snapshot()[moved] == "3"  # nothing changes until the client asks again
    second = api(session, sim, situacao="3", orderBy="asc", offset=5, limit=5).json()["itens"]
    assert sim.snapshot()[moved] == "7"
    # The listing shifted under the client: before[5] is on no page it reads.
    assert [i["id"] for i in second] == before[6:11]
    assert sim.stats()["changed_while_listed"] == 1


def test_a_list_reply_may_come_without_paginacao(sim) -> None:
    session = api_session(sim)
    sim.configure(omit_paginacao=True)
    body = api(session, sim, limit=5).json()
    assert len(body["itens"]) == 5 and "paginacao" not in body
    sim.configure(omit_paginacao=False)
    assert api(session, sim, limit=5).json()["paginacao"]["total"] == 400


def test_added_orders_appear_in_their_month_with_new_ids(sim) -> None:
    old_max = max(sim.snapshot())
    reply = requests.post(
        f"{sim.base_url}/__admin/tiny/orders", json={"count": 3, "month": "2015-03"}, timeout=5
    )
    ids = reply.json()["ids"]
    assert len(ids) == 3 and min(ids) > old_max
    session = api_session(sim)
    march = all_items(session, sim, dataInicialEmissao="2015-03-01", dataFinalEmissao="2015-03-31")
    assert set(ids) <= {i["id"] for i in march}
    today_ids = sim.add_orders(2)
    body = api(session, sim, dataInicialEmissao=TODAY.isoformat(), orderBy="desc").json()
    assert set(today_ids) <= {i["id"] for i in body["itens"]}
    assert body["paginacao"]["total"] >= 2
    assert api(session, sim).json()["paginacao"]["total"] == 405
    assert {sim.snapshot()[i] for i in ids + today_ids} == {"0"}
    assert sim.stats()["orders_added"] == 5


def test_stats_count_api_calls_429s_and_renewals(make_sim) -> None:
    sim = make_sim(per_minute_limit=3, burst_per_second=1000)
    pair = sim.issue_initial_tokens()
    session = api_session(sim, pair["access_token"])
    for _ in range(4):
        api(session, sim)
    token_request(sim, grant_type="refresh_token", refresh_token=pair["refresh_token"])
    stats = requests.get(f"{sim.base_url}/__admin/tiny/stats", timeout=5).json()
    assert stats["api_calls"] == 4 and stats["status_200"] == 3 and stats["status_429"] == 1
    assert stats["token_renewals"] == 1 and stats["orders"] == 400
    requests.post(f"{sim.base_url}/__admin/reset", timeout=5)
    assert api(session, sim).status_code == 200  # reset reopened the window


def test_harness_faults_apply_to_the_api_routes(sim) -> None:
    session = api_session(sim)
    requests.post(
        f"{sim.base_url}/__admin/faults",
        json={"fail_next": {"count": 1, "status": 503}},
        timeout=5,
    )
    assert api(session, sim).status_code == 503
    assert api(session, sim).status_code == 200
    sim.set_faults(drop_after_commit=1)
    with pytest.raises(requests.ConnectionError):
        api(session, sim, "/ordem-servico/1")


def test_a_listing_walks_offset_plus_limit_entries_never_the_whole_account() -> None:
    # The speed this buys is printed by bench/bench_tiny_sim.py; here, the work it counts.
    with TinySimulator(seed=3, n_orders=6000, today=TODAY, **UNLIMITED) as sim:
        session = api_session(sim)
        bound = 0
        for i in range(100):
            offset = (i * 13) % 200
            params = {"situacao": str(i % 8), "offset": offset, "orderBy": "asc"}
            if i % 2:
                params |= {"dataInicialEmissao": "2016-01-01", "dataFinalEmissao": "2023-12-31"}
            assert api(session, sim, **params).status_code == 200
            bound += offset + 100
        walked = sim.stats()["list_entries_walked"]
        assert 0 < walked <= bound
        assert walked < 100 * 6000 / 10  # a scan per request would walk the whole account


# ---- the sandbox part -----------------------------------------------------------------------


def test_sandbox_part_env_gives_a_working_client_configuration() -> None:
    from sync_pipelines.sandbox.tiny_sim import DEMO_ORDERS, DEMO_PER_MINUTE

    assert TINY_PART in PARTS
    from sync_pipelines.tiny.defs import monthly

    valid = set(monthly.get_partition_keys())
    assert set(TINY_PART.demo_partitions()["tiny/service_orders_history"]) <= valid
    sim = TINY_PART.simulator(20241105)
    base = sim.start()
    try:
        env = TINY_PART.env(base)
        assert env["TINY_API_BASE_URL"] == base + "/public-api/v3"
        assert env["TINY_TOKEN_URL"] == base + "/realms/tiny/protocol/openid-connect/token"
        assert int(env["TINY_MAX_REQUESTS_PER_MINUTE"]) == DEMO_PER_MINUTE
        pair = requests.post(
            env["TINY_TOKEN_URL"],
            data={
                "grant_type": "refresh_token",
                "refresh_token": env["TINY_INITIAL_REFRESH_TOKEN"],
                "client_id": env["TINY_CLIENT_ID"],
                "client_secret": env["TINY_CLIENT_SECRET"],
            },
            timeout=5,
        ).json()
        reply = requests.get(
            env["TINY_API_BASE_URL"] + "/ordem-servico",
            headers={"Authorization": f"Bearer {pair['access_token']}"},
            timeout=5,
        )
        assert reply.json()["paginacao"]["total"] == DEMO_ORDERS
        assert rate_headers(reply)[0] == DEMO_PER_MINUTE
    finally:
        sim.stop()


def test_tokens_survive_a_restart_with_the_same_seed(make_sim) -> None:
    first = make_sim()
    pair = first.issue_initial_tokens()
    first.stop()
    second = make_sim()
    assert api(api_session(second, pair["access_token"]), second).status_code == 200
    renewed = token_request(second, grant_type="refresh_token", refresh_token=pair["refresh_token"])
    assert renewed.status_code == 200
