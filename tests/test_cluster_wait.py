"""Following a cluster run: ``--host URL --wait`` prints each step's status as it
changes and exits with the run's outcome; Ctrl-C stops following, not the run; a host
that does not answer fails in seconds. tests/fake_kfp_server.py stands in for the
cluster, its run states scripted over time."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from fake_kfp_server import FakeKFPServer
from helpers import make_notebook, run_script, write_script

pytestmark = pytest.mark.slow


def _chain():
    return make_notebook(
        [
            ("items = [1, 2]", ["step:load"]),
            ("total = sum(items)", ["step:train", "prev:load"]),
            ("print(total)", ["step:report", "prev:train"]),
        ]
    )


def _env(tmp_path):
    return {"HOME": str(tmp_path)}  # kfp.Client reads ~/.config/kfp: keep the user's out


def _wait(script, server, tmp_path, *extra):
    return run_script(script, "--host", server.url, "--wait", "--poll", "0.05", *extra,
                      env=_env(tmp_path), timeout=120)


def test_wait_follows_a_run_that_succeeds(tmp_path):
    script = write_script(_chain(), tmp_path, "chain.ipynb")
    states = [
        ("PENDING", {}),
        ("RUNNING", {"load": "RUNNING"}),
        ("RUNNING", {"load": "SUCCEEDED", "train": "RUNNING"}),
        ("RUNNING", {"load": "SUCCEEDED", "train": "SUCCEEDED", "report": "RUNNING"}),
        ("SUCCEEDED", {"load": "SUCCEEDED", "train": "SUCCEEDED", "report": "SUCCEEDED",
                       "root-driver": "SUCCEEDED"}),
    ]
    with FakeKFPServer(run_states=states) as server:
        result = _wait(script, server, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert [line.split()[1:3] for line in lines] == [
        ["load", "running"], ["load", "succeeded"], ["train", "running"],
        ["train", "succeeded"], ["report", "running"], ["report", "succeeded"],
    ]
    assert lines[-1].startswith("[3/3] report")
    assert "root-driver" not in result.stdout  # KFP's own tasks are not steps
    assert "kale: run succeeded" in result.stdout


def test_wait_names_the_failing_step_and_exits_1(tmp_path):
    script = write_script(_chain(), tmp_path, "chain.ipynb")
    states = [
        ("RUNNING", {"load": "SUCCEEDED", "train": "RUNNING"}),
        ("FAILED", {"load": "SUCCEEDED", "train": ("FAILED", "ZeroDivisionError in cell 2")}),
    ]
    with FakeKFPServer(run_states=states) as server:
        result = _wait(script, server, tmp_path)
    assert result.returncode == 1
    assert "train | ZeroDivisionError in cell 2" in result.stdout
    assert "kale: step 'train' failed" in result.stderr
    assert "#/runs/details/" in result.stderr


def test_ctrl_c_stops_following_not_the_run(tmp_path):
    script = write_script(_chain(), tmp_path, "chain.ipynb")
    with FakeKFPServer(run_states=[("RUNNING", {"load": "RUNNING"})]) as server:
        process = subprocess.Popen(
            [sys.executable, str(script), "--host", server.url, "--wait", "--poll", "0.05"],
            cwd=tmp_path, env={**os.environ, **_env(tmp_path)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 60
        while not server.run_polls and time.monotonic() < deadline:
            time.sleep(0.05)  # the fake server counts the polls: following has begun
        assert server.run_polls, "the script never polled the run"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        assert not any(r.method == "DELETE" or "terminate" in r.path or "archive" in r.path
                       for r in server.requests), server.paths()
    assert process.returncode == 130
    assert "stopped following; the run goes on" in err
    assert "load" in out


@pytest.mark.parametrize("library", ["swallows", "turns_into_an_error"])
def test_ctrl_c_in_a_request_stops_following_whatever_the_library_does_with_it(library, capsys, monkeypatch):
    """Ctrl-C lands in the middle of a request, where a library between the script and
    the socket may swallow the KeyboardInterrupt (a finalizer, a retry loop) or turn it
    into another error: following stops all the same, with the same message and code."""
    from types import SimpleNamespace

    from kale_nbconvert.embedded import cluster, local_run

    class Client:
        polls = 0

        def get_run(self, run_id):
            self.polls += 1
            assert self.polls < 50, "still polling after Ctrl-C"
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.5)  # the handler has run by now
            except KeyboardInterrupt:
                if library == "turns_into_an_error":
                    raise ConnectionError("connection aborted") from None
            return SimpleNamespace(state="RUNNING", run_details=None)

    # a script holds both modules' functions in one namespace
    monkeypatch.setattr(cluster, "_kale_print_progress", local_run._kale_print_progress, raising=False)
    before = signal.getsignal(signal.SIGINT)
    code = cluster._kale_follow_run(Client(), "run-1", ["load"], 0.01, "http://ui/run-1", "host")
    assert code == 130
    assert "stopped following; the run goes on: http://ui/run-1" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is before  # put back


def test_a_host_that_does_not_answer_fails_within_the_connect_timeout(tmp_path):
    """A listening socket whose accept queue is full drops new connections' SYNs, as
    a firewalled host does: connecting hangs until the timeout."""
    script = write_script(_chain(), tmp_path, "chain.ipynb")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(filler)
        started = time.monotonic()
        result = run_script(script, "--host", f"http://127.0.0.1:{port}", "--connect-timeout", "2",
                            env=_env(tmp_path), timeout=60)
        elapsed = time.monotonic() - started
        for filler in fillers:
            filler.close()
    assert result.returncode == 1
    assert f"cannot reach Kubeflow Pipelines at http://127.0.0.1:{port}" in result.stderr
    assert elapsed < 10, elapsed
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_wait_needs_a_cluster_run(tmp_path):
    script = write_script(_chain(), tmp_path, "chain.ipynb")
    refused = run_script(script, "--wait", env=_env(tmp_path))
    assert refused.returncode == 2 and "--wait follows a cluster run" in refused.stderr


def test_ssl_ca_cert_trusts_a_cluster_with_its_own_certificate_authority(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    script = write_script(_chain(), tmp_path, "chain.ipynb")
    with FakeKFPServer(tls=(str(cert), str(key))) as server:
        untrusted = run_script(script, "--host", server.url, env=_env(tmp_path), timeout=60)
        trusted = run_script(script, "--host", server.url, "--ssl-ca-cert", str(cert),
                             env=_env(tmp_path), timeout=60)
        runs = len(server.runs)
    assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    assert trusted.returncode == 0, trusted.stderr
    assert runs == 1
