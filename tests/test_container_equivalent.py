"""The compiled YAML computes what the notebook computes when every step starts from
nothing but what its container would have (issue 18).

On a cluster each step runs in a fresh container that holds only the image, kfp and
the step's ``packages_to_install``; a step that imports a package its list lacks, or
imports something from this package or from the notebook's folder, fails there.
``--local`` runs in this environment, where everything is installed, so it cannot see
that. Here the YAML that ``python nb.py`` writes (the file a user uploads) runs under
kfp.local's ``SubprocessRunner(use_venv=True)``: every task gets a new virtual
environment of this interpreter (the image is ``python:X.Y`` of the converting
interpreter) into which the task's own container command pip-installs its packages,
as its container would. The values it hands on, every variable each step ends with,
and the run's metrics must equal the notebook's (run with nbclient); and leaving one
package out of one step's command must fail that step, so the check can fail.
It found that pandas 3 needs pyarrow beside it to store strings as the notebook did
(``dependencies.BEHAVIOUR_EXTRAS``).

Nothing is pre-installed for these tests: pip reads PyPI (or whatever index pip is
configured with) and its own cache (``~/.cache/pip``), so the first run downloads the
wheels and later runs of the same machine reuse them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
import yaml

from equivalence import assert_same, load_snapshot, notebook_snapshots
from helpers import convert, run_script, yaml_documents
from kale_nbconvert.embedded.marshal import _kale_marshal_load
from kale_nbconvert.tags import kfp_name

pytestmark = [pytest.mark.slow, pytest.mark.exhaustive]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

RUN_COMPILED_YAML = textwrap.dedent(
    """
    import sys
    from kfp import components, local

    yaml_path, pipeline_root, workspace_root = sys.argv[1:]
    local.init(
        runner=local.SubprocessRunner(use_venv=True),
        pipeline_root=pipeline_root,
        workspace_root=workspace_root,
    )
    components.load_component_from_file(yaml_path)()
    """
)
"""Runs a compiled pipeline YAML with kfp.local, one fresh virtual environment a task."""

LEAKY_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE")
"""Variables that would let a task's interpreter import what its venv lacks."""

ANSI = re.compile(r"\x1b\[[0-9;]*m")
RUN_TIMEOUT_S = 1800  # a cold pip cache downloads pandas, numpy, scipy, scikit-learn


def _build(notebook_name: str, folder: Path):
    """Copy an example, convert it, and compile it with its own script (``python
    nb.py`` writes nb.yaml: the file a user uploads). Returns (notebook, yaml, plan)."""
    folder.mkdir(parents=True, exist_ok=True)
    notebook = folder / notebook_name
    shutil.copy(EXAMPLES / notebook_name, notebook)
    script_text, resources = convert(nbformat.read(notebook, as_version=4), notebook.name)
    script = notebook.with_suffix(".py")
    script.write_text(script_text, encoding="utf-8")
    compiled = run_script(script)
    assert compiled.returncode == 0, compiled.stdout[-4000:] + compiled.stderr[-4000:]
    compiled_yaml = notebook.with_suffix(".yaml")
    assert compiled_yaml.is_file(), compiled.stdout
    spec = yaml_documents(compiled_yaml)[0]
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    # A venv of this interpreter stands in for the image only if the image is its Python.
    assert images == {f"python:{sys.version_info.major}.{sys.version_info.minor}"}, images
    return notebook, compiled_yaml, resources["kale_pipeline"]


