"""The Dagster UI in headless Chromium, the way an operator uses it, against the sandbox.

After the demo materialized everything (package fixture), a code server, the webserver and
the daemon serve the sandbox; the browser opens the asset graph and sees every source's
group, opens a partitioned asset's partitions, launches one partition from the
"Materialize…" dialog and waits for the run to succeed. Screenshots go to test-artifacts/;
the asset graph is copied to docs/asset-graph.png for the README when that file is missing
or ``SYNC_UPDATE_SCREENSHOTS=1``.

Needs Playwright (in the project's ``test``/``dev`` extras) and Debian's chromium (``apt-get install
chromium``; .ci/run installs it); without either the test is skipped and says which.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest
import yaml

from sync_pipelines.definitions import defs

from .dagster_services import ROOT, Services, clean_env, free_port, graphql, wait_until_loaded

RUN = """
query($id: ID!) { runOrError(runId: $id) { __typename
  ... on Run { status tags { key value } assetSelection { path } } } }
"""

CHROMIUM = Path(os.environ.get("SYNC_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOT_FOR_README = ROOT / "docs" / "asset-graph.png"
# A sync asset, and the names of its external source (tiny/api) and of a table it writes
# (tiny/ordens_servico) as the lineage view labels them.
LINEAGE_ASSET = "tiny/service_orders_history"
LINEAGE_NEIGHBOURS = ("api", "ordens_servico")
SCREENSHOT_OF_LINEAGE = ROOT / "docs" / "lineage.png"
# A partitioned asset and one of the partitions the sandbox has data for.
PARTITIONED_ASSET = "tiny/service_orders_history"
PARTITION = "2020-03-01"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # the page may only reach the local webserver (no fonts/telemetry from the internet)
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]


def _missing_tools() -> str:
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed: pip install -e '.[test]' (or '.[dev]')"
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM}: apt-get install -y chromium (.ci/run does)"
    return ""


# Decided before any fixture runs, so a machine without the tools does not start the demo.
pytestmark = pytest.mark.skipif(bool(_missing_tools()), reason=_missing_tools() or "-")


@pytest.fixture
def ui(demo_sandbox, tmp_path):
    """URL of the webserver serving the sandbox, with the daemon running."""
    from playwright.sync_api import sync_playwright

    grpc_port, web_port = free_port(), free_port()
    workspace = yaml.safe_load((ROOT / "deploy" / "workspace.yaml").read_text())
    workspace["load_from"][0]["grpc_server"].update(host="127.0.0.1", port=grpc_port)
    workspace_file = tmp_path / "workspace.yaml"
    workspace_file.write_text(yaml.safe_dump(workspace))
    services = Services(tmp_path, clean_env(demo_sandbox.env))
    try:
        services.code_server(grpc_port)
        url = services.webserver(workspace_file, web_port)
        services.daemon(workspace_file)
        wait_until_loaded(services, url)
        yield sync_playwright, url, services
    finally:
        services.stop()


def _groups() -> list[str]:
    graph = defs.resolve_asset_graph()
    return sorted({graph.get(k).group_name for k in graph.materializable_asset_keys})


def test_operator_launches_one_partition_from_the_ui_and_sees_it_succeed(ui):
    sync_playwright, url, services = ui
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "failure.png").unlink(missing_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        # The "Join the Dagster community" popup would cover the buttons on localhost.
        page.add_init_script("window.localStorage.setItem('communityNux', '\"1\"')")
        page.set_default_timeout(20_000)
        try:
            # 1. The lineage graph shows every source's group.
            page.goto(f"{url}/asset-groups")
            for group in _groups():
                page.get_by_text(group, exact=True).first.wait_for()
            page.wait_for_timeout(1000)  # let the graph settle before the picture
            page.screenshot(path=str(ARTIFACTS / "asset-graph.png"))

            # 1b. A sync's lineage: its external source upstream, the table it writes below.
            page.goto(f"{url}/assets/{LINEAGE_ASSET}?view=lineage")
            for node in LINEAGE_NEIGHBOURS:
                page.get_by_text(node, exact=True).first.wait_for()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(ARTIFACTS / "lineage.png"))

            # 2. A partitioned asset and its partitions.
            page.goto(f"{url}/assets/{PARTITIONED_ASSET}?view=partitions")
            page.get_by_text("Partitions Selected").first.wait_for()
            page.get_by_placeholder("Filter by name").fill(PARTITION[:7])
            page.get_by_text(PARTITION, exact=True).first.click()
            # the partition's own page: its latest materialization and metadata
            page.get_by_text("Latest materialization").first.wait_for()
            page.get_by_text("api_calls").first.wait_for()
            page.screenshot(path=str(ARTIFACTS / "partitions.png"))

            # 3. Materialize one partition from the dialog.
            page.get_by_role("button", name="Materialize…").first.click()
            dialog = page.get_by_role("dialog")
            dialog.wait_for()
            show_all = dialog.get_by_text("Show all partitions")
            if show_all.count():
                show_all.first.click()
            box = dialog.get_by_role("textbox").first
            box.fill(PARTITION)
            box.press("Enter")
            page.screenshot(path=str(ARTIFACTS / "launch-dialog.png"))
            dialog.get_by_role("button", name="Launch 1 run").click()

            # 4. The run, queued by the webserver and started by the daemon, succeeds.
            page.get_by_role("link", name="View", exact=True).first.click()
            page.wait_for_url("**/runs/**")
            page.get_by_text("Success", exact=True).first.wait_for(timeout=90_000)
            page.screenshot(path=str(ARTIFACTS / "run-success.png"))
            run_id = page.url.split("/runs/")[1].split("?")[0].split("/")[0]
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "failure.png"))
            raise AssertionError(
                f"UI flow failed (see test-artifacts/)\n{services.tail()}"
            ) from None
        finally:
            browser.close()
    # The run the UI showed is the one just launched, for that partition, and it succeeded.
    run = graphql(url, RUN, {"id": run_id})["runOrError"]
    assert run["status"] == "SUCCESS", run
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["dagster/partition"] == PARTITION
    assert [k["path"] for k in run["assetSelection"]] == [PARTITIONED_ASSET.split("/")]
    # The README's picture is refreshed on request only, so `make test` leaves git clean.
    for shot, picture in (
        ("asset-graph.png", SCREENSHOT_FOR_README),
        ("lineage.png", SCREENSHOT_OF_LINEAGE),
    ):
        if not picture.exists() or os.environ.get("SYNC_UPDATE_SCREENSHOTS") == "1":
            picture.parent.mkdir(exist_ok=True)
            shutil.copyfile(ARTIFACTS / shot, picture)
