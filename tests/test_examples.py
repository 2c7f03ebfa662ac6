"""The core acceptance test: every example notebook becomes a pipeline that computes
what the notebook computes, and the YAML a cluster would receive runs too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from equivalence import assert_pipeline_matches_notebook
from helpers import convert, run_nbconvert, run_script, yaml_documents

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def _copy(notebook: Path, tmp_path: Path) -> Path:
    target = tmp_path / notebook.name
    shutil.copy(notebook, target)
    return target


def test_there_are_examples():
    assert len(NOTEBOOKS) >= 3


def _candies_first(notebooks):
    """candies (stdlib, fastest) in every profile; the others in the exhaustive one
    (which also runs feature_engineering's with --isolated, in tests/test_warm_worker.py;
    the default profile's pandas and scikit-learn values cross steps in
    tests/test_marshal_pipeline.py and tests/test_fan_out.py)."""
    return [
        n if n.stem == "candies" else pytest.param(n, marks=pytest.mark.exhaustive)
        for n in notebooks
    ]


@pytest.mark.parametrize("notebook", _candies_first(NOTEBOOKS), ids=[n.stem for n in NOTEBOOKS])
def test_pipeline_computes_what_the_notebook_computes(notebook, tmp_path):
    assert_pipeline_matches_notebook(_copy(notebook, tmp_path), tmp_path / "work")


def _convert_and_compile(notebook: Path, tmp_path: Path) -> Path:
    """``jupyter nbconvert --to kale`` (no warning), then ``python script.py``; the YAML."""
    copy = _copy(notebook, tmp_path)
    converted = run_nbconvert(tmp_path, "--to", "kale", copy.name)
    assert converted.returncode == 0, converted.stderr
    assert "WARNING" not in converted.stderr, converted.stderr
    compiled = run_script(copy.with_suffix(".py"))
    assert compiled.returncode == 0, compiled.stderr
    pipeline = copy.with_suffix(".yaml")
    assert yaml_documents(pipeline)[0]["pipelineInfo"]["name"]
    return pipeline


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_the_cli_converts_each_example_without_a_warning_and_it_compiles(notebook, tmp_path):
    _convert_and_compile(notebook, tmp_path)


# kfp.local runs a compiled YAML's steps in a new interpreter each (seconds a step):
# every profile runs one in tests/test_local_run.py; this one runs every example's.
@pytest.mark.exhaustive
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_the_compiled_yaml_of_each_example_runs_with_kfp_local(notebook, tmp_path):
    compiled = _convert_and_compile(notebook, tmp_path)
    runner = textwrap.dedent(
        f"""
        from kfp import components, local
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root={str(tmp_path / 'runs')!r})
        components.load_component_from_file({str(compiled)!r})()
        """
    )
    result = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def test_the_examples_makefile_rebuilds_only_what_changed(tmp_path):
    """Scripts newer than their notebooks are left alone; a touched notebook is converted
    again by the rule's ``jupyter nbconvert`` (one new process, a few seconds: the other
    scripts are written in-process first) into what the exporter writes."""
    built = NOTEBOOKS[:2]
    for notebook in built:
        copy = _copy(notebook, tmp_path)
        os.utime(copy, (0, 3600))  # older than the scripts written now
        script, _ = convert(nbformat.read(copy, as_version=4), copy.name)
        copy.with_suffix(".py").write_text(script, encoding="utf-8")
    shutil.copy(EXAMPLES / "Makefile", tmp_path / "Makefile")
    make = ["make", "-C", str(tmp_path), f"PYTHON={sys.executable}", f"JUPYTER={sys.executable} -m jupyter",
            "NOTEBOOKS=" + " ".join(n.name for n in built)]
    again = subprocess.run(make + ["all"], capture_output=True, text=True)
    assert again.returncode == 0 and "nbconvert" not in again.stdout, again.stdout + again.stderr
    touched = tmp_path / built[0].name
    expected = touched.with_suffix(".py").read_text(encoding="utf-8")
    touched.with_suffix(".py").write_text("stale", encoding="utf-8")
    os.utime(touched.with_suffix(".py"), (0, 0))  # the notebook is now newer than its script
    rebuilt = subprocess.run(make + ["all"], capture_output=True, text=True)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout.count("nbconvert") == 1 and touched.name in rebuilt.stdout
    assert touched.with_suffix(".py").read_text(encoding="utf-8") == expected
