"""deploy/Dockerfile, parsed: dependencies from the lock file before any code, no editable install."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


STEPS = _instructions((ROOT / "deploy" / "Dockerfile").read_text())


def _first_code_copy() -> int:
    for i, (word, args) in enumerate(STEPS):
        if word == "COPY" and any(s.startswith("sync_pipelines") for s in args.split()[:-1]):
            return i
    raise AssertionError("the Dockerfile never copies sync_pipelines/")


def test_dependency_layer_copies_nothing_of_the_code():
    for word, args in STEPS[: _first_code_copy()]:
        if word in ("COPY", "ADD"):
            sources = [s for s in args.split()[:-1] if not s.startswith("--")]
            assert all(not s.startswith(("sync_pipelines", ".")) for s in sources), args


def test_dependencies_install_from_the_lock_file_with_hashes_before_the_code():
    installs = [
        args
        for word, args in STEPS[: _first_code_copy()]
        if word == "RUN" and "pip install" in args
    ]
    assert installs, "no dependency install before the code is copied"
    assert any("-r /tmp/prod.lock" in a and "--require-hashes" in a for a in installs)
    copied = [args for word, args in STEPS[: _first_code_copy()] if word == "COPY"]
    assert any(a.split()[0] == "requirements/prod.lock" for a in copied)


def test_no_editable_install_and_the_project_adds_no_dependency():
    pip_runs = [args for word, args in STEPS if word == "RUN" and "pip install" in args]
    assert all(not re.search(r"(^|\s)(-e|--editable)(\s|$)", a) for a in pip_runs), pip_runs
    project = [a for a in pip_runs[1:] if re.search(r"pip install [^&]*\s\.(\s|$)", a)]
    assert project and all("--no-deps" in a for a in project), pip_runs


def test_runs_as_the_non_root_user_and_starts_the_code_server_through_the_rollout_step():
    users = [args for word, args in STEPS if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    entry = [args for word, args in STEPS if word == "ENTRYPOINT"]
    assert entry == ['["sync-pipelines-entrypoint"]']
    assert any(word == "COPY" and args.split()[0] == "deploy/entrypoint.sh" for word, args in STEPS)
    cmd = [args for word, args in STEPS if word == "CMD"][-1]
    assert '"dagster", "code-server", "start"' in cmd


def test_lock_files_pin_the_dagster_family_and_the_image_extras():
    prod = (ROOT / "requirements" / "prod.lock").read_text()
    dev = (ROOT / "requirements" / "dev.lock").read_text()
    for pin in ("dagster==1.13.27", "dagster-webserver==1.13.27", "dagster-postgres==0.29.27"):
        assert re.search(rf"^{re.escape(pin)} ", prod, re.M), pin
        assert re.search(rf"^{re.escape(pin)} ", dev, re.M), pin
    for pin in ("dagster-k8s==0.29.27", "dagster-aws==0.29.27", "dagster-gcp==0.29.27"):
        assert re.search(rf"^{re.escape(pin)} ", prod, re.M), pin
    # dev.lock is compiled under prod.lock's constraints: shared packages share versions.
    pins = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)", re.M)
    prod_pins, dev_pins = dict(pins.findall(prod)), dict(pins.findall(dev))
    assert {k: v for k, v in dev_pins.items() if prod_pins.get(k, v) != v} == {}
    assert "jsonschema" in dev_pins and "pytest" in dev_pins
