"""JupyterLab's File > Save and Export Notebook As > Kale, through a real jupyter server.

JupyterLab lists every exporter from ``/api/nbconvert`` and downloads
``/nbconvert/<format>/<path>?download=true``; both are served by jupyter_server here,
on 127.0.0.1, with the notebook on disk. The server runs as a user's would: the
kale_nbconvert extension is enabled only by the file the install put in
``etc/jupyter/jupyter_server_config.d``, and exporter options come from a
``jupyter_nbconvert_config.py`` in the Jupyter config folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from helpers import make_notebook
from kale_nbconvert.errors import NotebookError
from kale_nbconvert.jupyter_server_extension import TITLE, error_page

pytestmark = pytest.mark.slow
TOKEN = "kale-test-token"
REPO = Path(__file__).resolve().parent.parent
NBCONVERT_CONFIG = """\
c.NameAnalysisPreprocessor.explain = True
c.NameAnalysisPreprocessor.read_only_functions = ["tidy"]
c.MarshalInjectionPreprocessor.base_image = "python:from-nbconvert-config"
"""
SERVER_OPTION = "--MarshalInjectionPreprocessor.base_image=python:from-the-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server_log(tmp_path_factory) -> Path:
    """What the module's server writes to stderr (its log)."""
    return tmp_path_factory.mktemp("server-log") / "server.log"


@pytest.fixture(scope="module")
def server(tmp_path_factory, server_log):
    root = tmp_path_factory.mktemp("server")
    nb = make_notebook(
        [
            ("n = 2", ["pipeline-parameters"]),
            ("x = n * 21", ["step:answer"]),
            ("print(x)", ["step:show", "prev:answer"]),
        ]
    )
    nbformat.write(nb, root / "answer.ipynb")
    bad = make_notebook([("print(missing)", ["step:only"])])
    nbformat.write(bad, root / "bad.ipynb")
    (root / "sub").mkdir()
    no_such_step = make_notebook([("x = 1", ["step:first"]), ("print(x)", ["step:second", "prev:frist"])])
    nbformat.write(no_such_step, root / "sub" / "no_such_step.ipynb")
    # converts only if the config's read_only_functions reaches the exporter
    tidy = make_notebook(
        [
            ("def tidy(frame):\n    frame.sort()", ["functions"]),
            ("df = [2, 1]", ["step:load"]),
            ("tidy(df)", ["step:show", "prev:load"]),
            ("total = sum(df)", ["step:add", "prev:load"]),
        ]
    )
    nbformat.write(tidy, root / "tidy.ipynb")
    warned = make_notebook([("import os", []), ("x = 1", ["step:first"])])
    nbformat.write(warned, root / "warned.ipynb")
    config = tmp_path_factory.mktemp("jupyter-config")
    (config / "jupyter_nbconvert_config.py").write_text(NBCONVERT_CONFIG)
    log = server_log
    port = _free_port()
    log_file = log.open("wb")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", "--allow-root",
            f"--port={port}", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
            SERVER_OPTION,
        ],
        stdout=subprocess.DEVNULL,
        stderr=log_file,
        env={**os.environ, "JUPYTER_CONFIG_DIR": str(config)},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if time.monotonic() > deadline:
            pytest.fail("jupyter server did not start")
        try:
            urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail(log.read_text())
            time.sleep(0.3)
    yield base
    process.terminate()
    process.wait(timeout=20)
    log_file.close()


def _get(url: str):
    request = urllib.request.Request(url, headers={"Authorization": f"token {TOKEN}"})
    return urllib.request.urlopen(request, timeout=60)


def test_the_export_menu_lists_kale(server):
    formats = json.load(_get(f"{server}/api/nbconvert"))
    assert formats["kale"]["output_mimetype"] == "text/x-python"


def test_the_download_is_the_pipeline_script(server):
    response = _get(f"{server}/nbconvert/kale/answer.ipynb?download=true")
    assert "answer.py" in response.headers["Content-Disposition"]
    script = response.read().decode()
    compile(script, "answer.py", "exec")
    assert re.search(r"^def answer\w*\(", script, re.M) and "x_in: Input[Artifact]" in script


def _export_error(url: str) -> tuple[int, str, str]:
    """The status, content type and page of an export that fails."""
    with pytest.raises(urllib.error.HTTPError) as error:
        _get(url)
    return error.value.code, error.value.headers.get("Content-Type", ""), error.value.read().decode()


def test_a_bad_notebook_reports_the_cell(server):
    status, content_type, page = _export_error(f"{server}/nbconvert/kale/bad.ipynb?download=true")
    assert status == 422
    assert content_type.startswith("text/html")
    assert "never defined" in page
    assert "Internal Server Error" not in page


