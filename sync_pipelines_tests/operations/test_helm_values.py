"""deploy/values.yaml against the Dagster chart's own schema, and deploy/'s variables against the code.

Helm validates the chart's defaults merged with these values, so the schema's ``required``
lists (satisfied by the chart's own values.yaml, not vendored) are dropped here; every type,
enum, ``additionalProperties: false`` and conditional stays. Helm silently ignores a top-level
key the chart does not know (that is how a top-level ``dagsterHome`` went unnoticed), so
those are refused too.
"""

from __future__ import annotations

import ast
import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
VALUES = yaml.safe_load((DEPLOY / "values.yaml").read_text())
SCHEMA = json.loads((DEPLOY / "values.schema.json").read_text())

# Read by Dagster, the chart, Kubernetes or pip, not by sync_pipelines: allowed in deploy/.
PLATFORM_NAMES = {
    "DAGSTER_HOME",  # the instance directory (chart: global.dagsterHome)
    "DAGSTER_PG_PASSWORD",  # the chart's env for Dagster's PostgreSQL password
    "GOOGLE_APPLICATION_CREDENTIALS",  # the GCS client library (compute logs on GCS)
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
}
# Read by the code but never set in a deployment: the sandbox's and the tests' own settings,
# and tuning knobs whose code default is the production value.
NOT_DEPLOYED = {
    "SYNC_SANDBOX_DIR",
    "LOCAL_SYNC_SANDBOX_MYSQL_URL",
}
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
TOKEN = re.compile(r"(?<![A-Za-z0-9_<{])[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+(?![A-Za-z0-9_])")


def _without_required(node):
    # Only an object's own required keys; the conditionals' `then: {config: {required}}`
    # (a K8sRunLauncher needs its k8sRunLauncher block) stay.
    if isinstance(node, dict):
        drop = "properties" in node
        return {k: _without_required(v) for k, v in node.items() if not (drop and k == "required")}
    if isinstance(node, list):
        return [_without_required(v) for v in node]
    return node


def _validator(schema: dict) -> jsonschema.Draft7Validator:
    schema = copy.deepcopy(schema)
    # The Kubernetes object schemas are remote ($ref to kubernetesjsonschema.dev); the
    # machine is offline and Kubernetes validates those objects itself at apply time.
    for definition in schema["definitions"].values():
        if str(definition.get("$ref", "")).startswith("https://"):
            definition.pop("$ref")
    return jsonschema.Draft7Validator(_without_required(schema))


def _errors(values: dict) -> list[str]:
    found = [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in _validator(SCHEMA).iter_errors(values)
    ]
    unknown = sorted(set(values) - set(SCHEMA["properties"]))
    found += [f"{key}: not a value of the chart (Helm would ignore it)" for key in unknown]
    return found


def test_values_validate_against_the_vendored_chart_schema():
    assert _errors(VALUES) == []


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda v: v.update(dagsterHome="/opt/dagster/dagster_home"), "dagsterHome"),
        (lambda v: v["runLauncher"].update(type="K8sLauncher"), "runLauncher.type"),
        (lambda v: v["computeLogManager"]["config"].pop("s3ComputeLogManager"), "s3Compute"),
        (lambda v: v["dagsterDaemon"].update(runMonitor={"enabled": True}), "runMonitor"),
    ],
    ids=["top-level-dagsterHome", "launcher-typo", "log-manager-without-config", "daemon-typo"],
)
def test_schema_check_catches_the_mistakes_it_is_for(mutate, fragment):
    values = copy.deepcopy(VALUES)
    mutate(values)
    assert any(fragment in error for error in _errors(values)), _errors(values)


def test_values_reference_nothing_named_after_the_release():
    # Only secrets/configmaps the operator creates with fixed names; no "<release>-..." ones.
    text = (DEPLOY / "values.yaml").read_text()
    assert "dagster-instance" not in text
    deployment = VALUES["dagster-user-deployments"]["deployments"][0]
    assert "initContainers" not in deployment and "volumes" not in deployment
    # The image tag is written once: the run pods and the rollout step use the same image.
    assert text.count(deployment["image"]["tag"]) == 1


def _production_modules() -> list[Path]:
    pkg = ROOT / "sync_pipelines"
    return [p for p in pkg.rglob("*.py") if "sandbox" not in p.relative_to(pkg).parts]


def _code_names() -> tuple[set[str], set[str]]:
    """(every env-like string literal of production code, those read without a default)."""
    literals: set[str] = set()
    required: set[str] = set()
    for path in _production_modules():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if ENV_NAME.match(node.value):
                    literals.add(node.value)
            # env["X"] / os.environ["X"]: a KeyError when unset, so deployments must set it.
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.slice, ast.Constant)
                and isinstance(node.slice.value, str)
                and ENV_NAME.match(node.slice.value)
            ):
                target = node.value
                name = (
                    target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
                )
                if name in ("env", "environ"):
                    required.add(node.slice.value)
    from sync_pipelines.lib.db import SHARED_URL_VAR

    required.add(SHARED_URL_VAR)
    # The project's instance config (dagster.yaml, baked into the image) reads its own.
    instance = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    url = instance["storage"]["postgres"]["postgres_url"]["env"]
    literals.add(url)
    required.add(url)
    return literals, required


def _deploy_names() -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for path in sorted(DEPLOY.iterdir()):
        if path.suffix == ".json" or not path.is_file():
            continue
        for token in TOKEN.findall(path.read_text()):
            names.setdefault(token, set()).add(path.name)
    return names


def _env_file_keys(name: str) -> set[str]:
    keys = set()
    for line in (DEPLOY / name).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keys.add(line.split("=", 1)[0].strip())
    return keys


def test_every_variable_named_in_deploy_is_one_the_code_reads():
    literals, _ = _code_names()
    unknown = {
        name: sorted(files)
        for name, files in _deploy_names().items()
        if name not in literals and name not in PLATFORM_NAMES
    }
    assert unknown == {}


def test_every_variable_the_code_requires_is_set_by_the_deployment():
    _, required = _code_names()
    deployed = _env_file_keys("secret.env.example") | _env_file_keys("config.env.example")
    assert required - deployed - NOT_DEPLOYED == set()
    # The rollout step (deploy/entrypoint.sh) reaches the Dagster instance through this one.
    assert "DAGSTER_POSTGRES_URL" in deployed


def test_secret_and_config_keys_do_not_overlap():
    both = _env_file_keys("secret.env.example") & _env_file_keys("config.env.example")
    assert both == set()
