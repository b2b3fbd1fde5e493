"""The registry of simulators the sandbox starts, and the variables that point clients at them.

Each source issue adds its simulator here: a factory building it from the sandbox seed, and
a function giving the environment (base URL and sandbox credentials) its client reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class SimulatorSpec:
    name: str
    factory: Callable[[int], object]  # seed -> a harness Simulator (not started)
    env: Callable[[str], dict[str, str]]  # base URL -> variables for the clients


SIMULATORS: list[SimulatorSpec] = []