def test_the_error_page_names_the_notebook_cell_step_and_fix(server, server_log):
    """What JupyterLab's Export > Kale tab shows for a conversion error: our page, a 4xx,
    not the server's "500 : Internal Server Error"."""
    status, _, page = _export_error(f"{server}/nbconvert/kale/sub/no_such_step.ipynb?download=true")
    assert status == 422
    assert f"<title>{TITLE}</title>" in page
    assert "<th>Notebook</th><td>sub/no_such_step.ipynb</td>" in page
    assert "<th>Cell</th><td>cell 2</td>" in page
    assert "<th>Step</th><td>second</td>" in page
    assert "<th>Problem</th><td>&#x27;prev:frist&#x27; names no step</td>" in page
    assert re.search(r"<th>Fix</th><td>[^<]*&#x27;prev:first&#x27;", page)  # the step it meant
    assert "jupyter nbconvert --to kale sub/no_such_step.ipynb" in page  # how to see more
    # the server log says it once, on one line, without a traceback or a "500"
    log = server_log.read_text()
    assert "no_such_step.ipynb, cell 2, step second: 'prev:frist' names no step" in log
    assert "Traceback" not in log and "500 GET /nbconvert/kale" not in log


def _post(url: str, notebook, name: str):
    """jupyter_server's nbconvert POST: the notebook in the body, as JSON, not on disk."""
    body = json.dumps({"content": notebook, "name": name}).encode("utf-8")
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"},
    )
    return urllib.request.urlopen(request, timeout=60)


def test_a_posted_notebook_converts_to_the_pipeline_script(server):
    """POST /nbconvert/kale answers what GET answers for the same notebook on disk."""
    nb = make_notebook(
        [
            ("n = 2", ["pipeline-parameters"]),
            ("x = n * 21", ["step:answer"]),
            ("print(x)", ["step:show", "prev:answer"]),
        ]
    )
    response = _post(f"{server}/nbconvert/kale", nb, "posted.ipynb")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/x-python")
    script = response.read().decode()
    compile(script, "posted.py", "exec")
    assert "generated from posted.ipynb" in script
    assert re.search(r"^def answer\w*\(", script, re.M) and "x_in: Input[Artifact]" in script
    # the config reaches the POST's exporter too: the server's option wins over the file
    assert "BASE_IMAGE = 'python:from-the-server'" in script


def test_a_posted_notebook_with_a_kale_error_gets_the_error_page(server, server_log):
    """The same 422 page as a GET: the notebook (by the name in the body), cell, step,
    problem and fix; the server log says it once, on one line."""
    nb = make_notebook([("x = 1", ["step:first"]), ("print(x)", ["step:second", "prev:frist"])])
    with pytest.raises(urllib.error.HTTPError) as error:
        _post(f"{server}/nbconvert/kale", nb, "posted_bad.ipynb")
    status, content_type, page = error.value.code, error.value.headers.get("Content-Type", ""), error.value.read().decode()
    assert status == 422
    assert content_type.startswith("text/html")
    assert f"<title>{TITLE}</title>" in page
    assert "<th>Notebook</th><td>posted_bad.ipynb</td>" in page
    assert "<th>Cell</th><td>cell 2</td>" in page
    assert "<th>Step</th><td>second</td>" in page
    assert "<th>Problem</th><td>&#x27;prev:frist&#x27; names no step</td>" in page
    assert re.search(r"<th>Fix</th><td>[^<]*&#x27;prev:first&#x27;", page)
    assert "Internal Server Error" not in page
    log = server_log.read_text()
    assert log.count("posted_bad.ipynb, cell 2, step second: 'prev:frist' names no step") == 1
    assert "500 POST /nbconvert/kale" not in log and "405 POST /nbconvert/kale" not in log
    assert "Uncaught exception" not in log


def test_other_formats_are_left_to_the_server(server):
    response = _get(f"{server}/nbconvert/script/sub/no_such_step.ipynb?download=true")
    assert response.status == 200 and "print(x)" in response.read().decode()
    status, _, page = _export_error(f"{server}/nbconvert/nosuchformat/answer.ipynb")
    assert status != 422 and TITLE not in page  # the server's own error page


def test_the_download_carries_the_warnings(server):
    """From JupyterLab the server log is out of sight: the warnings are in the script."""
    script = _get(f"{server}/nbconvert/kale/warned.ipynb?download=true").read().decode()
    docstring = compile(script, "warned.py", "exec").co_consts[0]
    assert "Conversion warnings" in docstring
    assert "code cells before the first Kale tag are not part of the pipeline" in " ".join(docstring.split())


