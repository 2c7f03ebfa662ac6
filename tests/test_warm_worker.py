"""--local forks its steps from one warm process that imported the notebook's libraries
once; every step still starts from a fresh ``__main__``, a crash fails only that step,
and ``--isolated`` gives each step a fresh interpreter, as a cluster does."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from equivalence import assert_pipeline_matches_notebook, pipeline_snapshots
from helpers import make_notebook, run_script, write_script

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="no fork on Windows: steps always run isolated"),
]

# 'wave' is a standard-library module nothing else here imports: whether it is
# already in sys.modules when the imports cell starts tells if the step forked from
# the warm worker (which preloaded it) or started a fresh interpreter.
PRELOAD_PROBE = make_notebook(
    [
        ("import sys\npreloaded = 'wave' in sys.modules\nimport wave", ["imports"]),
        ("secret = 41\nvisible = [1, 2]", ["step:first"]),
        ("leaked = 'secret' in globals()\nprobe = preloaded\nsize = len(visible)",
         ["step:second", "prev:first"]),
    ]
)


def test_steps_fork_from_the_warm_worker_and_start_from_a_fresh_namespace(tmp_path):
    script = write_script(PRELOAD_PROBE, tmp_path, "probe.ipynb")
    snapshots = pipeline_snapshots(script, tmp_path / "fast")
    second = snapshots["second"]
    assert second["probe"] is True  # the worker had imported 'wave' before forking
    assert second["leaked"] is False  # 'secret' of step first did not reach step second
    assert second["size"] == 2  # what it did receive, it received


def test_isolated_starts_every_step_in_a_fresh_interpreter(tmp_path):
    script = write_script(PRELOAD_PROBE, tmp_path, "probe.ipynb")
    snapshots = pipeline_snapshots(script, tmp_path / "isolated", "--isolated")
    assert snapshots["second"]["probe"] is False
    assert snapshots["second"]["leaked"] is False


def test_a_step_that_kills_its_interpreter_fails_only_that_step(tmp_path):
    nb = make_notebook(
        [
            ("import json", ["imports"]),
            ("data = [1, 2, 3]", ["step:load"]),
            ("import os\nos._exit(3)", ["step:crash", "prev:load"]),
            ("total = sum(data)", ["step:after", "prev:crash"]),
        ]
    )
    script = write_script(nb, tmp_path, "crash.ipynb")
    result = run_script(script, "--local", timeout=120)
    assert result.returncode == 1
    out = result.stdout + result.stderr
    assert "load" in out and "succeeded" in out
    assert "crash" in out and "failed" in out
    assert "kale: not run: after" in result.stderr
    again = run_script(script, "--local", timeout=120)  # the next run is unaffected
    assert again.returncode == 1 and "kale: not run: after" in again.stderr


def test_a_step_that_fails_after_a_passing_one_reports_its_cell(tmp_path):
    nb = make_notebook(
        [
            ("x = 1", ["step:first"]),
            ("y = x / 0", ["step:second", "prev:first"]),
        ]
    )
    script = write_script(nb, tmp_path, "fails.ipynb")
    result = run_script(script, "--local", timeout=120)
    assert result.returncode == 1
    assert "ZeroDivisionError" in result.stdout + result.stderr
    assert "cell 2" in result.stderr


@pytest.mark.parametrize(
    "mode",
    # the forked way is what tests/test_examples.py runs on every example already
    [pytest.param((), marks=pytest.mark.exhaustive), ("--isolated",)],
    ids=["forked", "isolated"],
)
def test_an_example_computes_what_the_notebook_computes_both_ways(tmp_path, mode):
    examples = Path(__file__).resolve().parent.parent / "examples"
    notebook = tmp_path / "feature_engineering.ipynb"
    shutil.copy(examples / notebook.name, notebook)
    assert_pipeline_matches_notebook(notebook, tmp_path / "work", *mode)
