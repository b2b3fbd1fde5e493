"""tiny/reparse (issue 18): months loaded from the simulator, a parse rule changed by a test
fixture, the stored orders re-derived from their raw JSON. No request reaches the simulator,
the table ends as a fresh load with the new rule leaves it, and rows the rule does not change
are not rewritten (same xmin); history and failures stay as they were."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, materialize

from sync_pipelines.lib.db import create_database, quote_ident
from sync_pipelines.lib.migrations import migrate
from sync_pipelines.sandbox.tiny_sim import TinySimulator
from sync_pipelines.tiny import parse
from sync_pipelines.tiny.defs import TINY_VARIABLES, reparse, service_orders_history
from sync_pipelines.tiny.reparse import reparse_month
from sync_pipelines.tiny.sync import sync_month

from .conftest import make_client, own
from .conftest import resources as project_resources

MONTH = dt.date(2023, 5, 1)
NEXT_MONTH = dt.date(2023, 6, 1)
# Columns a load manages itself (when it saw the order, which parser wrote it): everything
# else of a row is what a load derives from, or stores of, Tiny's payloads.
LOAD_BOOKKEEPING = {"first_seen_at", "last_seen_at", "updated_at", "parser_version"}
ORIGINAL_DISCOUNT = parse.parse_discount
ORIGINAL_DATE = parse.parse_date


def percentage_as_fraction(order_id, value):
    """The changed money rule: a percentage discount is stored as a fraction, 10% -> 0.100."""
    amount, percent = ORIGINAL_DISCOUNT(order_id, value)
    return amount, None if percent is None else percent / 100


def percentage_refused(order_id, value):
    """A stricter rule the stored payloads of percentage discounts do not pass."""
    if str(value or "").strip().endswith("%"):
        raise parse.ParseError(order_id, "desconto", "is a percentage, no longer accepted")
    return ORIGINAL_DISCOUNT(order_id, value)


def conclusion_ignored(order_id, field, value):
    """The changed date rule: Tiny's dataConclusao is no longer read as the conclusion."""
    return None if field == "dataConclusao" else ORIGINAL_DATE(order_id, field, value)


@pytest.fixture
def sim():
    """An account whose seeded orders start in 2025: the months these tests load (2018,
    2023) hold only the orders each test adds, so expected counts come from the test."""
    simulator = TinySimulator(
        seed=18, n_orders=80, start_year=2025, per_minute_limit=100_000, burst_per_second=100_000
    )
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def change_rule(monkeypatch):
    """Replace one rule of parse.py and bump the parser version, as a real change would."""

    def change(name, rule):
        monkeypatch.setattr(parse, name, rule)
        monkeypatch.setattr(parse, "PARSER_VERSION", parse.PARSER_VERSION + 1)

    return change


@pytest.fixture
def fresh_db(pg_url, pg_admin):
    """A second, empty tiny database: where the fresh load with the changed rule goes."""
    schema = f"fresh_{uuid.uuid4().hex[:10]}"
    with pg_admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {quote_ident(schema)}"))
    db = create_database("test", pg_url, schema)
    migrate(db, "tiny")
    migrate(db, "control")
    yield db
    db.dispose()
    with pg_admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE"))


def orders(db, first: dt.date | None = None, last: dt.date | None = None) -> dict[int, dict]:
    """Every stored column of each order (emitted between first and last), with its xmin."""
    where = "TRUE" if first is None else "data_emissao BETWEEN :first AND :last"
    with db.connect() as conn:
        rows = conn.execute(
            sa.text(f"SELECT xmin::text AS xmin, * FROM ordens_servico WHERE {where}"),
            {"first": first, "last": last},
        ).mappings()
        return {r["id"]: dict(r) for r in rows}


def other_tables(db) -> dict[str, list]:
    """History and failures, every column and the row version: what must stay untouched."""
    with db.connect() as conn:
        return {
            table: [
                tuple(r)
                for r in conn.execute(sa.text(f"SELECT xmin::text, * FROM {table} ORDER BY 2"))
            ]
            for table in ("ordem_status_history", "import_failures")
        }


def loaded_values(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in LOAD_BOOKKEEPING | {"xmin"}}


def month_end(month: dt.date) -> dt.date:
    return (month + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)


