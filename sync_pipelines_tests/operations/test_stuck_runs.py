"""A run whose worker died never blocks the queue: the local shape, end to end.

The sandbox (DETRAN portal simulator, seeded examiners) on a scratch database, and Dagster's
own processes as in production (code server, webserver, daemon) with the repository's
dagster.yaml. Run A syncs one examiner's day; the portal never answers, so A sits in its
first request. Run B, the same examiner another day, waits in the queue behind A (the
per-examiner tag limit). The test SIGKILLs A's run worker together with the code server that
forked it, as the OOM killer or a lost machine would (a surviving code server notices its own
dead child and fails the run itself; nothing does when it died too). Run monitoring must mark A failed, run_retries must launch it again, and B must start.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
from zoneinfo import ZoneInfo

import psutil
import pytest
from dagster import DagsterEventType, DagsterRun, DagsterRunStatus

from .dagster_services import (
    LAUNCH,
    LOCATION,
    Services,
    graphql,
    sandbox_deployment,
    wait_for,
    wait_until_loaded,
)

EXAMINER = "1"
# Generous polling deadlines for a loaded machine; dagster.yaml's bound is one 30 s poll.
DEADLINE_S = 240
WORKER_PID = re.compile(r"^Started process for run \(pid: (\d+)\)")


@pytest.fixture
def local_shape(pg_url, tmp_path, monkeypatch):
    """Sandbox + code server + webserver + daemon: (services, url, instance, DETRAN sim, gRPC port)."""
    with sandbox_deployment(pg_url, tmp_path, monkeypatch) as shape:
        detran = next(sim for sim in shape.sandbox._simulators if sim.name == "detran")
        yield shape.services, shape.url, shape.instance, detran, shape.grpc_port


def _launch_examiner_day(url: str, day: dt.date) -> str:
    key = f"{day.isoformat()}|{EXAMINER}"
    tags = {
        "dagster/partition": key,
        "dagster/partition/date": day.isoformat(),
        "dagster/partition/examiner": EXAMINER,
        "examiner": EXAMINER,  # what the job's partitioned config tags every run with
    }
    params = {
        "selector": {
            "repositoryLocationName": LOCATION,
            "repositoryName": "__repository__",
            "jobName": "detran_agenda_sync",
        },
        "runConfigData": {},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
    }
    launched = graphql(url, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def _wait(services: Services, what: str, probe):
    return wait_for(services, what, probe, DEADLINE_S)


def _worker_pid(instance, run_id: str) -> int | None:
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        match = WORKER_PID.match(entry.message or "")
        if match:
            return int(match.group(1))
    return None


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _event_time(instance, run_id: str, event_type: DagsterEventType) -> float | None:
    entries = instance.all_logs(run_id, of_type=event_type)
    return entries[0].timestamp if entries else None


def test_killed_run_worker_fails_its_run_and_frees_the_examiner(local_shape):
    services, url, instance, detran, grpc_port = local_shape
    # The portal never answers: A stays in its first request until its worker is killed.
    detran.set_faults(outage={"mode": "timeout", "seconds": 600})
    today = dt.datetime.now(ZoneInfo("America/Sao_Paulo")).date()
    run_a = _launch_examiner_day(url, today)
    pid = _wait(
        services,
        "run A's worker to start",
        lambda: (
            instance.get_run_by_id(run_a).status == DagsterRunStatus.STARTED
            and _worker_pid(instance, run_a)
        ),
    )
    # The job's own bound came with the run (operations/run_limits.py): the second guard.
    assert instance.get_run_by_id(run_a).tags["dagster/max_runtime"] == "900"
    run_b = _launch_examiner_day(url, today + dt.timedelta(days=1))
    enqueued_b = _wait(
        services,
        "run B queued",
        lambda: _event_time(instance, run_b, DagsterEventType.RUN_ENQUEUED),
    )

    # The queue coordinator has looked at the queue since B arrived, and held B back.
    def coordinator_ran_after_b():
        beat = instance.get_daemon_heartbeats().get("QUEUED_RUN_COORDINATOR")
        return beat is not None and beat.timestamp > enqueued_b + 1

    _wait(services, "a queue coordinator pass after B", coordinator_ran_after_b)
    assert instance.get_run_by_id(run_b).status == DagsterRunStatus.QUEUED

    # The pid is a run worker forked by our code server, not some other process.
    code_server = psutil.Process(services.procs["code-server"].pid)
    assert pid in {child.pid for child in code_server.children(recursive=True)}
    # The machine loses the code server and its run worker at once (an OOM kill, a crash, a
    # lost node): nothing that forked the worker is left to notice. Then the code server
    # comes back, as a supervisor or a redeploy brings it back.
    os.killpg(code_server.pid, signal.SIGKILL)
    services.procs.pop("code-server").wait(timeout=30)
    _wait(services, "the run worker to be gone", lambda: _gone(pid))
    services.code_server(grpc_port)
    wait_until_loaded(services, url)

    failed = _wait(
        services,
        "run A marked failed",
        lambda: instance.get_run_by_id(run_a).status == DagsterRunStatus.FAILURE,
    )
    assert failed
    failure = instance.all_logs(run_a, of_type=DagsterEventType.RUN_FAILURE)[-1]
    assert f"run worker process {pid}" in failure.message, failure.message
    detran.clear_faults()

    # B starts, and only after A failed: the examiner's slot was held by A until then.
    started_b = _wait(
        services, "run B to start", lambda: _event_time(instance, run_b, DagsterEventType.RUN_START)
    )
    assert started_b >= failure.timestamp

    # run_retries launches A again (a new run of the same examiner day, same tag).
    def retry_of_a():
        runs = instance.get_runs()
        retry = next((r for r in runs if r.parent_run_id == run_a), None)
        if retry is not None:
            return retry
        # Dagster's retry daemon gives a retry up for good when the run's code location is
        # still unreachable at that moment (here: the code server that died with the worker
        # may not be back in the daemon's workspace yet); it says so in the run's log.
        gave_up = [
            e
            for e in instance.all_logs(run_a, of_type=DagsterEventType.ENGINE_EVENT)
            if e.message == "Failed to retry run"
        ]
        return gave_up[-1] if gave_up else None

    outcome = _wait(services, "a retry of run A (or Dagster giving it up)", retry_of_a)
    if isinstance(outcome, DagsterRun):
        assert outcome.tags["examiner"] == EXAMINER
        assert outcome.tags["dagster/partition"] == f"{today.isoformat()}|{EXAMINER}"
    else:
        # Only the code location's absence may stop the retry; anything else is a defect.
        error = outcome.dagster_event.engine_event_data.error
        assert error is not None and "Unreachable" in error.to_string(), error
