"""The one Definitions object of the project: every source's defs merged, plus shared resources.

Each source keeps its whole Dagster story in its own ``defs.py``; this file only lists them,
so a newcomer sees every sync in one place (and ``dagster dev`` / ``workspace.yaml`` load it).
"""

from __future__ import annotations

from dagster import Definitions

from .detran.defs import defs as detran_defs
from .hubsoft.defs import defs as hubsoft_defs
from .local_sync.defs import defs as local_sync_defs
from .operations.defs import defs as operations_defs
from .resources import database_resources
from .scouter.defs import defs as scouter_defs
from .tiny.defs import defs as tiny_defs

defs = Definitions.merge(
    operations_defs,
    tiny_defs,
    detran_defs,
    hubsoft_defs,
    scouter_defs,
    local_sync_defs,
    Definitions(resources=database_resources()),
)
