"""HubSoft through Dagster with the project's definitions and resources: the health sensor,
the sync_tickets job, the schedules, the report, HUBSOFT_ENABLED=false, the sandbox part's
outage story, and an event log free of secrets and customer data."""

from __future__ import annotations

import datetime as dt
import os

import pytest
import sqlalchemy as sa
from dagster import (
    AssetKey,
    DagsterInstance,
    RunRequest,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
)

from sync_pipelines.definitions import build_defs
from sync_pipelines.hubsoft.defs import (
    DISABLED,
    HubSoftResource,
    hubsoft_health_monitor,
    recovery_schedule,
    status_schedule,
)
from sync_pipelines.lib.db import database_for_role
from sync_pipelines.lib.migrations import migrate
from sync_pipelines.resources import DatabaseResource, TelegramResource
from sync_pipelines.sandbox.hubsoft_data import (
    BAD_SERVICE_ID,
    HUBSOFT_PART,
    insert_tickets,
    offline_ticket,
)
from sync_pipelines.sandbox.hubsoft_sim import (
    SANDBOX_CLIENT_SECRET,
    SANDBOX_PASSWORD,
    HubSoftSimulator,
)
from sync_pipelines.sandbox.telegram_sim import (
    SANDBOX_ADMIN_IDS,
    SANDBOX_BOT_TOKEN,
    TELEGRAM_PART,
    TelegramSimulator,
)

from ..dagster_db import scratch_database


def resources() -> dict:
    # Built per test: the resources are wired to the variables each test's fixtures set.
    return {
        "hubsoft_db": DatabaseResource.for_role("hubsoft"),
        "control_db": DatabaseResource.for_role("control"),
        "hubsoft": HubSoftResource.from_env_vars(),
        "telegram": TelegramResource.from_env_vars(),
    }


@pytest.fixture
def project(pg_url, monkeypatch):
    hubsoft, telegram = HubSoftSimulator(seed=3), TelegramSimulator(seed=3)
    hubsoft.start()
    telegram.start()
    with scratch_database(pg_url) as url:
        monkeypatch.setenv("SYNC_DATABASE_URL", url)
        env = {"SYNC_DATABASE_URL": url}
        env |= HUBSOFT_PART.env(hubsoft.base_url) | TELEGRAM_PART.env(telegram.base_url)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        db = database_for_role("hubsoft", os.environ)
        migrate(db, "hubsoft")
        control = database_for_role("control", os.environ)
        migrate(control, "control")
        control.dispose()
        yield hubsoft, telegram, db, env
        db.dispose()
    hubsoft.stop()
    telegram.stop()


def sensor_tick(instance, cursor=None):
    with build_sensor_context(instance=instance, cursor=cursor, resources=resources()) as context:
        return hubsoft_health_monitor(context)


def schedule_tick(schedule, instance):
    with build_schedule_context(instance=instance, resources=resources()) as context:
        return schedule(context)


def run_sync(instance, mode="all"):
    job = build_defs().resolve_job_def("sync_tickets")
    return job.execute_in_process(
        run_config={"ops": {"hubsoft_ticket_sync": {"config": {"mode": mode}}}},
        instance=instance,
        raise_on_error=False,
    )


def leaked(instance, run_ids, hubsoft: HubSoftSimulator) -> list[str]:
    events = "\n".join(str(e) for rid in run_ids for e in instance.all_logs(rid))
    secrets = [SANDBOX_PASSWORD, SANDBOX_CLIENT_SECRET, SANDBOX_BOT_TOKEN, *hubsoft.tokens]
    personal = [v for c in hubsoft.clients for v in (c.cpf_cnpj, c.telefone, c.email)]
    return [s for s in secrets + personal if s in events]


