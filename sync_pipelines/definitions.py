"""The one Definitions object of the project: every source's defs merged, plus shared resources.

Each source keeps its whole Dagster story in its own ``defs.py`` (or ``defs/`` package); this
file only lists them, so a newcomer sees every sync in one place (and ``dagster dev`` /
``workspace.yaml`` load it).
The sources are imported as modules so that ``defs`` is the only Definitions object at module
scope: ``dagster ... -m sync_pipelines.definitions`` then needs no ``-a``.
"""

import re
import warnings
from collections.abc import Mapping

from dagster import (
    BetaWarning,
    ConfigurableResource,
    Definitions,
    PreviewWarning,
    in_process_executor,
)

# The Beta/Preview APIs this project uses knowingly; their warnings would otherwise print on
# every load and every run. Each filter names one API, so a new one still warns. Installed
# before the sources are imported: their sensors are built at import.
KNOWN_BETA_AND_PREVIEW_APIS = {
    BetaWarning: (
        "CodeReferencesMetadataValue",  # catalog.py: links each asset to its source file
        "LocalFileCodeReference",
        "SensorDefinition.__init__",  # `owners` on sensors
    ),
    PreviewWarning: (
        "Definitions.map_asset_specs",  # catalog.py: connects assets to sources and tables
        "Definitions.map_resolved_asset_specs",  # freshness policies, run time limits
    ),
}
for _category, _apis in KNOWN_BETA_AND_PREVIEW_APIS.items():
    for _api in _apis:
        warnings.filterwarnings("ignore", message=rf".*`{re.escape(_api)}`", category=_category)

from .catalog import with_catalog  # noqa: E402
from .detran import defs as detran  # noqa: E402
from .hubsoft import defs as hubsoft  # noqa: E402
from .local_sync import defs as local_sync  # noqa: E402
from .operations import defs as operations  # noqa: E402
from .operations.freshness import with_schedule_freshness  # noqa: E402
from .operations.run_limits import with_run_limits  # noqa: E402
from .resources import database_resources  # noqa: E402
from .scouter import defs as scouter  # noqa: E402
from .tiny import defs as tiny  # noqa: E402


def project_resources(env: Mapping[str, str] | None = None) -> dict[str, ConfigurableResource]:
    """Every resource of the project, each field set with ``EnvVar("NAME")``.

    Whether an optional variable is set decides here, once per load, whether its field is
    wired (unset: the field's documented default). A role without a database raises
    ``MissingEnvironmentError`` naming its variables, so the code location fails to load
    with the name instead of every run failing later.
    """
    return {
        **database_resources(env),
        "tiny_api": tiny.TinyApiResource.from_env_vars(env),
        "detran_portal": detran.DetranPortalResource.from_env_vars(env),
        "hubsoft": hubsoft.HubSoftResource.from_env_vars(env),
        "gestao_scouter": scouter.GestaoScouterResource.from_env_vars(env),
    }


def build_defs(env: Mapping[str, str] | None = None) -> Definitions:
    """The project's Definitions, with resources wired to the variables of ``env``."""
    # The catalog adds the external systems and the tables, and connects every asset to
    # them (catalog.py). Every scheduled asset also gets a freshness policy derived from its schedule, and
    # every job its run limits: duration and pod size (operations/run_limits.py).
    return with_run_limits(
        with_schedule_freshness(
            with_catalog(
                Definitions.merge(
                    operations.defs,
                    tiny.defs,
                    detran.defs,
                    hubsoft.defs,
                    scouter.defs,
                    local_sync.defs,
                    # Each run's steps in its run worker: one load of the code per run instead
                    # of one more per step (README, "Dagster overhead per run"); pools still
                    # limit the steps.
                    Definitions(resources=project_resources(env), executor=in_process_executor),
                )
            )
        )
    )


defs = build_defs()
