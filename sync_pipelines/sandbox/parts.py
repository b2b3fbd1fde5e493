"""Every source's sandbox part, in the order the sandbox starts them."""

from __future__ import annotations

from .simulators import SandboxPart

PARTS: list[SandboxPart] = []
