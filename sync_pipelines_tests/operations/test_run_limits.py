"""Each job's runs carry a max runtime sized to it, and the worker health check of the local
launcher tells a live worker from a dead one (or from a newer process that got its pid)."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest
import yaml
from dagster import DagsterRun
from dagster._core.launcher.base import WorkerStatus

from sync_pipelines.definitions import defs
from sync_pipelines.local_sync.defs import TENANT_TAG
from sync_pipelines.operations.run_launcher import (
    WORKER_HOST_TAG,
    LocalRunLauncher,
    WorkerStart,
    worker_status,
)
from sync_pipelines.operations.run_limits import MAX_RUNTIME_SECONDS

from .dagster_services import ROOT

TAG = "dagster/max_runtime"


def test_every_job_has_its_own_max_runtime_on_definition_and_run_tags():
    repository = defs.get_repository_def()
    jobs = {job.name: job for job in repository.get_all_jobs() if not job.name.startswith("__")}
    assert set(MAX_RUNTIME_SECONDS) == set(jobs), "a job without a bound, or a bound without a job"
    for name, job in jobs.items():
        assert job.tags.get(TAG) == str(MAX_RUNTIME_SECONDS[name]), name
        assert job.run_tags.get(TAG) == str(MAX_RUNTIME_SECONDS[name]), name
    # Schedules and sensors launch the tagged job, not an untagged copy of it.
    for schedule in repository.schedule_defs:
        if schedule.has_job:
            assert schedule.job.run_tags.get(TAG), schedule.name
    # A few hours at most: a stuck run must not hold its schedule or examiner for longer.
    assert max(MAX_RUNTIME_SECONDS.values()) <= 3 * 3600


def test_detran_job_keeps_its_examiner_tag_for_every_partition():
    job = defs.get_repository_def().get_job("detran_agenda_sync")
    tags = job.partitioned_config.get_tags_for_partition_key("2026-12-01|7")
    assert tags["examiner"] == "7"


def test_local_sync_job_carries_the_tenant_tag_that_dagster_yaml_limits():
    job = defs.get_repository_def().get_job("local_sync_job")
    assert job.partitioned_config.get_tags_for_partition_key("exatron")[TENANT_TAG] == "exatron"
    # The instance runs one run per value of that tag: a change-sensor run of a tenant being
    # synced waits in the queue (test_change_sensor.py: and none piles up while it waits).
    limits = yaml.safe_load((ROOT / "dagster.yaml").read_text())["concurrency"]["runs"]
    tenant_limit = [
        limit for limit in limits["tag_concurrency_limits"] if limit["key"] == TENANT_TAG
    ]
    assert tenant_limit == [
        {"key": TENANT_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ]


@pytest.fixture
def child():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def _started(pid: int) -> WorkerStart:
    return WorkerStart(pid=pid, reported_at=psutil.Process(pid).create_time() + 0.5)


def test_live_worker_is_running(child):
    status, _ = worker_status(_started(child.pid))
    assert status == WorkerStatus.RUNNING


def test_killed_worker_is_failed_also_before_it_is_reaped(child):
    start = _started(child.pid)
    child.kill()
    # Not reaped yet (nobody called wait): a zombie is a dead worker.
    deadline = time.monotonic() + 30
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the killed child never became a zombie"
        time.sleep(0.05)
    status, message = worker_status(start)
    assert status == WorkerStatus.FAILED and str(child.pid) in message
    child.wait()
    status, message = worker_status(start)
    assert status == WorkerStatus.FAILED and "gone" in message


def test_pid_reused_by_a_newer_process_is_a_dead_worker(child):
    # The event was written before this process existed: it cannot be the worker that wrote it.
    created = psutil.Process(child.pid).create_time()
    status, message = worker_status(WorkerStart(pid=child.pid, reported_at=created - 60))
    assert status == WorkerStatus.FAILED and "newer process" in message


@pytest.mark.parametrize("host", [None, "another-machine"])
def test_worker_this_machine_cannot_see_is_left_to_max_runtime(host):
    tags = {WORKER_HOST_TAG: host} if host else {}
    run = DagsterRun(job_name="detran_agenda_sync", run_id="r1", tags=tags)
    result = LocalRunLauncher().check_run_worker_health(run)
    assert result.status == WorkerStatus.RUNNING


def test_every_job_kind_sizes_its_kubernetes_run_pod():
    import json

    from sync_pipelines.operations.run_limits import JOB_KINDS, POD_SIZES

    repository = defs.get_repository_def()
    jobs = {job.name: job for job in repository.get_all_jobs() if not job.name.startswith("__")}
    assert set(JOB_KINDS) == set(jobs), "a job without a pod size, or a size without a job"
    for name, job in jobs.items():
        config = json.loads(job.run_tags["dagster-k8s/config"])
        resources = config["container_config"]["resources"]
        assert resources == POD_SIZES[JOB_KINDS[name]], name
        assert resources["requests"]["memory"] and resources["limits"]["memory"], name
    # the tenant sync holds a table's rows: it gets more memory than an API sync
    sizes = {name: json.loads(j.run_tags["dagster-k8s/config"]) for name, j in jobs.items()}
    bulk = sizes["local_sync_job"]["container_config"]["resources"]["limits"]["memory"]
    api = sizes["tiny_incremental_sync"]["container_config"]["resources"]["limits"]["memory"]
    assert (bulk, api) == ("3Gi", "512Mi")
