"""Steps that interleave in notebook order: the pipeline must compute what the notebook does.

A cell may carry ``step:a`` again below another step's cells (and untagged cells below it
continue it), so a step's cells need not be contiguous. The notebook runs each piece
where it stands; the pipeline runs all of a step's cells at once. Where that would hand
a step another value than the notebook holds at the reading cell, conversion stops and
names the reading cell and step, the name, the cell and step that change it, and a fix;
each fix is followed here, and the converted pipeline, run with ``--local``, then ends
with the notebook's values. Reading a name the same step changes further down is
ordinary sequential code and converts.
"""

from __future__ import annotations

import re

import nbformat
import pytest

from equivalence import assert_pipeline_matches_notebook
from helpers import convert, make_notebook
from kale_nbconvert.errors import NotebookError


def error_of(cells) -> NotebookError:
    with pytest.raises(NotebookError) as caught:
        convert(make_notebook(cells), "nb.ipynb")
    error = caught.value
    assert "\n" not in str(error) and error.fix, str(error)
    return error


def plan_of(cells):
    _, resources = convert(make_notebook(cells), "nb.ipynb")
    return resources["kale_pipeline"]


def split_as_the_fix_says(cells, fix: str):
    """Follow a "give cell N a step of its own" fix: on cell N (1-based, no markdown
    here) replace the step tag it names and add the 'prev:' tags it names."""
    match = re.search(
        r"replace the tag '(step:\w+)' of cell (\d+) with '(step:\w+)' and add (.*?)(?:, and add|, or |$)", fix
    )
    assert match, fix
    old, number, new, prevs = match.group(1), int(match.group(2)), match.group(3), match.group(4)
    cells = [(source, list(tags)) for source, tags in cells]
    source, tags = cells[number - 1]
    tags[tags.index(old)] = new
    tags += re.findall(r"'(prev:\w+)'", prevs)
    later = re.search(r"add the tag '(prev:\w+)' to step '(\w+)'", fix)
    if later:  # the reader must follow the new step too
        for source_, tags_ in cells:
            if f"step:{later.group(2)}" in tags_:
                tags_.append(later.group(1))
                break
    return cells


def runs_like_the_notebook(cells, tmp_path) -> dict[str, dict]:
    """Convert, run the notebook top to bottom and the pipeline with ``--local``; every
    step's variables must equal the notebook's. Returns the pipeline's, by step."""
    notebook = tmp_path / "nb.ipynb"
    nbformat.write(make_notebook(cells), notebook)
    return assert_pipeline_matches_notebook(notebook, tmp_path / "work")


# -- the producing step changes the name again below the reading cell ------------------

CHANGED_LATER = [
    ("y = 1", ["step:a"]),
    ("z = y + 1", ["step:b", "prev:a"]),
    ("y = 100", ["step:a"]),
]


def test_a_value_its_producer_sets_again_later_is_refused():
    error = error_of(CHANGED_LATER)
    assert (error.cell, error.step, error.line) == (2, "b", 1)
    assert error.message == (
        "step 'b' reads 'y' in cell 2, where the notebook holds the value from cell 1 "
        "(step 'a'), but step 'a' sets 'y' again later, in cell 3 (line 1); the pipeline "
        "runs all of step 'a' before 'b', so 'b' would get the value from cell 3"
    )
    assert error.fix == (
        "give cell 3 a step of its own that follows 'b': replace the tag 'step:a' of cell 3 "
        "with 'step:a_after_b' and add 'prev:b', or use another name than 'y' in cell 3"
    )


@pytest.mark.slow
def test_following_the_fix_gives_the_notebooks_value(tmp_path):
    fixed = split_as_the_fix_says(CHANGED_LATER, error_of(CHANGED_LATER).fix)
    assert fixed[2][1] == ["step:a_after_b", "prev:b"]
    actual = runs_like_the_notebook(fixed, tmp_path)
    assert actual["b"]["z"] == 2
    assert actual["a_after_b"]["y"] == 100