def _run_in_fresh_venvs(compiled_yaml: Path, folder: Path, snapshots: Path | None = None):
    """Run ``compiled_yaml`` with ``SubprocessRunner(use_venv=True)`` in a subprocess;
    returns (exit code, everything it printed without colours, the run's folder or None).

    The working directory is an empty folder: a task runs ``python -m
    kfp.dsl.executor_main``, which puts the working directory on ``sys.path``, so from
    the repository or the notebook's folder a step could import what its container
    would not have. ``snapshots``: where each step dumps the variables it ends with
    (``KALE_NBCONVERT_SNAPSHOT_DIR``; kfp.local passes the environment to the tasks).
    """
    root = folder / "pipeline-root"
    cwd = folder / "empty-cwd"
    workspace = folder / "workspace"
    for path in (cwd, workspace):
        path.mkdir(parents=True)
    env = {key: value for key, value in os.environ.items() if key not in LEAKY_ENV}
    if snapshots is not None:
        env["KALE_NBCONVERT_SNAPSHOT_DIR"] = str(snapshots)
    result = subprocess.run(
        [sys.executable, "-c", RUN_COMPILED_YAML, str(compiled_yaml), str(root), str(workspace)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    log = ANSI.sub("", result.stdout + "\n" + result.stderr)
    runs = [path for path in root.iterdir() if path.is_dir()] if root.is_dir() else []
    assert len(runs) <= 1, runs
    return result.returncode, log, runs[0] if runs else None


def _assert_run_matches_notebook(notebook: Path, pipeline, run: Path, snapshots: Path, workdir: Path):
    """The run's artifacts (what travels between the steps' containers), every variable
    each step ended with, and the metrics equal the notebook's values at the same point."""
    steps = [step for step in pipeline.step_list() if not step.is_metrics]
    expected = notebook_snapshots(notebook, workdir, steps)
    where = notebook.name
    handed_on = 0
    for step in steps:
        for name in step.outputs:
            value = _kale_marshal_load(str(run / kfp_name(step.name) / f"{name}_out"))
            assert_same(value, expected[step.name][name], f"{where}: step {step.name}: artifact {name}")
            handed_on += 1
    assert handed_on, "no step handed anything on"
    compared = 0
    for step in steps:
        ended_with = load_snapshot(snapshots / step.name)
        assert ended_with, f"step {step.name} left no snapshot"
        for name, value in ended_with.items():
            if name in expected[step.name]:
                assert_same(value, expected[step.name][name], f"{where}: step {step.name}: {name}")
                compared += 1
    assert compared >= handed_on
    (metrics_step,) = [step for step in pipeline.step_list() if step.is_metrics]
    want = {a.name: float(expected[a.producer][a.name]) for a in metrics_step.inputs}
    want.update({name: float(pipeline.parameters[name].default) for name in metrics_step.parameters})
    assert want, "the notebook reports no metrics"
    output = json.loads((run / kfp_name(metrics_step.name) / "executor_output.json").read_text())
    logged = [a for outputs in output["artifacts"].values() for a in outputs["artifacts"]]
    assert [artifact["metadata"] for artifact in logged] == [want], output


@pytest.mark.parametrize("notebook_name", ["candies.ipynb", "iris_classifier.ipynb"])
def test_the_compiled_yaml_computes_the_notebooks_values_in_fresh_venvs(notebook_name, tmp_path):
    """candies (standard library only) and iris (pandas, scikit-learn): each step's
    package list is enough for the step to run where nothing else is installed, nothing
    from this repository leaks into a step, and the values equal the notebook's."""
    notebook, compiled_yaml, pipeline = _build(notebook_name, tmp_path / "build")
    snapshots = tmp_path / "snapshots"
    code, log, run = _run_in_fresh_venvs(compiled_yaml, tmp_path / "run", snapshots)
    assert code == 0, log[-6000:]
    assert run is not None, log[-6000:]
    for step in pipeline.step_list():
        assert f"Task '{kfp_name(step.name)}' finished with status SUCCESS" in log, log[-6000:]
    _assert_run_matches_notebook(notebook, pipeline, run, snapshots, tmp_path / "work")


LEFT_OUT_STEP = "load"
"""The step whose scikit-learn is left out: the first one, so the run stops after one
task (each iris task installs pandas and scikit-learn, about half a minute)."""


def test_a_step_without_its_package_fails_in_its_fresh_venv(tmp_path):
    """The check above can fail: with ``scikit-learn==...`` taken out of one step's pip
    install line (the ``packages_to_install`` inside its container command in the YAML),
    that step fails with ``No module named 'sklearn'``, as it would on the cluster,
    and the run stops there."""
    _, compiled_yaml, pipeline = _build("iris_classifier.ipynb", tmp_path / "build")
    documents = yaml_documents(compiled_yaml)
    executor = documents[0]["deploymentSpec"]["executors"][f"exec-{kfp_name(LEFT_OUT_STEP)}"]
    command = executor["container"]["command"]
    removed = 0
    for index, part in enumerate(command):
        command[index], count = re.subn(r"\s*'scikit-learn==[^']*'", "", part)
        removed += count
    assert removed == 1, command
    assert "scikit-learn" not in json.dumps(executor)
    broken = tmp_path / "build" / "without-sklearn.yaml"
    broken.write_text(yaml.safe_dump_all(documents, sort_keys=False), encoding="utf-8")

    code, log, _ = _run_in_fresh_venvs(broken, tmp_path / "run")
    assert code != 0, log[-6000:]
    assert "ModuleNotFoundError: No module named 'sklearn'" in log, log[-6000:]
    # the step's import failed (not pip), and the message names the notebook's cell
    assert f"kale: step '{LEFT_OUT_STEP}' failed in iris_classifier.ipynb cell " in log, log[-6000:]
    assert f"Task '{kfp_name(LEFT_OUT_STEP)}' finished with status FAILURE" in log, log[-6000:]
    assert f"Inner task failed: '{kfp_name(LEFT_OUT_STEP)}'" in log, log[-6000:]
    for step in pipeline.step_list():
        if step.name != LEFT_OUT_STEP:
            assert f"Executing task '{kfp_name(step.name)}'" not in log, step.name
