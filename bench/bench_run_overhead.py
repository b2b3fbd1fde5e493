"""Dagster's cost per run of each job, against the time the sync itself takes.

    python -m bench.bench_run_overhead [--runs 2] [--executor project|multiprocess|in_process]
                                       [--jobs detran_agenda_sync,sync_tickets] [--url URL]

The production shape on a scratch database: the sandbox (simulators, seeded data, migrations,
pool limits, partitions), a code server (``dagster code-server start``), the daemon (queued run
coordinator, run monitoring) and the webserver, with the repository's dagster.yaml. Each run is
submitted through GraphQL's ``launchRun`` as the UI does (schedules and sensors submit the same
way from the daemon): the queued coordinator dequeues it and the code server starts its run
worker. Runs go one at a time, so each figure belongs to one run.

Per run:
- wall: run record start -> end, and submit -> end (queueing and worker start included);
- CPU: user + system seconds of the run worker and every process it started (the step
  processes of the multiprocess executor). Read from the kernel, not sampled: the code server
  reaps its workers, and a reaped child's CPU (with that of the children it reaped itself) is
  added to the parent's ``cutime``/``cstime`` (``/proc/<pid>/stat``, psutil's
  ``children_user``/``children_system``). The delta of those over the code server's processes
  across one run is that run's worker tree, exactly;
- sync: the steps' own durations from the event log (``STEP_SUCCESS``/``STEP_FAILURE``), i.e.
  the time inside the assets and checks, and the assets' ``duration_s`` metadata where given;
- overhead: wall / sync and CPU - sync.

``--executor project`` serves ``sync_pipelines.definitions`` as it is; ``multiprocess`` and
``in_process`` serve ``bench.overhead_location``, the same Definitions with that executor, for
a before/after in one checkout. The import time of the code (what every process that loads it
pays) is printed first, from ``python -X importtime``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

from bench.database import bench_database

RUN_QUERY_DEADLINE_S = 600
WORKER_PID = re.compile(r"^Started process for run \(pid: (\d+)\)")
LAUNCH = """
mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename
  ... on LaunchRunSuccess { run { runId } }
  ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } }
} }
"""


@dataclass
class RunFigures:
    status: str
    wall_s: float  # run record start -> end
    submit_to_end_s: float
    cpu_s: float | None  # run worker and its children
    sync_s: float  # sum of step durations
    duration_s: float | None  # the assets' own duration_s metadata, where given
    steps: int


@dataclass
class JobFigures:
    name: str
    runs: list[RunFigures] = field(default_factory=list)
    error: str = ""


def import_time_lines(top: int = 8) -> list[str]:
    """Total import time of the code location and its largest direct imports."""
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-X", "importtime", "-c", "import sync_pipelines.definitions"],
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    rows = []
    for line in proc.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)", line)
        if match:
            own, cumulative, indent, name = match.groups()
            rows.append((int(own), int(cumulative), len(indent) // 2, name))
    total = next(r for r in rows if r[3] == "sync_pipelines.definitions")
    lines = [
        f"import sync_pipelines.definitions: {total[1] / 1e6:.2f} s "
        f"({total[0] / 1e6:.2f} s building the Definitions in definitions.py itself)"
    ]
    direct = sorted((r for r in rows if r[2] == 1), key=lambda r: -r[1])[:top]
    lines += [f"  {name:<40} {cum / 1e6:6.2f} s" for _, cum, _, name in direct]
    return lines


def _cpu_of_reaped_children(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.children_user + times.children_system
    return total


def _code_server_pids(root_pid: int) -> list[int]:
    """The code server and the processes it started that are not run workers (its gRPC
    server, when ``code-server start`` runs one in a child)."""
    try:
        root = psutil.Process(root_pid)
        return [root_pid] + [p.pid for p in root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _reaped(pid: int) -> bool:
    """Gone from the process table: a zombie's CPU is not yet in its parent's counters."""
    return not psutil.pid_exists(pid)


def partition_for(defs, job, index: int) -> str | None:
    """A partition of ``job`` the sandbox has data for: the demo's list, else the latest."""
    from dagster import DagsterInstance

    from sync_pipelines.sandbox.demo import _demo_partitions

    if job.partitions_def is None:
        return None
    wanted = _demo_partitions()
    for key in sorted(job.asset_layer.executable_asset_keys, key=lambda k: k.to_user_string()):
        keys = wanted.get(key.to_user_string())
        if keys:
            return keys[index % len(keys)]
    existing = job.partitions_def.get_partition_keys(dynamic_partitions_store=DagsterInstance.get())
    return existing[-1] if existing else None