def test_jupyter_nbconvert_config_applies_in_the_server(server, server_log):
    """Options in jupyter_nbconvert_config.py reach the exporter behind Export > Kale,
    as they reach `jupyter nbconvert`: without read_only_functions=["tidy"] this
    notebook is refused (tidy sorts its argument), with it it converts."""
    script = _get(f"{server}/nbconvert/kale/tidy.ipynb?download=true").read().decode()
    docstring = compile(script, "tidy.py", "exec").co_consts[0]
    assert re.search(r"^ +add +\| load ", docstring, re.M), docstring  # the data-flow table
    assert "Data flow of tidy.ipynb" in server_log.read_text()  # explain = True
    # an option the server itself is given wins over the file
    assert "BASE_IMAGE = 'python:from-the-server'" in script


def test_nbconvert_config_is_merged_as_jupyter_nbconvert_merges_it(tmp_path, caplog):
    """Folders listed first win; in one folder .json wins over .py; a broken file is
    reported and skipped, not an error of every export."""
    import logging

    from kale_nbconvert.jupyter_server_extension import nbconvert_config

    user, system, broken = tmp_path / "user", tmp_path / "system", tmp_path / "broken"
    for folder in (user, system, broken):
        folder.mkdir()
    (user / "jupyter_nbconvert_config.py").write_text("c.TagMergePreprocessor.pipeline_name = 'py'\n")
    (user / "jupyter_nbconvert_config.json").write_text('{"TagMergePreprocessor": {"pipeline_name": "json"}}')
    (system / "jupyter_nbconvert_config.py").write_text(
        "c.TagMergePreprocessor.pipeline_name = 'system'\nc.TagMergePreprocessor.strict_untagged = True\n"
    )
    (broken / "jupyter_nbconvert_config.py").write_text("c.X = (\n")
    log = logging.getLogger("kale-test")
    config = nbconvert_config([str(user), str(broken), str(system)], log)
    assert config.TagMergePreprocessor.pipeline_name == "json"
    assert config.TagMergePreprocessor.strict_untagged is True
    assert "skipping" in caplog.text and str(broken) in caplog.text


def test_the_error_page_escapes_the_notebook_text():
    error = NotebookError(
        "unknown tag '<script>alert(1)</script>'",
        notebook="a&b.ipynb",
        cell=3,
        step="x</td>",
        fix='use "step:<name>"',
    )
    page = error_page(error, "dir/<a&b>.ipynb")
    assert "<script>" not in page
    assert "<th>Step</th><td>x&lt;/td&gt;</td>" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "dir/&lt;a&amp;b&gt;.ipynb" in page
    assert "use &quot;step:&lt;name&gt;&quot;" in page


def test_both_installs_enable_the_server_extension(tmp_path):
    """`pip install .` (a wheel) and `pip install -e .` (an editable wheel, which
    setuptools builds without data files; tools/kale_build_backend.py adds them) both
    install etc/jupyter/jupyter_server_config.d/kale_nbconvert.json, which enables the
    extension."""
    from jupyter_server.extension.config import ExtensionConfigManager

    project = tmp_path / "project"  # a copy: building writes egg-info and build/ folders
    project.mkdir()
    for name in ("pyproject.toml", "setup.cfg", "README.md", "MANIFEST.in"):
        shutil.copy(REPO / name, project / name)
    for name in ("tools", "kale_nbconvert", "templates", "jupyter-config"):
        shutil.copytree(REPO / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    for hook in ("build_wheel", "build_editable"):
        wheels = tmp_path / hook
        wheels.mkdir()
        build = subprocess.run(
            [sys.executable, "-c", f"import sys; sys.path.insert(0, 'tools'); import kale_build_backend as b; print(b.{hook}(sys.argv[1]))", str(wheels)],
            cwd=project,
            capture_output=True,
            text=True,
        )
        assert build.returncode == 0, build.stderr
        wheel = wheels / build.stdout.split()[-1]
        prefix = tmp_path / f"prefix-{hook}"
        install = subprocess.run(
            # --ignore-installed: else pip, seeing this environment's kale_nbconvert,
            # would uninstall it while installing into the other prefix
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--ignore-installed", "--prefix", str(prefix), str(wheel)],
            capture_output=True,
            text=True,
        )
        assert install.returncode == 0, install.stderr
        config_dir = prefix / "etc" / "jupyter"
        enabling = config_dir / "jupyter_server_config.d" / "kale_nbconvert.json"
        assert enabling.exists(), f"{hook}: {enabling} not installed"
        manager = ExtensionConfigManager(read_config_path=[str(config_dir)])
        assert manager.get_jpserver_extensions() == {"kale_nbconvert": True}, hook
    # an sdist carries the backend and the enabling file, so pip can build it anywhere
    sdist = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, 'tools'); import kale_build_backend as b; print(b.build_sdist(sys.argv[1]))", str(tmp_path)],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert sdist.returncode == 0, sdist.stderr
    with tarfile.open(tmp_path / sdist.stdout.split()[-1]) as archive:
        names = {name.split("/", 1)[-1] for name in archive.getnames()}
    assert {"tools/kale_build_backend.py", "jupyter-config/jupyter_server_config.d/kale_nbconvert.json"} <= names
