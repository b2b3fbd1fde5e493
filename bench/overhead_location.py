"""The project's code location with the executor the overhead benchmark asks for.

``bench.bench_run_overhead --executor multiprocess`` serves this module instead of
``sync_pipelines.definitions`` so one run of the benchmark can measure Dagster's default
executor (a process per step) against the project's in-process executor with everything
else identical: the same Definitions, the same import cost, only the executor swapped.
"""

from __future__ import annotations

import os

from dagster import in_process_executor, multiprocess_executor
from dagster._record import replace

from sync_pipelines import definitions as project

EXECUTORS = {"in_process": in_process_executor, "multiprocess": multiprocess_executor}

# The project's module, not its object: one Definitions at module scope for the loader.
defs = replace(project.defs, executor=EXECUTORS[os.environ["BENCH_EXECUTOR"]])