def launch_params(defs, job_name: str, index: int, location: str) -> dict:
    job = defs.resolve_job_def(job_name)
    tags: dict[str, str] = {}
    run_config: dict = {}
    key = partition_for(defs, job, index)
    if key is not None:
        tags.update(job.partitioned_config.get_tags_for_partition_key(key, job_name))
        run_config = job.partitioned_config.get_run_config_for_partition_key(key)
    return {
        "selector": {
            "repositoryLocationName": location,
            "repositoryName": "__repository__",
            "jobName": job_name,
        },
        "runConfigData": run_config,
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
    }


def measure_run(services, url, instance, params, code_server_pid: int) -> RunFigures:
    from dagster import DagsterEventType

    from sync_pipelines_tests.operations.dagster_services import graphql

    cpu_before = _cpu_of_reaped_children(_code_server_pids(code_server_pid))
    submitted = time.time()
    launched = graphql(url, LAUNCH, {"params": params})["launchRun"]
    if launched["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(f"launch refused: {launched}")
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + RUN_QUERY_DEADLINE_S
    while True:
        services.assert_alive()
        record = instance.get_run_record_by_id(run_id)
        if record.dagster_run.is_finished:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} not finished after {RUN_QUERY_DEADLINE_S} s")
        time.sleep(0.2)
    # The worker's CPU reaches the code server's children counters when it is reaped.
    worker = None
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        match = WORKER_PID.match(entry.message or "")
        if match:
            worker = int(match.group(1))
    cpu: float | None = None
    if worker is not None:
        reap_deadline = time.monotonic() + 30
        while not _reaped(worker) and time.monotonic() < reap_deadline:
            time.sleep(0.2)
        # A run a schedule or sensor started meanwhile (several are on by default, as in
        # production) has its worker reaped by the same code server: no CPU figure then.
        others = [
            r
            for r in instance.get_run_records()
            if r.dagster_run.run_id != run_id and (r.end_time is None or r.end_time >= submitted)
        ]
        if _reaped(worker) and not others:
            cpu = _cpu_of_reaped_children(_code_server_pids(code_server_pid)) - cpu_before
    steps = instance.all_logs(
        run_id, of_type={DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}
    )
    sync_s = sum(e.dagster_event.event_specific_data.duration_ms or 0 for e in steps if e.dagster_event.event_type == DagsterEventType.STEP_SUCCESS) / 1000  # fmt: skip
    starts = {e.step_key: e.timestamp for e in instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)}  # fmt: skip
    for entry in steps:  # a failed step's time: from its start to its failure
        if (
            entry.dagster_event.event_type == DagsterEventType.STEP_FAILURE
            and entry.step_key in starts
        ):
            sync_s += entry.timestamp - starts[entry.step_key]
    durations = []
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        value = entry.asset_materialization.metadata.get("duration_s")
        if value is not None:
            durations.append(float(value.value))
    return RunFigures(
        status=record.dagster_run.status.value,
        wall_s=(record.end_time or 0) - (record.start_time or 0),
        submit_to_end_s=(record.end_time or time.time()) - submitted,
        cpu_s=cpu,
        sync_s=sync_s,
        duration_s=sum(durations) if durations else None,
        steps=len(steps),
    )


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def report_lines(figures: list[JobFigures]) -> list[str]:
    def fmt(value: float | None, digits: int = 2) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = [
        "medians per run; wall = run start->end, queue+wall = submit->end, cpu = run worker "
        "and its children (n/a when another run overlapped), sync = the steps' own time, "
        "duration_s = the assets' own metadata",
        f"{'job':<30} {'runs':>4} {'ok':>3} {'steps':>5} {'wall s':>7} {'queue+wall':>10} "
        f"{'cpu s':>6} {'sync s':>7} {'duration_s':>10} {'wall/sync':>9} {'wall-sync':>9}",
    ]
    all_wall, all_cpu, all_sync = [], [], []
    for job in figures:
        if job.error:
            lines.append(f"{job.name:<30} not measured: {job.error[:120]}")
            continue
        runs = job.runs
        wall = _median([r.wall_s for r in runs])
        queue = _median([r.submit_to_end_s for r in runs])
        cpu = _median([r.cpu_s for r in runs])
        sync = _median([r.sync_s for r in runs])
        own = _median([r.duration_s for r in runs])
        all_wall += [r.wall_s for r in runs]
        all_cpu += [r.cpu_s for r in runs if r.cpu_s is not None]
        all_sync += [r.sync_s for r in runs]
        ok = sum(r.status == "SUCCESS" for r in runs)
        ratio = wall / sync if sync else None
        over = wall - sync if wall is not None and sync is not None else None
        lines.append(
            f"{job.name:<30} {len(runs):>4} {ok:>3} {runs[0].steps:>5} {fmt(wall):>7} "
            f"{fmt(queue):>10} {fmt(cpu):>6} {fmt(sync, 3):>7} {fmt(own, 3):>10} {fmt(ratio, 0):>9} {fmt(over):>9}"
        )
    if all_wall:
        lines.append(
            f"all runs: wall {statistics.mean(all_wall):.2f} s, "
            f"cpu {statistics.mean(all_cpu) if all_cpu else float('nan'):.2f} s, "
            f"sync {statistics.mean(all_sync):.3f} s per run on average"
        )
    return lines