def with_percentage(sim, ids) -> set[int]:
    return {i for i in ids if str(sim.detail(i).get("desconto", "")).endswith("%")}


def load(sim, db, *months: dt.date) -> None:
    client = make_client(sim, db)
    try:
        for month in months:
            sync_month(client, db, month)
    finally:
        client.close()


def test_reparse_after_a_rule_change_equals_a_fresh_load_without_any_request(
    sim, tiny_db, fresh_db, change_rule
):
    ids = sim.add_orders(160, month="2023-05", situacao=None)
    sim.add_orders(40, month="2023-06", situacao=None)
    # One order Tiny sends malformed: the load records it in import_failures.
    broken = ids[7]
    sim.edit(broken, totalServicos="abc")
    for order_id in ids[:30]:  # enough percentage discounts for the rule to matter
        sim.edit(order_id, desconto="10%")
    load(sim, tiny_db, MONTH, NEXT_MONTH)
    before = orders(tiny_db)
    untouched = other_tables(tiny_db)
    assert [r[1] for r in untouched["import_failures"]] == [broken]
    may = {i for i, r in before.items() if r["data_emissao"].month == 5}
    assert may == set(ids) - {broken}
    changing = with_percentage(sim, may)
    assert len(changing) >= 30 and len(may - changing) > 50
    old_version = parse.PARSER_VERSION

    change_rule("parse_discount", percentage_as_fraction)
    requests = len(sim.requests_log())
    result = reparse_month(tiny_db, MONTH, batch_size=50)  # four batches
    assert len(sim.requests_log()) == requests, "reparse sent requests to Tiny"

    assert (result.read, result.changed, result.unchanged) == (
        len(may),
        len(changing),
        len(may - changing),
    )
    assert result.unreadable == [] and result.columns_changed == {
        "desconto_percentual": len(changing)
    }
    after = orders(tiny_db)
    # Rows the rule does not change are not rewritten, nor is the other month.
    assert {i for i in after if after[i]["xmin"] != before[i]["xmin"]} == changing
    for order_id in changing:
        percent = Decimal(sim.detail(order_id)["desconto"].rstrip("%"))
        assert before[order_id]["desconto_percentual"] == percent
        assert after[order_id]["desconto_percentual"] == percent / 100
        assert before[order_id]["parser_version"] == old_version
        assert after[order_id]["parser_version"] == old_version + 1
        assert after[order_id]["updated_at"] == before[order_id]["updated_at"]
    assert {after[i]["parser_version"] for i in after if i not in changing} == {old_version}
    assert other_tables(tiny_db) == untouched

    # A fresh load of the same month with the changed rule stores the same values.
    load(sim, fresh_db, MONTH)
    fresh = orders(fresh_db)
    assert set(fresh) == may
    assert {i: loaded_values(after[i]) for i in may} == {i: loaded_values(fresh[i]) for i in may}
    assert {fresh[i]["parser_version"] for i in may} == {old_version + 1}

    # Rerunning changes nothing.
    again = reparse_month(tiny_db, MONTH)
    assert (again.changed, again.unchanged) == (0, len(may))
    assert orders(tiny_db) == after


def test_month_edges_and_the_dst_day_belong_to_their_emission_month(
    sim, tiny_db, fresh_db, change_rule
):
    # Brazil's DST began on 2018-11-04: São Paulo's midnight that day did not exist.
    days = ["2018-10-31", "2018-11-01", "2018-11-04", "2018-11-30", "2018-12-01"]
    by_day = {day: sim.add_orders(1, day=day, situacao="3")[0] for day in days}
    for order_id in by_day.values():
        sim.edit(order_id, desconto="5%", dataConclusao="2018-11-04")
    # Concluded on the DST day too, and no percentage: the rule leaves it as it is.
    steady = sim.add_orders(1, day="2018-11-04", situacao="3")[0]
    sim.edit(steady, desconto="0,00", dataConclusao="2018-11-04")
    months = [dt.date(2018, 10, 1), dt.date(2018, 11, 1), dt.date(2018, 12, 1)]
    load(sim, tiny_db, *months)
    before = orders(tiny_db)
    november = {by_day[d] for d in days[1:4]}
    stored = before[steady]["data_conclusao"]
    assert stored == dt.datetime(
        2018, 11, 4, 3, tzinfo=dt.UTC
    )  # 00:00 -03:00, read as 01:00 -02:00

    change_rule("parse_discount", percentage_as_fraction)
    result = reparse_month(tiny_db, dt.date(2018, 11, 1))

    after = orders(tiny_db)
    changed = {i for i in after if after[i]["xmin"] != before[i]["xmin"]}
    assert changed == november and result.changed == 3
    assert after[by_day["2018-10-31"]]["desconto_percentual"] == Decimal("5")
    assert after[by_day["2018-12-01"]]["desconto_percentual"] == Decimal("5")
    assert after[steady]["data_conclusao"] == stored
    load(sim, fresh_db, dt.date(2018, 11, 1))
    fresh = orders(fresh_db)
    assert set(fresh) == november | {steady}
    assert {i: loaded_values(after[i]) for i in fresh} == {
        i: loaded_values(fresh[i]) for i in fresh
    }


