"""The generated script's command line: --local (progress, failures, --cache), --host
(against tests/fake_kfp_server.py, which stands in for a cluster), and reading a local
run back with kale_nbconvert.local_runs."""

from __future__ import annotations

import json
import re
import socket

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from fake_kfp_server import FakeKFPServer
from helpers import make_notebook, run_script, write_script
from kale_nbconvert.local_runs import list_runs, load_run

pytestmark = pytest.mark.slow


def _diamond(c_code="double = [i * scale for i in items]\nprint('ran c')", metadata=None):
    """a -> (b, c) -> d; ``count`` is read by a, ``scale`` only by c."""
    return make_notebook(
        [
            ("count = 3\nscale = 2", ["pipeline-parameters"]),
            ("items = list(range(count))\nprint('ran a')", ["step:a"]),
            ("import logging\ntotal = sum(items)\nprint('ran b')\nlogging.warning('b warns')",
             ["step:b", "prev:a"]),
            (c_code, ["step:c", "prev:a"]),
            ("result = total + len(double)\nprint('ran d', result)", ["step:d", "prev:b", "prev:c"]),
        ],
        metadata=metadata,
    )


def _env(tmp_path, **extra):
    # kfp.Client reads ~/.config/kfp/context.json: keep the user's out of the tests.
    return {"HOME": str(tmp_path), **extra}


def _statuses(run):
    return {name: step.status for name, step in run.steps.items()}