def run(args: argparse.Namespace, server_url: str) -> None:
    from dagster import DagsterInstance

    from sync_pipelines.sandbox.demo import apply_migrations, prepare_sources, set_pool_limits
    from sync_pipelines.sandbox.runner import Sandbox
    from sync_pipelines_tests.dagster_db import scratch_database
    from sync_pipelines_tests.operations.dagster_services import (
        LOCATION,
        ROOT,
        Services,
        clean_env,
        free_port,
        wait_until_loaded,
    )

    for line in import_time_lines():
        print(line)
    module = (
        "sync_pipelines.definitions" if args.executor == "project" else "bench.overhead_location"
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    saved_env = dict(os.environ)
    with scratch_database(server_url) as db_url:
        sandbox = Sandbox(workdir / "sandbox", database_url=db_url)
        services = Services(workdir, {})
        try:
            env = sandbox.start()
            os.environ.update(env)
            apply_migrations(lambda msg: None)
            instance = DagsterInstance.get()
            set_pool_limits(instance)
            prepare_sources(env, instance, log=lambda msg: None)
            services.env = clean_env({**env, "BENCH_EXECUTOR": args.executor})
            grpc_port, web_port = free_port(), free_port()
            workspace = yaml.safe_load((ROOT / "deploy" / "workspace.yaml").read_text())
            workspace["load_from"][0]["grpc_server"].update(host="127.0.0.1", port=grpc_port)
            workspace_file = workdir / "workspace.yaml"
            workspace_file.write_text(yaml.safe_dump(workspace))
            code_server = services.start(
                "code-server",
                [
                    str(Path(sys.executable).parent / "dagster"), "code-server", "start",
                    "-h", "127.0.0.1", "-p", str(grpc_port), "-m", module,
                    "--location-name", LOCATION,
                ],
            )  # fmt: skip
            url = services.webserver(workspace_file, web_port)
            services.daemon(workspace_file)
            wait_until_loaded(services, url)
            if args.executor == "project":
                from sync_pipelines.definitions import defs
            else:
                os.environ["BENCH_EXECUTOR"] = args.executor
                from bench.overhead_location import defs
            names = args.jobs.split(",") if args.jobs else sorted(j.name for j in defs.jobs)
            executor = defs.resolve_job_def(names[0]).executor_def.name
            print(f"\n{args.runs} run(s) of each job, one at a time; executor: {executor}")
            figures = []
            for name in names:
                job = JobFigures(name)
                figures.append(job)
                for index in range(args.runs):
                    try:
                        params = launch_params(defs, name, index, LOCATION)
                        job.runs.append(
                            measure_run(services, url, instance, params, code_server.pid)
                        )
                    except Exception as exc:  # noqa: BLE001 - reported in the table, bench goes on
                        job.error = f"{type(exc).__name__}: {exc}"
                        break
                print(f"  {name}: {len(job.runs)} run(s) {job.error[:80]}", flush=True)
            print()
            for line in report_lines(figures):
                print(line)
            instance.dispose()
        finally:
            services.stop()
            sandbox.stop()
            os.environ.clear()
            os.environ.update(saved_env)
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="runs of each job")
    parser.add_argument(
        "--executor",
        choices=["project", "multiprocess", "in_process"],
        default="project",
        help="project: the code location as deployed; else the same with this executor",
    )
    parser.add_argument("--jobs", help="comma-separated job names (default: every job)")
    parser.add_argument("--url")
    args = parser.parse_args()
    with bench_database(args.url) as url:
        run(args, url)


if __name__ == "__main__":
    main()
