"""The library API, used the way a notebook or a CI script would: only
``kale_nbconvert.plan`` / ``kale_nbconvert.convert`` and the model they return."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import kale_nbconvert

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _notebook():
    nb = nbformat.v4.new_notebook()
    for source, tags in [
        ("import math", ["imports"]),
        ("n = 3", ["pipeline-parameters"]),
        ("values = [math.sqrt(i) for i in range(n)]", ["step:load"]),
        ("total = sum(values)", ["step:add", "prev:load"]),
        ("print('no tag yet')", []),
    ]:
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = tags
        nb.cells.append(cell)
    return nb


def test_plan_returns_the_filled_model():
    pipeline = kale_nbconvert.plan(_notebook())
    steps = {step.name: step for step in pipeline.step_list()}
    assert list(steps) == ["load", "add"]
    assert [(a.name, a.producer) for a in steps["add"].inputs] == [("values", "load")]
    assert steps["load"].outputs == ["values"] and steps["load"].parameters == ["n"]
    assert pipeline.parameters["n"].type_name == "int" and pipeline.parameters["n"].default == 3
    assert [cell.number for cell in steps["add"].cells] == [4, 5]


def test_convert_returns_the_script_nbconvert_writes(tmp_path):
    notebook = tmp_path / "candies.ipynb"
    notebook.write_bytes((EXAMPLES / "candies.ipynb").read_bytes())
    script = kale_nbconvert.convert(notebook)
    ast.parse(script)
    assert "def build_pipeline" in script
    assert kale_nbconvert.convert(str(notebook)) == script  # a str path works too
    assert not notebook.with_suffix(".py").exists()  # nothing is written


def test_options_use_the_command_line_names():
    pipeline = kale_nbconvert.plan(_notebook(), {"TagMergePreprocessor.pipeline_name": "nightly"})
    assert pipeline.name == "nightly"
    with pytest.raises(ValueError, match="Class.trait"):
        kale_nbconvert.plan(_notebook(), {"pipeline_name": "nightly"})


def test_a_bad_notebook_raises_notebook_error_naming_the_cell(tmp_path):
    nb = _notebook()
    nb.cells[3].metadata["tags"] = ["step:add", "prev:lod"]
    with pytest.raises(kale_nbconvert.NotebookError) as caught:
        kale_nbconvert.convert(nb)
    assert caught.value.cell == 4 and caught.value.step == "add"
    assert "prev:load" in caught.value.fix
    path = tmp_path / "broken.ipynb"
    path.write_text(json.dumps({"cells": "oops"}))
    with pytest.raises(kale_nbconvert.NotebookError, match="broken.ipynb"):
        kale_nbconvert.plan(path)


def test_what_runs_in_a_notebook_or_a_step_does_not_import_the_converter():
    """Loading a run's outputs (``kale_nbconvert.local_runs``) or the in-step runtime
    must not pay for nbconvert's import (seconds); the package's errors still resolve."""
    probe = (
        "import sys\n"
        "import kale_nbconvert.local_runs, kale_nbconvert.embedded.step\n"
        "print(sorted(m for m in ('nbconvert', 'nbformat', 'jinja2') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"
    from kale_nbconvert import KaleError, NotebookError

    assert issubclass(NotebookError, KaleError) and KaleError.__module__ == "kale_nbconvert.errors"
