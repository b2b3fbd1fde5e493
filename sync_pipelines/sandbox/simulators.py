"""What each source brings to the sandbox: its simulator, its environment, its demo data.

Each source defines one ``SandboxPart`` in its own module under ``sandbox/`` and lists it in
``sandbox/parts.py``; the sandbox runner and the demo pick it up from there. Nothing here
is imported by production code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SandboxPart:
    name: str
    # seed -> a harness Simulator, not started yet (None: the source needs no HTTP service)
    simulator: Callable[[int], object] | None = None
    # base URL of the started simulator (or "" without one) -> variables the clients read
    env: Callable[[str], dict[str, str]] = lambda base_url: {}
    # the sandbox's environment so far (database URL...) -> more variables (e.g. a template
    # of tenant URLs on the sandbox database); applied after every part's ``env``
    env_from_sandbox: Callable[[Mapping[str, str]], dict[str, str]] | None = None
    # after migrations, with the sandbox environment applied: create and seed source data
    # (e.g. a source database the sync reads from). Must be idempotent: the demo reruns it.
    prepare: Callable[[Mapping[str, str]], None] | None = None
    # dynamic partitions definition name -> keys the demo registers before materializing
    dynamic_partitions: Callable[[Mapping[str, str]], dict[str, list[str]]] | None = None
    # () -> {asset key (user string, e.g. "tiny/service_orders"): partition keys the demo
    # runs}. A function, not a dict: keys such as "this month" are read when the demo runs,
    # on the clock it runs under, never frozen at import time.
    demo_partitions: Callable[[], dict[str, list[str]]] = dict
    # what the part's data gets wrong on purpose, so the demo summary can say why a failures
    # table has rows or a check fails: "role.table" or "asset/key:check_name" -> the reason
    planted: dict[str, str] = field(default_factory=dict)
