"""JupyterLab in a real browser: File > Save and Export Notebook As > Kale, as a user does it.

A JupyterLab server on 127.0.0.1 (with a token) serves a folder holding the candies
example and a broken notebook; headless Chromium (Debian's ``chromium``, driven by
Playwright's Python package, which downloads no browser of its own) opens each one and
uses the menu. The example's download must be the pipeline script and compile to YAML;
the broken notebook must open our page (its cell and fix), not "500 : Internal Server
Error". Every wait is on a selector or an event, never a sleep.

Screenshots go to ``<tmp_path>/artifacts`` and, if ``KALE_TEST_ARTIFACTS`` is set, are
copied there (with the server's log), also when the test fails. Needs ``jupyterlab``,
``playwright`` (test extras) and ``/usr/bin/chromium`` (``apt-get install chromium``; CI
installs it): without them the test skips, except in CI (``CI`` set), where it fails.

Exhaustive profile only (CI runs it; 20 s of a browser and a JupyterLab server): the
default profile checks the same server extension, menu entry, download and error page
over HTTP against a real server in tests/test_jupyter_server.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # the test then skips (or, in CI, fails) with the reason
    PlaywrightTimeout = TimeoutError

from helpers import make_notebook, yaml_documents
from kale_nbconvert.jupyter_server_extension import TITLE

pytestmark = [pytest.mark.slow, pytest.mark.exhaustive]

REPO = Path(__file__).resolve().parent.parent
TOKEN = "kale-browser-test-token"
CHROMIUM = os.environ.get("KALE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 90_000  # a loaded 2-core machine builds JupyterLab's page slowly


def _missing() -> list[str]:
    missing = [name for name in ("playwright", "jupyterlab") if importlib.util.find_spec(name) is None]
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    return missing


@pytest.fixture
def artifacts(tmp_path):
    folder = tmp_path / "artifacts"
    folder.mkdir()
    yield folder
    keep = os.environ.get("KALE_TEST_ARTIFACTS")
    if keep:
        shutil.copytree(folder, Path(keep) / "jupyterlab_browser", dirs_exist_ok=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path, artifacts):
    missing = _missing()
    if missing:
        message = "the JupyterLab browser test needs " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run this test: .ci/run installs them)")
        pytest.skip(message)
    root = tmp_path / "notebooks"
    root.mkdir()
    shutil.copy(REPO / "examples" / "candies.ipynb", root / "candies.ipynb")
    broken = make_notebook([("x = 1", ["step:first"]), ("print(x)", ["step:second", "prev:nosuch"])])
    # as JupyterLab saves it (without a kernelspec, opening it asks which kernel)
    broken.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(broken, root / "broken.ipynb")
    home = tmp_path / "jupyter"  # this server's own config, data and runtime folders
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
    }
    port = _free_port()
    log = artifacts / "jupyterlab.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                "--allow-root", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:  # the server's readiness, not the browser's: nothing to wait on yet
                try:
                    urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        pytest.fail("JupyterLab did not start:\n" + log.read_text())
                    time.sleep(0.3)
            yield base, root
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def browser_page(tmp_path, artifacts):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh --user-data-dir
            executable_path=CHROMIUM,
            args=CHROMIUM_FLAGS,
            headless=True,
            accept_downloads=True,
            viewport={"width": 1280, "height": 800},
        )
        context.set_default_timeout(TIMEOUT_MS)
        page = context.pages[0] if context.pages else context.new_page()
        try:
            yield page
        finally:
            context.close()


@contextlib.contextmanager
def _screenshots_on_failure(context, artifacts: Path):
    """What every tab showed when a step failed (a fixture never sees the failure)."""
    try:
        yield
    except BaseException:
        for number, open_page in enumerate(context.pages):
            with contextlib.suppress(Exception):
                open_page.screenshot(path=str(artifacts / f"failure-tab{number}.png"), timeout=10_000)
        raise


def _open(page, base: str, name: str, cell_text: str) -> None:
    """Open the notebook the way JupyterLab links do, and wait until its cells show and
    JupyterLab has the export formats (it fetches them once per page load, and the
    Export submenu stays empty until they arrive)."""
    with page.expect_response(lambda response: response.url.split("?")[0].endswith("/api/nbconvert")) as formats:
        page.goto(f"{base}/lab/tree/{name}?token={TOKEN}")
    assert "kale" in formats.value.json(), "the server does not list the kale exporter"
    page.locator(".jp-NotebookPanel:visible .jp-Cell", has_text=cell_text).first.wait_for()
    page.locator(".jp-NotebookPanel-toolbar:visible").wait_for()


def _export_to_kale(page):
    """File > Save and Export Notebook As > Kale, up to the last click: returns the item."""
    page.locator(".lm-MenuBar-itemLabel", has_text="File").click()
    export = page.locator(
        '.lm-Menu-item[data-type="submenu"]',
        has=page.locator(".lm-Menu-itemLabel", has_text="Save and Export Notebook As"),
    )
    download = page.locator(".lm-Menu-item", has=page.locator(".lm-Menu-itemLabel").get_by_text("Download", exact=True))
    kale = page.locator(".lm-Menu-item", has=page.locator(".lm-Menu-itemLabel").get_by_text("Kale", exact=True))
    # The submenu opens on a hover timer; if its items were still being added, it stays
    # shut until the pointer comes back: come back a few times before giving up.
    for attempt in range(5):
        export.hover()
        try:
            kale.wait_for(timeout=TIMEOUT_MS // 5)
            return kale
        except PlaywrightTimeout:
            download.hover()
    kale.wait_for()
    return kale


def test_export_to_kale_from_jupyterlab(jupyterlab, browser_page, artifacts, tmp_path):
    base, _ = jupyterlab
    with _screenshots_on_failure(browser_page.context, artifacts):
        _export_the_example_and_a_broken_notebook(base, browser_page, artifacts, tmp_path)


def _export_the_example_and_a_broken_notebook(base, page, artifacts, tmp_path):
    # 1. The example: the download is the pipeline script, and it compiles to YAML.
    _open(page, base, "candies.ipynb", "sack")
    page.screenshot(path=str(artifacts / "1-candies-open.png"))
    kale = _export_to_kale(page)
    page.screenshot(path=str(artifacts / "2-export-menu.png"))
    with page.expect_download() as download_info:
        kale.click()
    download = download_info.value
    assert download.suggested_filename == "candies.py"
    out = tmp_path / "download"
    out.mkdir()
    script = out / "candies.py"
    download.save_as(str(script))
    assert download.failure() is None
    compiled = subprocess.run(
        [sys.executable, str(script)], cwd=out, capture_output=True, text=True, timeout=300
    )
    assert compiled.returncode == 0, compiled.stderr
    spec = yaml_documents(out / "candies.yaml")[0]
    assert spec["pipelineInfo"]["name"] == "candies"
    assert {"sack", "kid1", "share"} <= set(spec["root"]["dag"]["tasks"])

    # 2. A broken notebook: the export tab shows our page (the cell, the fix), a 4xx.
    _open(page, base, "broken.ipynb", "print(x)")
    kale = _export_to_kale(page)
    with page.context.expect_event(
        "response", lambda response: "/nbconvert/kale/broken.ipynb" in response.url
    ) as response_info, page.context.expect_page() as tab_info:
        kale.click()
    tab = tab_info.value
    assert response_info.value.status == 422
    heading = tab.locator("h1")
    heading.wait_for()
    tab.screenshot(path=str(artifacts / "3-broken-export-tab.png"), full_page=True)
    assert tab.title() == TITLE
    assert heading.inner_text() == TITLE
    text = tab.locator("body").inner_text()
    assert "Internal Server Error" not in text and "500" not in tab.title()
    assert tab.locator("tr.notebook td").inner_text() == "broken.ipynb"
    assert tab.locator("tr.cell td").inner_text() == "cell 2"
    assert tab.locator("tr.step td").inner_text() == "second"
    assert tab.locator("tr.problem td").inner_text() == "'prev:nosuch' names no step"
    assert "first" in tab.locator("tr.fix td").inner_text()  # the step it can name
    assert "jupyter nbconvert --to kale broken.ipynb" in text  # how to see more
