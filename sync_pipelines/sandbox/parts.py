"""Every source's sandbox part, in the order the sandbox starts them."""

from __future__ import annotations

from .detran_data import DETRAN_PART
from .hubsoft_data import HUBSOFT_PART
from .local_sync_data import LOCAL_SYNC_PART
from .scouter_data import SCOUTER_PART
from .simulators import SandboxPart
from .telegram_sim import TELEGRAM_PART
from .tiny_sim import TINY_PART

PARTS: list[SandboxPart] = [
    LOCAL_SYNC_PART,
    TINY_PART,
    SCOUTER_PART,
    DETRAN_PART,
    TELEGRAM_PART,
    HUBSOFT_PART,
]
