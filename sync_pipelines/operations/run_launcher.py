"""The run launcher of the single-machine shape: Dagster's default launcher that can also tell
run monitoring whether a run's worker process is still alive.

Why: ``DefaultRunLauncher`` starts each run in a worker process forked by the code server, but
answers ``supports_check_run_worker_health = False``, so the daemon's run monitoring never
looks at the worker. A worker killed by SIGKILL, the OOM killer or a reboot then leaves its run
STARTED until ``max_runtime`` runs out, and with the per-examiner tag limit that examiner's
next DETRAN runs wait in the queue all that time. With this launcher the monitoring daemon
(``run_monitoring.poll_interval_seconds`` in dagster.yaml) sees the dead worker, marks the run
failed, and ``run_retries`` launches it again.

How it knows: the worker reports its pid in the engine event "Started process for run
(pid: N)" that Dagster writes before the run starts. At launch this launcher tags the run with
the machine's host name when the code server is on this machine; the check then looks the pid
up on this machine. A pid the kernel gave to a newer process (reuse) does not count: the
process must have been created before that event. A run whose worker is on another machine,
or that was not launched by this launcher (``execute_in_process``, the CLI), is reported as
running: the per-job ``dagster/max_runtime`` tags (``operations/run_limits.py``) bound those.
Kubernetes deployments use the K8sRunLauncher instead, which checks the run's pod itself.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass

import psutil  # a dependency of dagster itself (its process utilities use it)
from dagster import DagsterEventType, DagsterRun, DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG

# Which machine the run's worker process runs on (set at launch when it is this machine).
WORKER_HOST_TAG = "sync_pipelines/run_worker_host"
# The engine events a run worker writes when it starts, with its pid in their metadata.
WORKER_STARTED_PREFIXES = ("Started process for run", "Started process for resuming job")
# Process start times come from the kernel in clock ticks relative to boot: allow for rounding.
START_TIME_SLACK_SECONDS = 1.0
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})


@dataclass(frozen=True)
class WorkerStart:
    pid: int
    reported_at: float  # epoch seconds of the "Started process" event


def _this_host() -> str:
    return socket.gethostname()


def _code_server_is_here(run: DagsterRun) -> bool:
    """Whether the code server that forked the run's worker runs on this machine."""
    raw = run.tags.get(GRPC_INFO_TAG)
    if not raw:
        return False
    info = json.loads(raw)
    if info.get("socket"):
        return True  # a Unix socket only reaches a process on this machine
    return str(info.get("host", "")).lower() in LOOPBACK_HOSTS | {_this_host().lower()}


def worker_start(instance, run_id: str) -> WorkerStart | None:
    """The latest "Started process ... (pid: N)" event of the run, if its worker wrote one."""
    found: WorkerStart | None = None
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        if not entry.message.startswith(WORKER_STARTED_PREFIXES):
            continue
        data = entry.dagster_event.engine_event_data if entry.dagster_event else None
        pid_value = data.metadata.get("pid") if data is not None else None
        if pid_value is None:
            continue
        found = WorkerStart(pid=int(pid_value.value), reported_at=entry.timestamp)
    return found


def worker_status(start: WorkerStart) -> tuple[WorkerStatus, str]:
    """Whether the process that wrote ``start`` still runs on this machine."""
    try:
        process = psutil.Process(start.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return WorkerStatus.FAILED, f"run worker process {start.pid} has exited (not reaped)"
        created = process.create_time()
    except psutil.NoSuchProcess:
        return WorkerStatus.FAILED, f"run worker process {start.pid} is gone"
    if created > start.reported_at + START_TIME_SLACK_SECONDS:
        return (
            WorkerStatus.FAILED,
            f"run worker process {start.pid} is gone (the pid now belongs to a newer process)",
        )
    return WorkerStatus.RUNNING, f"run worker process {start.pid} is running"


class LocalRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` plus a worker health check for workers on this machine."""

    def launch_run(self, context: LaunchRunContext) -> None:
        super().launch_run(context)
        # The default launcher has just tagged the run with its code server's address.
        run = self._instance.get_run_by_id(context.dagster_run.run_id)
        if run is not None and _code_server_is_here(run):
            self._instance.add_run_tags(run.run_id, {WORKER_HOST_TAG: _this_host()})

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        host = run.tags.get(WORKER_HOST_TAG)
        if host != _this_host():
            # Anything but RUNNING makes the daemon fail the run: a worker this machine cannot
            # see is left to the run's dagster/max_runtime bound instead.
            where = f"on {host}" if host else "not launched by this launcher"
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker {where}: not checked")
        start = worker_start(self._instance, run.run_id)
        if start is None:
            # Launched, but the worker has not reported its pid yet.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker not started yet")
        status, message = worker_status(start)
        return CheckRunHealthResult(status, message, run_worker_id=str(start.pid))

    def get_run_worker_debug_info(
        self, run: DagsterRun, include_container_logs: bool | None = True
    ) -> str | None:
        start = worker_start(self._instance, run.run_id)
        host = run.tags.get(WORKER_HOST_TAG, "an unknown host")
        return f"run worker pid {start.pid} on {host}" if start else None
