"""The one Definitions object of the project: every source's defs merged, plus shared resources.

Each source keeps its whole Dagster story in its own ``defs.py`` (or ``defs/`` package); this
file only lists them, so a newcomer sees every sync in one place (and ``dagster dev`` /
``workspace.yaml`` load it).
The sources are imported as modules so that ``defs`` is the only Definitions object at module
scope: ``dagster ... -m sync_pipelines.definitions`` then needs no ``-a``.
"""

from collections.abc import Mapping

from dagster import ConfigurableResource, Definitions

from .detran import defs as detran
from .hubsoft import defs as hubsoft
from .local_sync import defs as local_sync
from .operations import defs as operations
from .operations.freshness import with_schedule_freshness
from .operations.run_limits import with_max_runtime
from .resources import database_resources
from .scouter import defs as scouter
from .tiny import defs as tiny


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
    # Every scheduled asset also gets a freshness policy derived from its schedule, and
    # every job the bound on its runs' duration (operations/run_limits.py).
    return with_max_runtime(
        with_schedule_freshness(
            Definitions.merge(
                operations.defs,
                tiny.defs,
                detran.defs,
                hubsoft.defs,
                scouter.defs,
                local_sync.defs,
                Definitions(resources=project_resources(env)),
            )
        )
    )


defs = build_defs()