def test_the_other_fix_another_name_converts():
    renamed = CHANGED_LATER[:2] + [("y2 = 100", ["step:a"])]
    assert [(a.name, a.producer) for a in plan_of(renamed).steps["b"].inputs] == [("y", "a")]


CONTINUED_LATER = [
    ("y = 1", ["step:a"]),
    ("z = y + 1", ["step:b", "prev:a"]),
    ("w = 0", ["step:a"]),
    ("y = 100 + w", []),  # no tag: it continues step 'a'
]


def test_an_untagged_cell_continuing_the_producer_counts_too():
    error = error_of(CONTINUED_LATER)
    assert (error.cell, error.step) == (2, "b")
    assert "step 'a' sets 'y' again later, in cell 4 (line 1)" in error.message
    assert error.fix.startswith(
        "give cells 3 to 4 a step of their own that follows 'b': replace the tag 'step:a' "
        "of cell 3 with 'step:a_after_b' and add 'prev:b'"
    )
    steps = plan_of(split_as_the_fix_says(CONTINUED_LATER, error.fix)).steps
    assert [c.number for c in steps["a_after_b"].cells] == [3, 4]
    assert [(a.name, a.producer) for a in steps["b"].inputs] == [("y", "a")]


MUTATED_LATER = [
    ("y = [1]", ["step:a"]),
    ("n = len(y)", ["step:b", "prev:a"]),
    ("y.append(2)", ["step:a"]),
]


def test_an_in_place_change_below_the_reading_cell_counts_too():
    error = error_of(MUTATED_LATER)
    assert (error.cell, error.step) == (2, "b")
    assert "step 'a' changes 'y' in place again later, in cell 3 (line 1: y.append(2))" in error.message
    assert "another name" not in error.fix  # the object itself changes
    steps = plan_of(split_as_the_fix_says(MUTATED_LATER, error.fix)).steps
    assert [(a.name, a.producer) for a in steps["b"].inputs] == [("y", "a")]
    assert steps["a_after_b"].in_place_changes["y"] == "cell 3, line 1: y.append(2)"


# -- the name is set only below the reading cell: the notebook raises NameError --------

BOUND_LATER = [
    ("x = 0", ["step:a"]),
    ("z = y + 1", ["step:b", "prev:a"]),
    ("y = 100", ["step:a"]),
]


def test_a_name_set_only_below_the_reading_cell_is_refused_as_defined_later():
    error = error_of(BOUND_LATER)
    assert (error.cell, error.step, error.line) == (2, "b", 1)
    assert error.message == (
        "step 'b' reads 'y', which is set only later, in cell 3 of step 'a': run top to "
        "bottom, the notebook fails at cell 2 with a NameError, while the pipeline runs all "
        "of step 'a' first and would hand 'b' the value from cell 3"
    )
    assert error.fix == (
        "move the code that sets 'y' (cell 3) into step 'a' above cell 2, where step 'b' reads it"
    )


@pytest.mark.slow
@pytest.mark.exhaustive  # the default profile runs one fix end to end
def test_moving_the_code_as_the_fix_says_gives_the_notebooks_value(tmp_path):
    moved = [BOUND_LATER[0], BOUND_LATER[2], BOUND_LATER[1]]
    actual = runs_like_the_notebook(moved, tmp_path)
    assert actual["b"]["z"] == 101


# -- a step's later piece, or a later reader, after another step changed the name ------

STALE_PIECE = [
    ("y = 1", ["step:a"]),
    ("y = y * 2", ["step:b", "prev:a"]),
    ("total = y + 1", ["step:a"]),
]


@pytest.mark.slow
@pytest.mark.exhaustive  # the default profile runs one fix end to end
def test_a_later_piece_reading_what_another_step_changed_in_between(tmp_path):
    error = error_of(STALE_PIECE)
    assert (error.cell, error.step) == (3, "a")
    assert error.message == (
        "step 'a' reads 'y' in cell 3, after step 'b' sets 'y' in cell 2 (line 1); the "
        "pipeline runs all of step 'a' before 'b', so cell 3 would see the value from cell 1 "
        "(step 'a') instead"
    )
    fixed = split_as_the_fix_says(STALE_PIECE, error.fix)
    assert fixed[2][1] == ["step:a_after_b", "prev:b"]
    assert runs_like_the_notebook(fixed, tmp_path)["a_after_b"]["total"] == 3


