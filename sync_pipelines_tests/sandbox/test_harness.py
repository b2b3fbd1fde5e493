"""The simulator harness: routing, encodings, request log and every fault, over real sockets."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator

import pytest
import requests

from sync_pipelines.sandbox.harness import Request, Response, Simulator, route


class ShopSimulator(Simulator):
    """A tiny service: orders that can be read and created, plus a latin-1 page."""

    name = "shop"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.orders: dict[int, dict] = {
            900000 + i: {"id": 900000 + i, "valor": self.rng.randint(1, 999)} for i in range(3)
        }

    @route("GET", r"/orders/(?P<order_id>\d+)")
    def get_order(self, request: Request, order_id: str) -> Response:
        order = self.orders.get(int(order_id))
        if order is None:
            return Response.json({"mensagem": "not found"}, 404)
        return Response.json({**order, "fields": request.query.get("fields")})

    @route("POST", r"/orders")
    def create_order(self, request: Request) -> Response:
        new_id = max(self.orders) + 1
        self.orders[new_id] = {"id": new_id, **request.json()}
        return Response.json(self.orders[new_id], 201)

    @route("POST", r"/login")
    def login(self, request: Request) -> Response:
        form = request.form()
        return Response.json({"form": form, "all": request.form_lists()["codigo"]})

    @route("GET", r"/agenda")
    def agenda(self, request: Request) -> Response:
        return Response.html("<h1>Agenda Diária do Perito - São Paulo</h1>", charset="iso-8859-1")

    @route("GET", r"/broken")
    def broken(self, request: Request) -> Response:
        raise ValueError("simulated bug")

    @route("POST", r"/__admin/orders/(?P<order_id>\d+)/valor")
    def admin_set_value(self, request: Request, order_id: str) -> Response:
        self.orders[int(order_id)]["valor"] = request.json()["valor"]
        return Response.json(self.orders[int(order_id)])


@pytest.fixture
def shop() -> Iterator[ShopSimulator]:
    with ShopSimulator(seed=7) as sim:
        yield sim


def test_routes_pass_path_groups_and_query_and_answer_404_405(shop) -> None:
    reply = requests.get(f"{shop.base_url}/orders/900001", params={"fields": "valor"}, timeout=5)
    assert reply.status_code == 200
    assert reply.json()["id"] == 900001
    assert reply.json()["fields"] == "valor"
    assert requests.get(f"{shop.base_url}/orders/1", timeout=5).status_code == 404
    assert requests.get(f"{shop.base_url}/nowhere", timeout=5).status_code == 404
    assert requests.delete(f"{shop.base_url}/orders/900001", timeout=5).status_code == 405


def test_seeded_data_is_deterministic() -> None:
    assert ShopSimulator(seed=7).orders == ShopSimulator(seed=7).orders
    assert ShopSimulator(seed=7).orders != ShopSimulator(seed=8).orders


def test_form_with_repeated_field_gives_first_value_like_a_servlet(shop) -> None:
    body = [("method", "autenticar"), ("codigo", ""), ("codigo", "123.456.789-01")]
    reply = requests.post(f"{shop.base_url}/login", data=body, timeout=5)
    assert reply.json() == {
        "form": {"method": "autenticar", "codigo": ""},
        "all": ["", "123.456.789-01"],
    }


def test_html_is_encoded_in_iso_8859_1(shop) -> None:
    reply = requests.get(f"{shop.base_url}/agenda", timeout=5)
    assert reply.headers["Content-Type"] == "text/html;charset=ISO-8859-1"
    assert b"Di\xe1ria" in reply.content and b"S\xe3o Paulo" in reply.content
    assert "Agenda Diária do Perito - São Paulo" in reply.text


def test_handler_exception_is_a_visible_500(shop, caplog) -> None:
    reply = requests.get(f"{shop.base_url}/broken", timeout=5)
    assert reply.status_code == 500
    assert reply.json()["detail"] == "ValueError: simulated bug"
    assert "simulated bug" in caplog.text


def test_request_log_records_calls_without_secret_headers(shop) -> None:
    requests.get(
        f"{shop.base_url}/orders/900002",
        params={"access_token": "SECRET456", "x": "1"},
        headers={"Authorization": "Bearer SECRET123", "apikey": "SECRET789"},
        timeout=5,
    )
    requests.post(f"{shop.base_url}/orders", json={"valor": 5}, timeout=5)
    log = requests.get(f"{shop.base_url}/__admin/requests", timeout=5).json()
    assert [(e["method"], e["path"], e["status"]) for e in log] == [
        ("GET", "/orders/900002", 200),
        ("POST", "/orders", 201),
    ]
    assert log[0]["query"] == {"access_token": "***", "x": "1"}
    assert "SECRET" not in str(log)
    assert shop.count(r"^/orders$", method="POST") == 1
    assert shop.count("/orders") == 2


def test_faults_set_over_http_at_runtime_and_reset(shop) -> None:
    admin = f"{shop.base_url}/__admin"
    reply = requests.post(
        f"{admin}/faults", json={"fail_next": {"count": 2, "status": 502}}, timeout=5
    )
    assert reply.json()["fail_next"]["count"] == 2
    statuses = [
        requests.get(f"{shop.base_url}/orders/900001", timeout=5).status_code for _ in range(3)
    ]
    assert statuses == [502, 502, 200]
    assert [e["fault"] for e in shop.requests_log()] == ["fail_next", "fail_next", None]
    # Admin routes of a subclass are never faulted either.
    requests.post(f"{admin}/faults", json={"outage": "503"}, timeout=5)
    set_value = requests.post(f"{admin}/orders/900001/valor", json={"valor": 1}, timeout=5)
    assert set_value.status_code == 200
    assert requests.get(f"{shop.base_url}/orders/900001", timeout=5).status_code == 503
    requests.post(f"{admin}/reset", timeout=5)
    assert shop.faults() == {}
    assert shop.requests_log() == []
    assert requests.get(f"{shop.base_url}/orders/900001", timeout=5).json()["valor"] == 1


def test_fault_limited_to_path_and_method(shop) -> None:
    shop.set_faults(fail_next={"count": 5, "path": r"^/orders$", "method": "POST"})
    assert requests.get(f"{shop.base_url}/orders/900001", timeout=5).status_code == 200
    assert requests.post(f"{shop.base_url}/orders", json={}, timeout=5).status_code == 503


def test_error_rate_is_seeded_and_repeatable() -> None:
    def run(seed: int) -> list[int]:
        with ShopSimulator(seed=seed, faults={"error_rate": 0.5}) as sim:
            with requests.Session() as s:
                return [
                    s.get(f"{sim.base_url}/orders/900001", timeout=5).status_code for _ in range(20)
                ]

    first = run(3)
    assert first == run(3)
    assert set(first) == {200, 503}


def test_rate_limit_answers_429_with_retry_after(shop) -> None:
    shop.set_faults(rate_limit={"requests": 2, "window": 5})
    replies = [requests.get(f"{shop.base_url}/orders/900001", timeout=5) for _ in range(3)]
    assert [r.status_code for r in replies] == [200, 200, 429]
    assert 1 <= int(replies[2].headers["Retry-After"]) <= 5


class GatedShop(ShopSimulator):
    """The shop, with every fault delay held at a gate the test opens: the test sees the delay
    asked for and what happened before it ended, without measuring time."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.delays: list[float] = []
        self.delaying = threading.Event()
        self.gate = threading.Event()

    def _delay(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.delaying.set()
        self.gate.wait(30)  # a safety net: the test opens the gate long before


@pytest.fixture
def gated() -> Iterator[GatedShop]:
    with GatedShop(seed=7) as sim:
        yield sim
        sim.gate.set()


def _in_background(call) -> concurrent.futures.Future:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(call)
    pool.shutdown(wait=False)
    return future


def test_latency_holds_the_reply_back_until_the_delay_is_over(gated) -> None:
    gated.set_faults(latency=0.3)
    reply = _in_background(lambda: requests.get(f"{gated.base_url}/orders/900001", timeout=10))
    assert gated.delaying.wait(10), "the request never reached the delay"
    assert gated.delays == [0.3]
    # Held before the handler answered: no status yet, no reply yet.
    assert gated.requests_log()[-1]["status"] is None
    assert not reply.done()
    gated.gate.set()
    assert reply.result(timeout=10).status_code == 200
    assert gated.requests_log()[-1]["status"] == 200


def test_hang_outlasts_the_client_read_timeout(gated) -> None:
    gated.set_faults(hang=2)
    with pytest.raises(requests.ReadTimeout):
        # The gate stays closed: the reply cannot come before the client gives up.
        requests.get(f"{gated.base_url}/orders/900001", timeout=(5, 0.3))
    assert gated.delaying.wait(10), "the request never reached the delay"
    assert gated.delays == [2.0]
    assert gated.requests_log()[-1]["fault"] == "hang"


def test_drop_after_commit_runs_the_handler_but_sends_no_reply(shop) -> None:
    shop.set_faults(drop_after_commit={"count": 1, "method": "POST"})
    before = len(shop.orders)
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{shop.base_url}/orders", json={"valor": 42}, timeout=5)
    assert len(shop.orders) == before + 1
    assert max(shop.orders.values(), key=lambda o: o["id"])["valor"] == 42
    assert shop.requests_log()[-1]["fault"] == "drop_after_commit"
    assert shop.requests_log()[-1]["status"] is None
    # Only the next one was dropped.
    assert requests.post(f"{shop.base_url}/orders", json={}, timeout=5).status_code == 201


def test_outage_refuse_resets_connections_but_admin_still_answers(shop) -> None:
    shop.set_faults(outage="refuse")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{shop.base_url}/orders/900001", timeout=5)
    log = requests.get(f"{shop.base_url}/__admin/requests", timeout=5).json()
    assert log[-1]["fault"] == "outage:refuse"
    shop.set_faults(outage=None)
    assert requests.get(f"{shop.base_url}/orders/900001", timeout=5).status_code == 200


def test_outage_modes_503_and_timeout_never_run_the_handler(gated) -> None:
    before = len(gated.orders)
    gated.set_faults(outage="503")
    assert requests.post(f"{gated.base_url}/orders", json={}, timeout=5).status_code == 503
    gated.set_faults(outage={"mode": "timeout", "seconds": 0.3})
    reply = _in_background(lambda: requests.post(f"{gated.base_url}/orders", json={}, timeout=10))
    assert gated.delaying.wait(10), "the request never reached the delay"
    assert gated.delays == [0.3]
    assert not reply.done()
    gated.gate.set()
    assert reply.result(timeout=10).status_code == 504
    assert len(gated.orders) == before
    assert [e["fault"] for e in gated.requests_log()] == ["outage:503", "outage:timeout"]


def test_malformed_reply_is_a_200_with_a_body_that_is_not_json(shop) -> None:
    shop.set_faults(malformed_rate=1.0)
    reply = requests.get(f"{shop.base_url}/orders/900001", timeout=5)
    assert reply.status_code == 200
    with pytest.raises(ValueError):
        reply.json()


def test_unknown_fault_is_rejected(shop) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        shop.set_faults(eror_rate=0.5)
    assert (
        requests.post(f"{shop.base_url}/__admin/faults", json={"nope": 1}, timeout=5).status_code
        == 400
    )


def test_stop_frees_the_port_and_keep_alive_works_until_then() -> None:
    sim = ShopSimulator()
    url = sim.start()
    with requests.Session() as session:
        for _ in range(3):
            assert session.get(f"{url}/orders/900000", timeout=5).status_code == 200
    sim.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/orders/900000", timeout=2)