def test_an_order_without_emission_date_belongs_to_the_month_it_was_first_seen_in(
    sim, tiny_db, change_rule
):
    ids = sim.add_orders(3, month="2023-07", situacao=None)
    for order_id in ids:
        sim.edit(order_id, desconto="10%")
    load(sim, tiny_db, dt.date(2023, 7, 1))
    undated = ids[0]
    # Stored as an order Tiny sent without a date, first seen at 23:00 on 31 July in São
    # Paulo, already 1 August in UTC.
    with tiny_db.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE ordens_servico SET data_emissao = NULL, "
                "raw = jsonb_set(raw, '{data}', '\"\"'), "
                "raw_list = jsonb_set(raw_list, '{data}', '\"\"'), "
                "first_seen_at = '2023-08-01 02:00:00+00' WHERE id = :id"
            ),
            {"id": undated},
        )
    change_rule("parse_discount", percentage_as_fraction)

    august = reparse_month(tiny_db, dt.date(2023, 8, 1))
    july = reparse_month(tiny_db, dt.date(2023, 7, 1))

    assert (august.read, july.read, july.changed) == (0, 3, 3)
    assert orders(tiny_db)[undated]["data_emissao"] is None
    assert orders(tiny_db)[undated]["desconto_percentual"] == Decimal("0.1")


def test_a_conclusion_an_older_rule_read_goes_and_an_observed_one_stays(
    sim, tiny_db, fresh_db, change_rule
):
    dated = sim.add_orders(1, day="2018-11-04", situacao="3")[0]
    sim.edit(dated, dataConclusao="2018-11-04")
    observed = sim.add_orders(1, day="2018-11-20", situacao="6")[0]
    november = dt.date(2018, 11, 1)
    load(sim, tiny_db, november)
    # Finished later, without a conclusion date from Tiny: the sync records when it saw it.
    sim.set_status(observed, "3", data_conclusao="")
    load(sim, tiny_db, november)
    before = orders(tiny_db)
    seen_finishing = before[observed]["data_conclusao"]
    assert before[dated]["data_conclusao"] is not None and seen_finishing is not None

    change_rule("parse_date", conclusion_ignored)
    result = reparse_month(tiny_db, november)

    after = orders(tiny_db)
    assert after[dated]["data_conclusao"] is None
    assert after[observed]["data_conclusao"] == seen_finishing
    assert after[observed]["xmin"] == before[observed]["xmin"]
    assert result.columns_changed == {"data_conclusao": 1}
    load(sim, fresh_db, november)
    assert loaded_values(orders(fresh_db)[dated]) == loaded_values(after[dated])