OVERTAKEN = [
    ("y = 1", ["step:a"]),
    ("y = 2", ["step:b", "prev:a"]),
    ("y = 3", ["step:a"]),
    ("seen = y", ["step:c", "prev:b"]),
]


@pytest.mark.slow
@pytest.mark.exhaustive  # the default profile runs one fix end to end
def test_a_reader_below_a_piece_that_runs_too_early(tmp_path):
    error = error_of(OVERTAKEN)
    assert (error.cell, error.step) == (4, "c")
    assert "the notebook holds the value step 'a' left in cell 3 (line 1)" in error.message
    assert "which sets 'y' in cell 2, so the value from cell 2 would be used" in error.message
    assert error.fix.endswith(", and add the tag 'prev:a_after_b' to step 'c'")
    fixed = split_as_the_fix_says(OVERTAKEN, error.fix)
    assert runs_like_the_notebook(fixed, tmp_path)["c"]["seen"] == 3


def test_the_metrics_cell_reporting_a_value_from_a_piece_that_runs_too_early():
    error = error_of([
        ("acc = 0.1", ["step:train"]),
        ("acc = 0.5", ["step:tune", "prev:train"]),
        ("acc = 0.9", ["step:train"]),
        ("print(acc)", ["pipeline-metrics"]),
    ])
    assert (error.cell, error.section) == (4, "pipeline-metrics")
    assert error.message.startswith("the pipeline-metrics cell reports 'acc', where the notebook holds")
    assert "to step" not in error.fix  # the metrics step follows every step already


# -- what still converts -----------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.exhaustive  # the default profile runs one fix end to end
def test_a_name_the_reading_step_changes_itself_further_down_converts(tmp_path):
    cells = [
        ("y = 1", ["step:a"]),
        ("z = y + 1", ["step:b", "prev:a"]),
        ("q = z * 10", ["step:c", "prev:b"]),
        ("y = 100 + z", ["step:b"]),  # step 'b' again: its own later change
        ("last = y", ["step:d", "prev:b", "prev:c"]),
    ]
    steps = plan_of(cells).steps
    assert [(a.name, a.producer) for a in steps["b"].inputs] == [("y", "a")]
    assert ("y", "b") in [(a.name, a.producer) for a in steps["d"].inputs]
    actual = runs_like_the_notebook(cells, tmp_path)
    assert (actual["b"]["z"], actual["d"]["last"]) == (2, 102)


def test_shared_imports_functions_and_parameters_are_not_affected():
    pipeline = plan_of([
        ("import math", ["imports"]),
        ("def double(v):\n    return 2 * v", ["functions"]),
        ("n = 3", ["pipeline-parameters"]),
        ("x = double(n)", ["step:a"]),
        ("r = math.sqrt(x) + n", ["step:b", "prev:a"]),
        ("import math\nw = double(x) + n", ["step:a"]),  # the same import again, a new name
    ])
    assert [(a.name, a.producer) for a in pipeline.steps["b"].inputs] == [("x", "a")]
    assert pipeline.steps["b"].parameters == ["n"]


def test_a_fan_out_with_the_producer_continuing_read_only_converts():
    pipeline = plan_of([
        ("data = list(range(10))", ["step:prepare"]),
        ("low = min(data)", ["step:low", "prev:prepare"]),
        ("high = max(data)", ["step:high", "prev:prepare"]),
        ("size = len(data)", ["step:prepare"]),  # reads only
        ("spread = high - low + size", ["step:report", "prev:low", "prev:high"]),
    ])
    for name in ("low", "high"):
        assert pipeline.steps[name].upstream == ["prepare"], name
