"""The Dagster layer of this source: assets, checks, jobs, schedules, sensors.

Nothing is defined yet: the source's own issue builds its client.py and sync.py and wires
them here. The empty Definitions keeps the project's shape (one folder per source, merged in
sync_pipelines/definitions.py) visible from the start.
"""

from dagster import Definitions

defs = Definitions()