def test_outage_offline_tickets_and_return_end_to_end(project):
    hubsoft, telegram, db, _ = project
    clients = [c.as_json() for c in hubsoft.clients]
    now = dt.datetime.now(dt.UTC)
    with DagsterInstance.ephemeral() as instance:
        first = sensor_tick(instance)
        assert "online" in first.skip_reason.skip_message
        hubsoft.set_faults(outage="refuse")
        down = sensor_tick(instance, first.cursor)
        assert down.run_requests in (None, []) and '"offline"' in down.cursor
        # The bot saves tickets locally while HubSoft is down.
        offline = [
            offline_ticket(200 + n, clients[n], now - dt.timedelta(minutes=9 - n)) for n in range(4)
        ]
        insert_tickets(db, offline)
        still = sensor_tick(instance, down.cursor)
        assert not still.run_requests
        hubsoft.set_faults(outage=None)
        up = sensor_tick(instance, still.cursor)
        [request] = up.run_requests
        assert request.run_config["ops"]["hubsoft_ticket_sync"]["config"]["mode"] == "offline"

        result = (
            build_defs()
            .resolve_job_def("sync_tickets")
            .execute_in_process(run_config=request.run_config, instance=instance, tags=request.tags)
        )
        assert result.success
        materialized = [m.asset_key.path[-1] for m in result.get_asset_materialization_events()]
        # mode offline: no status sync; the table it wrote reports its row count.
        assert materialized == ["offline_ticket_recovery", "support_tickets"]
        tickets = result.asset_materializations_for_node("hubsoft_ticket_sync")[-1]
        with db.connect() as conn:
            stored = conn.execute(
                sa.text(f"SELECT count(*) FROM {db.table('support_tickets')}")
            ).scalar_one()
        assert tickets.metadata["dagster/row_count"].value == stored > 0
        meta = result.asset_materializations_for_node("hubsoft_ticket_sync")[0].metadata
        assert (meta["created"].value, meta["failed"].value, meta["still_unsynced"].value) == (
            4,
            0,
            0,
        )
        assert leaked(instance, [result.run_id], hubsoft) == []

    with db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT protocol, hubsoft_atendimento_id, sync_status FROM support_tickets")
        ).all()
    for row in rows:
        [hub] = hubsoft.tickets_with(f"[{row.protocol}]")
        assert (row.hubsoft_atendimento_id, row.sync_status) == (hub.id_atendimento, "synced")
        assert hub.parametros["protocolo_local"] == row.protocol
    texts = telegram.texts(SANDBOX_ADMIN_IDS[0])
    assert len(texts) == 3 and len(telegram.messages) == 3 * len(SANDBOX_ADMIN_IDS)
    assert "OFFLINE" in texts[0] and "4 chamado(s)" in texts[1] and "ONLINE" in texts[1]
    assert "4 chamado(s) offline sincronizado(s)" in texts[2]
    assert all(c.cpf_cnpj not in t for c in hubsoft.clients for t in texts)


