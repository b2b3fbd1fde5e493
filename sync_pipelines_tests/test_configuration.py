"""Configuration the Dagster way: every resource field comes from an ``EnvVar``, a missing
database variable fails the code location's load naming it, the UI sees variable names and
never values, and plain modules do not read the environment."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster_shared.serdes import serialize_value

from sync_pipelines.definitions import build_defs
from sync_pipelines.resources import DatabaseResource, MissingEnvironmentError
from sync_pipelines.scouter.client import ScouterConfigError
from sync_pipelines.scouter.defs import GestaoScouterResource

ROOT = Path(__file__).resolve().parents[1]

# One value per secret the project reads; none may reach what the UI is sent.
SECRETS = {
    "SYNC_DATABASE_URL": "postgresql+psycopg2://sync:Db-Pa55-secret@db.example:5432/app",
    "TINY_CLIENT_SECRET": "tiny-client-secret-value-123",
    "TINY_INITIAL_REFRESH_TOKEN": "tiny-refresh-token-value-456",
    "DETRAN_CREDENTIALS_KEY": "c2VjcmV0LWRldHJhbi1rZXktdmFsdWUtMDAwMDAwMDA=",
    "HUBSOFT_CLIENT_SECRET": "hubsoft-client-secret-value-789",
    "HUBSOFT_PASSWORD": "hubsoft-password-value-abc",
    "TELEGRAM_BOT_TOKEN": "7000000001:telegram-token-value-def",
    "GESTAO_SCOUTER_SERVICE_KEY": "scouter-service-key-value-ghi",
    "LOCAL_SYNC_TENANT_URL_TEMPLATE": "mysql+pymysql://sync:Tenant-Pw-jkl@h:3306/{instance}",
}
NOT_SECRET = {
    "HUBSOFT_ENABLED": "true",
    "HUBSOFT_API_URL": "https://api.isp.example",
    "HUBSOFT_CLIENT_ID": "3",
    "HUBSOFT_USERNAME": "api@isp.example",
    "TINY_CLIENT_ID": "tiny-client",
    "GESTAO_SCOUTER_URL": "https://project.supabase.example",
    "GESTAO_SCOUTER_BATCH_SIZE": "25",
    "ADMIN_USER_IDS": "111",
}


def _without_database_variables() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYNC_", "DAGSTER_")) and not k.endswith("_DATABASE_URL")
    }


def test_load_without_a_database_variable_fails_naming_it(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "definitions",
            "validate",
            "-m",
            "sync_pipelines.definitions",
        ],
        cwd=tmp_path,
        env=_without_database_variables(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "MissingEnvironmentError" in output
    assert "SYNC_DATABASE_URL" in output and "SYNC_CONTROL_DATABASE_URL" in output


def test_a_role_without_its_own_url_and_no_shared_url_is_named():
    env = {"SYNC_CONTROL_DATABASE_URL": "postgresql://c@h/control"}
    with pytest.raises(MissingEnvironmentError, match="TINY_DATABASE_URL.*SYNC_DATABASE_URL"):
        build_defs(env)


def test_own_url_wins_over_the_shared_one_and_the_shared_one_gets_the_role_schema():
    env = {
        "SYNC_DATABASE_URL": "postgresql://a@h/shared",
        "TINY_DATABASE_URL": "postgresql://b@h/t",
    }
    tiny = DatabaseResource.for_role("tiny", env)
    detran = DatabaseResource.for_role("detran", env)
    assert (tiny.url.env_var_name, tiny.schema_name) == ("TINY_DATABASE_URL", None)
    assert (detran.url.env_var_name, detran.schema_name) == ("SYNC_DATABASE_URL", "detran")


def test_the_ui_sees_variable_names_and_never_a_secret_value(monkeypatch):
    for name, value in {**SECRETS, **NOT_SECRET}.items():
        monkeypatch.setenv(name, value)
    snapshot = RepositorySnap.from_def(build_defs().get_repository_def())
    shown = serialize_value(snapshot)
    for name, value in SECRETS.items():
        assert value not in shown, f"the value of {name} reaches the UI"
    env_vars = {
        (resource.name, field): value.name
        for resource in snapshot.resources
        for field, value in resource.configured_values.items()
        if type(value).__name__ == "ResourceConfigEnvVarSnap"
    }
    assert env_vars[("tiny_api", "client_secret")] == "TINY_CLIENT_SECRET"
    assert env_vars[("hubsoft", "password")] == "HUBSOFT_PASSWORD"
    assert env_vars[("telegram", "bot_token")] == "TELEGRAM_BOT_TOKEN"
    assert env_vars[("gestao_scouter", "service_key")] == "GESTAO_SCOUTER_SERVICE_KEY"
    assert env_vars[("detran_portal", "credentials_key")] == "DETRAN_CREDENTIALS_KEY"
    assert env_vars[("tenant_dbs", "url_template")] == "LOCAL_SYNC_TENANT_URL_TEMPLATE"
    assert env_vars[("control_db", "url")] == "SYNC_DATABASE_URL"


def test_hubsoft_off_needs_none_of_its_variables():
    defs = build_defs({"SYNC_DATABASE_URL": "postgresql://a@h/db", "HUBSOFT_ENABLED": "false"})
    hubsoft = defs.resources["hubsoft"]
    assert hubsoft.enabled.env_var_name == "HUBSOFT_ENABLED" and hubsoft.password is None


def test_an_unset_optional_credential_fails_the_run_naming_the_variable():
    with pytest.raises(ScouterConfigError, match="GESTAO_SCOUTER_URL.*GESTAO_SCOUTER_SERVICE_KEY"):
        GestaoScouterResource().client()


def _reads_environment(path: Path) -> list[int]:
    tree = ast.parse(path.read_text())
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
        and node.attr in ("environ", "getenv")
    ]


def test_plain_modules_take_plain_arguments():
    package = ROOT / "sync_pipelines"
    plain = [*package.glob("lib/*.py"), *package.glob("*/client.py"), *package.glob("*/sync.py")]
    assert len(plain) > 10
    offenders = {str(p.relative_to(ROOT)): lines for p in plain if (lines := _reads_environment(p))}
    assert offenders == {}
