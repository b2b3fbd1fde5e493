"""The one Definitions object of the project: every source's defs merged, plus shared resources.

Each source keeps its whole Dagster story in its own ``defs.py`` (or ``defs/`` package); this
file only lists them, so a newcomer sees every sync in one place (and ``dagster dev`` /
``workspace.yaml`` load it).
The sources are imported as modules so that ``defs`` is the only Definitions object at module
scope: ``dagster ... -m sync_pipelines.definitions`` then needs no ``-a``.
"""

from dagster import Definitions, in_process_executor

from .detran import defs as detran
from .hubsoft import defs as hubsoft
from .local_sync import defs as local_sync
from .operations import defs as operations
from .operations.freshness import with_schedule_freshness
from .operations.run_limits import with_run_limits
from .resources import database_resources
from .scouter import defs as scouter
from .tiny import defs as tiny

# Every scheduled asset also gets a freshness policy derived from its schedule, and every
# job its run limits: duration and pod size (operations/run_limits.py).
defs = with_run_limits(
    with_schedule_freshness(
        Definitions.merge(
            operations.defs,
            tiny.defs,
            detran.defs,
            hubsoft.defs,
            scouter.defs,
            local_sync.defs,
            # Each run's steps in its run worker: one load of the code per run instead of one
            # more per step (README, "Dagster overhead per run"); pools still limit the steps.
            Definitions(resources=database_resources(), executor=in_process_executor),
        )
    )
)