def test_sandbox_outage_story_recovers_with_one_failure_and_one_adoption(project):
    hubsoft, telegram, db, env = project
    HUBSOFT_PART.prepare(env)
    HUBSOFT_PART.prepare(env)  # the demo may rerun it: nothing doubles
    with DagsterInstance.ephemeral() as instance:
        result = run_sync(instance, "all")
        assert result.success
        keys = {m.asset_key.path[-1] for m in result.get_asset_materialization_events()}
        assert keys == {"offline_ticket_recovery", "ticket_status_sync", "support_tickets"}
        # the check on support_tickets runs in the job that writes it, after the syncs
        table_checks = {
            (c.asset_key.to_user_string(), c.check_name): c.passed
            for c in result.get_asset_check_evaluations()
        }
        assert table_checks == {("hubsoft/support_tickets", "no_failed_tickets"): False}
        report = (
            build_defs()
            .resolve_implicit_global_asset_job_def()
            .execute_in_process(
                instance=instance, asset_selection=[AssetKey(["hubsoft", "health_report"])]
            )
        )
        assert report.success
        checks = {c.check_name: c.passed for c in report.get_asset_check_evaluations()}
        assert checks == {"hubsoft_online": True}
        assert leaked(instance, [result.run_id, report.run_id], hubsoft) == []
    with db.connect() as conn:
        rows = {r.protocol: r for r in conn.execute(sa.text("SELECT * FROM support_tickets")).all()}
        kinds = dict(
            conn.execute(
                sa.text("SELECT local_protocol, link_kind FROM hubsoft_protocol_map")
            ).all()
        )
    assert rows["LOC000105"].sync_status == "failed"
    assert str(BAD_SERVICE_ID) in rows["LOC000105"].sync_error
    assert kinds == {
        "LOC000101": "created", "LOC000102": "created", "LOC000103": "adopted", "LOC000104": "created",
    }  # fmt: skip
    for protocol in kinds:
        assert len(hubsoft.tickets_with(f"[{protocol}]")) == 1
    # Each prepare plays one outage (offline + online notices), then the recovery result.
    texts = telegram.texts(SANDBOX_ADMIN_IDS[0])
    assert sum("OFFLINE" in t for t in texts) == 2 and sum("ONLINE" in t for t in texts) == 2
    assert "3 criado(s), 1 já existente(s)" in texts[-1] and "LOC000105" in texts[-1]


def test_hubsoft_disabled_turns_everything_off_cleanly(project, monkeypatch):
    hubsoft, telegram, _, _ = project
    monkeypatch.setenv("HUBSOFT_ENABLED", "false")
    with DagsterInstance.ephemeral() as instance:
        result = sensor_tick(instance)
        assert isinstance(result, SkipReason) and "HUBSOFT_ENABLED=false" in result.skip_message
        for sched in (recovery_schedule, status_schedule):
            skipped = schedule_tick(sched, instance)
            assert isinstance(skipped, SkipReason) and "disabled" in skipped.skip_message
        run = run_sync(instance)
        assert not run.success
        failure = next(e for e in run.all_events if e.event_type_value == "STEP_FAILURE")
        assert DISABLED in str(failure.event_specific_data.error)
    assert hubsoft.requests_log() == [] and telegram.messages == []


def test_schedules_skip_while_hubsoft_is_offline_and_run_when_back(project):
    hubsoft, _, _, _ = project
    with DagsterInstance.ephemeral() as instance:
        hubsoft.set_faults(outage="503")
        tick = sensor_tick(instance)
        skipped = schedule_tick(status_schedule, instance)
        assert isinstance(skipped, SkipReason) and "offline" in skipped.skip_message
        # A run launched by hand while offline syncs nothing and says why.
        run = run_sync(instance, "status")
        assert run.success and run.get_asset_materialization_events() == []
        hubsoft.set_faults(outage=None)
        sensor_tick(instance, tick.cursor)
        request = schedule_tick(recovery_schedule, instance)
        assert isinstance(request, RunRequest)
        assert request.run_config["ops"]["hubsoft_ticket_sync"]["config"]["mode"] == "offline"


def test_offline_alert_reaches_an_admin_whose_chat_reset_on_a_later_tick_once(project):
    hubsoft, telegram, _, _ = project
    first_admin, second_admin = SANDBOX_ADMIN_IDS
    with DagsterInstance.ephemeral() as instance:
        up = sensor_tick(instance)
        hubsoft.set_faults(outage="refuse")
        # Telegram resets every connection to the second admin's chat during this tick
        # (three attempts: the client's own retries are spent too).
        telegram.fail_chat(second_admin, "reset", count=3)
        down = sensor_tick(instance, up.cursor)
        assert len(telegram.texts(first_admin)) == 1 and telegram.texts(second_admin) == []
        still = sensor_tick(instance, down.cursor)
        sensor_tick(instance, still.cursor)
    first, second = telegram.texts(first_admin), telegram.texts(second_admin)
    assert len(first) == 1 and "OFFLINE" in first[0]
    assert second == first  # late, once, and the first admin was not told twice
