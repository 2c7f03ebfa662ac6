"""JupyterLab's File > Save and Export Notebook As > Kale, through a real jupyter server.

JupyterLab lists every exporter from ``/api/nbconvert`` and downloads
``/nbconvert/<format>/<path>?download=true``; both are served by jupyter_server here,
on 127.0.0.1, with the notebook on disk.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import nbformat
import pytest

from helpers import make_notebook

pytestmark = pytest.mark.slow
TOKEN = "kale-test-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
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
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", "--allow-root",
            f"--port={port}", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
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
                pytest.fail(process.stderr.read().decode())
            time.sleep(0.3)
    yield base
    process.terminate()
    process.wait(timeout=20)


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
    assert "def answer(" in script and "x_in: Input[Artifact]" in script


def test_a_bad_notebook_reports_the_cell(server):
    with pytest.raises(urllib.error.HTTPError) as error:
        _get(f"{server}/nbconvert/kale/bad.ipynb?download=true")
    assert error.value.code == 500
    assert "never defined" in error.value.read().decode()
