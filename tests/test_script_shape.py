"""The generated script reads like hand-written KFP code: the user's cells first, step
bodies that pass only what the step uses, typed inputs, a pyflakes-clean file."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import nbformat
import pytest
from pyflakes.api import check
from pyflakes.reporter import Reporter

from helpers import make_notebook, write_script
from kale_nbconvert.script_context import WIDTH

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.ipynb"))
BANNER = "# Everything below is kale_nbconvert's machinery"


def _script(notebook: Path, tmp_path: Path) -> str:
    nb = nbformat.read(notebook, as_version=4)
    return write_script(nb, tmp_path, notebook.name).read_text(encoding="utf-8")


def _pyflakes(text: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    check(text, "script.py", Reporter(out, err))
    return out.getvalue() + err.getvalue()


def _string_lines(text: str) -> set[int]:
    """Lines inside string literals (the notebook's cells, the description, the
    docstrings), which are kept as written."""
    lines = set()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.STRING:
            lines.update(range(token.start[0], token.end[0] + 1))
    return lines


@pytest.mark.parametrize("notebook", EXAMPLES, ids=lambda p: p.stem)
def test_an_example_script_passes_pyflakes(notebook, tmp_path):
    text = _script(notebook, tmp_path)
    assert _pyflakes(text) == ""
    assert text.endswith(")\n") and not text.endswith("\n\n")  # one final newline
    # run as a program it builds its pipeline in its command line only (once); imported,
    # as by `kfp dsl compile`, it defines `pipeline`
    assert text.rstrip().endswith('else:  # imported, as by `kfp dsl compile --py THIS_FILE`, '
                                  'which looks for a pipeline\n    pipeline = build_pipeline()')


@pytest.mark.parametrize("notebook", EXAMPLES, ids=lambda p: p.stem)
def test_the_first_step_cells_come_within_100_lines_and_code_lines_are_wrapped(notebook, tmp_path):
    text = _script(notebook, tmp_path)
    lines = text.splitlines()
    first_cells = next(i for i, line in enumerate(lines, 1) if line.strip() == "cells=[")
    assert first_cells < 100
    user_part = lines[: next(i for i, line in enumerate(lines) if line.startswith(BANNER))]
    strings = _string_lines(text)
    long_code = [
        (number, line) for number, line in enumerate(user_part, 1)
        if len(line) > WIDTH and number not in strings
    ]
    assert long_code == []


def test_a_step_body_passes_only_what_the_step_uses(tmp_path):
    notebook = make_notebook([("x = 1", ["step:a"]), ("print(x)", ["step:b", "prev:a"])])
    tree = ast.parse(write_script(notebook, tmp_path, "lean.ipynb").read_text(encoding="utf-8"))
    calls = {
        node.name: node.body[1].value
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name in ("a_step", "b_step")
    }
    keywords = {name: [k.arg for k in call.keywords] for name, call in calls.items()}
    assert keywords == {
        "a_step": ["notebook", "step", "cells", "outputs", "report"],
        "b_step": ["notebook", "step", "cells", "inputs", "report"],
    }


def test_an_input_is_typed_as_its_producer_declares_it_and_unused_tasks_are_not_bound(tmp_path):
    notebook = make_notebook([
        ("from sklearn.linear_model import LinearRegression", ["imports"]),
        ("model = LinearRegression()", ["step:train"]),
        ("print(model)", ["step:show", "prev:train"]),
    ])
    text = write_script(notebook, tmp_path, "typed.ipynb").read_text(encoding="utf-8")
    assert "model_out: Output[Model]" in text
    assert "model_in: Input[Model]" in text
    assert "from kfp.dsl import HTML, Input, Model, Output\n" in text
    assert "train_task = train_component()" in text
    assert "\n        show_component(" in text  # nothing uses the last task
    assert _pyflakes(text) == ""


def test_a_notebook_without_shared_cells_ships_no_shared_function(tmp_path):
    notebook = make_notebook([("x = 1", ["step:a"])])
    text = write_script(notebook, tmp_path, "alone.ipynb").read_text(encoding="utf-8")
    assert "_kale_shared_cells" not in text
    assert _pyflakes(text) == ""


def test_a_last_step_that_only_runs_after_another_compiles(tmp_path):
    from helpers import run_script

    notebook = make_notebook([("x = 1", ["step:a"]), ("print('done')", ["step:b", "prev:a"])])
    script = write_script(notebook, tmp_path, "after.ipynb")
    text = script.read_text(encoding="utf-8")
    assert "b_task.after(a_task)" in text
    assert run_script(script).returncode == 0
    assert _pyflakes(text) == ""
