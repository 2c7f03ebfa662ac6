"""Equivalence on notebooks written to stress the analysis: the pipeline run locally
must leave every step with the values the notebook had at the same point."""

from __future__ import annotations

import nbformat
import pytest

from equivalence import assert_pipeline_matches_notebook
from helpers import make_notebook

pytestmark = pytest.mark.slow

TRICKY = make_notebook(
    [
        ("markdown", "Mutation, functions with free variables, classes, magics, del, shared functions."),
        ("import collections\nimport statistics", ["imports"]),
        ("def scaled(values):\n    return [v * SCALE for v in values]\n\nSCALE = 3", ["functions"]),
        ("n = 5", ["pipeline-parameters"]),
        (
            "data = list(range(n))\n"
            "offset = 10\n"
            "def shift(values):\n    return [v + offset for v in values]\n"
            "def shift_twice(values):\n    return shift(shift(values))\n"
            "class Bag:\n    def __init__(self):\n        self.items = []\n"
            "    def add(self, item):\n        self.items.append(item * factor)\n"
            "factor = 2\n"
            "bag = Bag()\n"
            "temporary = 'gone soon'",
            ["step:define"],
        ),
        (
            "data.append(100)\n"
            "bag.add(1)\n"
            "counts = collections.Counter(v % 3 for v in data)\n"
            "squares = [x * x for x in data]\n"
            "del temporary\n"
            "%time total = sum(squares)\n"
            "echoed = !echo hello\n"
            "x = 7\n"
            "x += 1",
            ["step:mutate", "prev:define"],
        ),
        (
            "shifted = shift_twice(data)\n"
            "tripled = scaled(data)\n"
            "bag.add(x)\n"
            "mean = statistics.mean(shifted)\n"
            "lines = list(echoed)\n"
            "if total > 0:\n    sign = 'positive'\n"
            "(found := len(bag.items))",
            ["step:use", "prev:mutate"],
        ),
        ("print(mean, found)", ["pipeline-metrics"]),
    ]
)


def test_tricky_notebook_matches(tmp_path):
    notebook = tmp_path / "tricky.ipynb"
    nbformat.write(TRICKY, notebook)
    snapshots = assert_pipeline_matches_notebook(notebook, tmp_path / "work")
    use = snapshots["use"]
    assert use["shifted"] == [v + 20 for v in [0, 1, 2, 3, 4, 100]]
    assert use["tripled"] == [v * 3 for v in [0, 1, 2, 3, 4, 100]]
    assert use["bag"].items == [2, 16]
    assert use["lines"] == ["hello"]
    assert "temporary" not in snapshots["mutate"]