def _executed(result):
    return sorted(line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ") and "| ran " in line)


# -- --help ---------------------------------------------------------------------------


def test_help_explains_every_way_to_run(tmp_path):
    script = write_script(_diamond(), tmp_path, "diamond.ipynb")
    result = run_script(script, "--help")
    assert result.returncode == 0
    for text in ("--local", "--cache", "--host", "--experiment", "--run-name", "--namespace",
                 "--param", "count (int, default 3)", "KF_PIPELINES_TOKEN", "--cookies",
                 "--sa-token-path", "kale-local-runs", "load_run"):
        assert text in result.stdout, text
    assert "./kale-local-runs/" not in result.stdout  # they go beside the script
    assert "kale-local-runs/ beside diamond.py" in result.stdout


# -- --local ------------------------------------------------------------------------


def test_local_run_prints_a_line_per_step_and_its_outputs_load_back(tmp_path):
    script = write_script(_diamond(), tmp_path, "diamond.ipynb")
    result = run_script(script, "--local", "--param", "count=4")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "executor_input" not in out and "Looking for component" not in out and "\x1b[" not in out
    progress = [line for line in out.splitlines() if line.startswith("[")]
    assert [line.split()[1] for line in progress][0] == "a" and len(progress) == 4
    assert all(re.search(r"\] \w+ +succeeded +\d+\.\d\d s", line) for line in progress), progress
    assert "items (list, " in progress[0] and " B)" in progress[0]
    assert "  a | ran a" in out and "  d | ran d 10" in out  # the steps' own prints, attributed
    assert "b warns" in out  # and their logging, which kfp's executor formats like its own
    assert "kale: all 4 steps succeeded" in out

    runs = list_runs(tmp_path / "kale-local-runs")
    assert len(runs) == 1 and runs[0].parent == tmp_path / "kale-local-runs"
    run = load_run(tmp_path / "kale-local-runs")
    assert run.status == "succeeded" and run.parameters == {"count": 4, "scale": 2}
    assert run.outputs("a") == {"items": [0, 1, 2, 3]}
    assert run.output("c", "double") == [0, 2, 4, 6]
    assert run.inputs("d") == {"total": 6, "double": [0, 2, 4, 6]}
    assert run.namespace("c") == {"items": [0, 1, 2, 3], "scale": 2}
    with pytest.raises(KeyError, match="handed on no 'nope'"):
        run.output("a", "nope")


def test_a_failing_step_names_its_cell_and_line_and_the_steps_not_run(tmp_path):
    nb = make_notebook(
        [
            ("x = 1", ["step:first"]),
            ("y = x + 1\nz = y / 0", ["step:second", "prev:first"]),
            ("print(z)", ["step:third", "prev:second"]),
            ("w = 5", ["step:fourth", "prev:third"]),
        ]
    )
    script = write_script(nb, tmp_path, "broken.ipynb")
    result = run_script(script, "--local")
    assert result.returncode == 1
    summary = result.stderr
    assert ("kale: step 'second' failed in broken.ipynb cell 2, step second, line 2: "
            "ZeroDivisionError: division by zero") in summary
    assert "kale: not run: third, fourth" in summary
    assert "(1 of 4 steps succeeded)" in summary
    assert "ERROR" not in summary and "Traceback" not in summary  # the traceback is the step's
    assert "  second | ZeroDivisionError: division by zero" in result.stdout
    run = load_run(tmp_path / "kale-local-runs")
    assert _statuses(run) == {"first": "succeeded", "second": "failed",
                              "third": "not run", "fourth": "not run"}
    assert run.inputs("second") == {"x": 1}  # debug the failing step with what it got
    with pytest.raises(LookupError, match="failed"):
        run.outputs("second")


def test_cache_reruns_only_the_changed_step_and_its_descendants(tmp_path):
    script = write_script(_diamond(), tmp_path, "diamond.ipynb")
    runs_dir = tmp_path / "kale-local-runs"

    def run(*args):
        result = run_script(script, "--local", "--cache", *args)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result, load_run(runs_dir)

    first, _ = run()
    assert _executed(first) == ["a", "b", "c", "d"]
    again, loaded = run()
    assert _executed(again) == []  # nothing changed: nothing runs
    assert set(_statuses(loaded).values()) == {"cached"}
    assert loaded.outputs("d") == {} and loaded.inputs("d") == {"total": 3, "double": [0, 2, 4]}

    # Edit one cell of step c and convert again: c and its descendant d re-run.
    write_script(_diamond("double = [i * scale + 1 for i in items]\nprint('ran c')"), tmp_path,
                 "diamond.ipynb")
    edited, loaded = run()
    assert _executed(edited) == ["c", "d"]
    assert _statuses(loaded) == {"a": "cached", "b": "cached", "c": "succeeded", "d": "succeeded"}
    assert loaded.output("c", "double") == [1, 3, 5]  # cached a's output, fresh c

    # A parameter only c reads: c and d again; one that a reads: everything.
    assert _executed(run("--param", "scale=3")[0]) == ["c", "d"]
    assert _executed(run("--param", "scale=3", "--param", "count=2")[0]) == ["a", "b", "c", "d"]
    assert _executed(run("--param", "scale=3", "--param", "count=2")[0]) == []


def test_usage_errors_are_refused_before_anything_runs(tmp_path):
    script = write_script(_diamond(), tmp_path, "diamond.ipynb")
    for args, message in [
        (("--local", "--param", "colour=red"), "no such pipeline parameter 'colour'"),
        (("--local", "--param", "count=three"), "not a valid int"),
        (("--host", "http://127.0.0.1:9", "--param", "count"), "write it as NAME=VALUE"),
        (("--cache",), "--cache applies to --local runs"),
        (("--local", "--host", "http://127.0.0.1:9"), "exclude each other"),
    ]:
        result = run_script(script, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message.replace("'colour'", "") in result.stderr.replace("'colour'", ""), result.stderr
    assert not (tmp_path / "kale-local-runs").exists()


# -- --host (tests/fake_kfp_server.py stands in for a cluster) ----------------------------


def _uploaded_spec(yaml_text):
    documents = list(yaml.safe_load_all(yaml_text))
    return json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec())


def test_host_uploads_the_pipeline_then_a_new_version_and_runs_it(tmp_path):
    script = write_script(_diamond(metadata={"pipeline_name": "diamond-pipe",
                                             "experiment_name": "nb-experiment"}),
                          tmp_path, "diamond.ipynb")
    with FakeKFPServer() as server:
        result = run_script(script, "--host", server.url, "--param", "count=5",
                            "--run-name", "first try", env=_env(tmp_path))
        assert result.returncode == 0, result.stderr
        (pipeline,) = server.pipelines.values()
        assert pipeline["display_name"] == "diamond-pipe"
        (version,) = server.versions[pipeline["pipeline_id"]]
        spec = _uploaded_spec(version["yaml"])
        assert spec.pipeline_info.name == "diamond-pipe"
        assert set(spec.root.dag.tasks) == {"a", "b", "c", "d"}
        (run,) = server.runs.values()
        assert run["pipeline_version_reference"] == {
            "pipeline_id": pipeline["pipeline_id"],
            "pipeline_version_id": version["pipeline_version_id"],
        }
        assert run["runtime_config"]["parameters"] == {"count": 5}
        assert run["display_name"] == "first try"
        (experiment,) = server.experiments.values()
        assert experiment["display_name"] == "nb-experiment"  # from the notebook metadata
        assert run["experiment_id"] == experiment["experiment_id"]
        assert f"{server.url}/#/runs/details/{run['run_id']}" in result.stdout

        again = run_script(script, "--host", server.url, "--experiment", "other",
                           env=_env(tmp_path))
        assert again.returncode == 0, again.stderr
        versions = server.versions[pipeline["pipeline_id"]]
        assert len(server.pipelines) == 1 and len(versions) == 2
        latest = list(server.runs.values())[-1]
        assert latest["pipeline_version_reference"]["pipeline_version_id"] == versions[1]["pipeline_version_id"]
        assert server.experiments[latest["experiment_id"]]["display_name"] == "other"
        assert "new version of 'diamond-pipe'" in again.stdout
    assert (tmp_path / "diamond.yaml").exists()  # what was uploaded stays next to the script


def test_bare_host_uses_the_notebooks_kfp_host_and_namespace_reaches_the_experiment(tmp_path):
    with FakeKFPServer() as server:
        script = write_script(_diamond(metadata={"kfp_host": server.url}), tmp_path, "d.ipynb")
        text = script.read_text()
        assert f"KFP_HOST = {server.url!r}" in text and "EXPERIMENT_NAME = ''" in text
        result = run_script(script, "--host", "--namespace", "team-a", env=_env(tmp_path))
        assert result.returncode == 0, result.stderr
        (experiment,) = server.experiments.values()
        assert experiment == {**experiment, "display_name": "Default", "namespace": "team-a"}
        assert "healthz" not in " ".join(server.paths())  # a namespace skips kfp's probe


@pytest.mark.parametrize(
    "how",
    ["flag", "environment"],
)
def test_token_authentication_from_flag_or_environment(tmp_path, how):
    script = write_script(_diamond(), tmp_path, "diamond.ipynb")
    with FakeKFPServer(token="s3cret") as server:
        refused = run_script(script, "--host", server.url, env=_env(tmp_path))
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines() == [
            f"kale: {server.url} refused the request (HTTP 401 Unauthorized): authenticate "
            "with --token, --cookies or --sa-token-path (see --help)"
        ]
        args = ("--token", "s3cret") if how == "flag" else ()
        extra = {"KF_PIPELINES_TOKEN": "s3cret"} if how == "environment" else {}
        result = run_script(script, "--host", server.url, *args, env=_env(tmp_path, **extra))
        assert result.returncode == 0, result.stderr
        assert server.requests[-1].headers["authorization"] == "Bearer s3cret"
        assert len(server.runs) == 1


def test_cookie_authentication(tmp_path):
    script = write_script(_diamond(), tmp_path, "diamond.ipynb")
    with FakeKFPServer(cookie="authservice_session=abc") as server:
        result = run_script(script, "--host", server.url, "--cookies", "authservice_session=abc",
                            env=_env(tmp_path))
        assert result.returncode == 0, result.stderr
        assert len(server.runs) == 1


def test_an_unreachable_host_gives_one_clear_line(tmp_path):
    script = write_script(_diamond(), tmp_path, "diamond.ipynb")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_script(script, "--host", f"http://127.0.0.1:{port}", env=_env(tmp_path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"kale: cannot reach Kubeflow Pipelines at http://127.0.0.1:{port}: ")
    assert "Connection refused" in lines[0] and "urllib3" not in lines[0]


def test_a_refusing_host_gives_one_clear_line(tmp_path):
    script = write_script(_diamond(), tmp_path, "diamond.ipynb")
    with FakeKFPServer(status=403) as server:
        result = run_script(script, "--host", server.url, env=_env(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"kale: {server.url} refused the request (HTTP 403 Forbidden): authenticate with "
        "--token, --cookies or --sa-token-path (see --help)"
    ]


def test_manifest_is_json_with_the_documented_keys(tmp_path):
    script = write_script(_diamond(), tmp_path, "diamond.ipynb")
    assert run_script(script, "--local").returncode == 0
    (folder,) = list_runs(tmp_path / "kale-local-runs")
    manifest = json.loads((folder / "kale-run.json").read_text())
    assert manifest["format"] == "kale-local-run/1"
    assert set(manifest) >= {"pipeline", "script", "started", "duration_s", "status", "cache",
                             "parameters", "steps"}
    assert set(manifest["steps"]["c"]) >= {"status", "duration_s", "outputs", "inputs",
                                           "parameters", "metrics"}
    assert manifest["steps"]["c"]["inputs"]["items"]["producer"] == "a"