def test_payloads_the_current_parser_cannot_read_keep_their_values_and_are_named(
    sim, tiny_db, change_rule
):
    ids = sim.add_orders(60, month="2023-05", situacao=None)
    for order_id in ids[:4]:
        sim.edit(order_id, desconto="15%")
    load(sim, tiny_db, MONTH)
    # A row whose stored detail names another order: never written over by that order.
    mixed = max(set(ids) - with_percentage(sim, ids))
    with tiny_db.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE ordens_servico SET raw = jsonb_set(raw, '{id}', :other) WHERE id = :id"
            ),
            {"id": mixed, "other": str(ids[0])},
        )
    before = orders(tiny_db)
    untouched = other_tables(tiny_db)
    refused = with_percentage(sim, before)

    change_rule("parse_discount", percentage_refused)
    result = reparse_month(tiny_db, MONTH)

    assert {i for i, _ in result.unreadable} == refused | {mixed}
    for order_id, message in result.unreadable:
        if order_id == mixed:
            assert message == f"order {mixed}: the stored payload is order {ids[0]}'s"
        else:
            assert message.startswith(f"order {order_id}: field 'desconto'")
    assert result.changed == 0 and result.unchanged == len(before) - len(refused) - 1
    assert orders(tiny_db) == before
    assert other_tables(tiny_db) == untouched


def test_rows_stored_before_versions_were_recorded_get_the_version_once(sim, tiny_db):
    sim.add_orders(30, month="2023-05", situacao=None)
    load(sim, tiny_db, MONTH)
    with tiny_db.begin() as conn:
        conn.execute(sa.text("UPDATE ordens_servico SET parser_version = NULL"))
    before = orders(tiny_db)

    first = reparse_month(tiny_db, MONTH)
    second = reparse_month(tiny_db, MONTH)

    after = orders(tiny_db)
    assert (first.version_stamped, first.changed, second.unchanged) == (30, 0, 30)
    assert len(before) == 30
    assert {r["parser_version"] for r in after.values()} == {parse.PARSER_VERSION}
    assert {i: loaded_values(r) for i, r in after.items()} == {
        i: loaded_values(r) for i, r in before.items()
    }
    assert orders(tiny_db) == after


def test_reparse_asset_runs_with_tiny_down_and_fails_naming_unreadable_orders(
    project,
    change_rule,
    monkeypatch,
):
    sim, url = project
    ids = sim.add_orders(70, month="2022-07", situacao=None)
    for order_id in ids[:10]:
        sim.edit(order_id, desconto="10%")
    with DagsterInstance.ephemeral() as instance:
        assert materialize(
            [service_orders_history],
            partition_key="2022-07-01",
            resources=project_resources(),
            instance=instance,
        ).success
        # Tiny is down and its credentials are gone: a reparse needs neither.
        sim.stop()
        for name in TINY_VARIABLES.values():
            monkeypatch.delenv(name, raising=False)
        db = create_database("tiny", url, "tiny")
        stored = orders(db, dt.date(2022, 7, 1), dt.date(2022, 7, 31))
        changing = with_percentage(sim, stored)
        version = parse.PARSER_VERSION + 1
        change_rule("parse_discount", percentage_as_fraction)

        result = materialize(
            [reparse], partition_key="2022-07-01", resources=project_resources(), instance=instance
        )

        assert result.success
        meta = own(result, "tiny__reparse").metadata
        assert {k: meta[k].value for k in ("parser_version", "rows_read", "rows_changed")} == {
            "parser_version": version,
            "rows_read": len(stored),
            "rows_changed": len(changing),
        }
        assert (meta["rows_unchanged"].value, meta["rows_unreadable"].value) == (
            len(stored) - len(changing),
            0,
        )
        assert meta["columns_changed"].value == {"desconto_percentual": len(changing)}
        events = "\n".join(str(e) for e in instance.all_logs(result.run_id))

        change_rule("parse_discount", percentage_refused)
        failed = materialize(
            [reparse],
            partition_key="2022-07-01",
            resources=project_resources(),
            instance=instance,
            raise_on_error=False,
        )
        assert not failed.success
        [failure] = [e for e in failed.all_events if e.is_step_failure]
        info = failure.step_failure_data.user_failure_data
        assert info.description.startswith(f"{len(changing)} stored orders of 2022-07 cannot be")
        for order_id in changing:
            assert f"order {order_id}: field 'desconto'" in info.description
        assert info.metadata["rows_unreadable"].value == len(changing)
        events += "\n".join(str(e) for e in instance.all_logs(failed.run_id))
    with db.connect() as conn:
        people = conn.execute(
            sa.text("SELECT cliente_nome, cliente_email, cliente_cpf_cnpj FROM ordens_servico")
        ).all()
    db.dispose()
    personal = [v for row in people for v in row if v and len(v) > 5]
    assert personal and [p for p in personal if p in events] == []
