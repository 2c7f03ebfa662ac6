"""What each step's container installs (``packages_to_install``): what its cells need,
no more. A cluster step has only the image, kfp and this list, so a missing package is
a failure on the cluster only, and an extra one is minutes of pip per pod.

The container-equivalent runs (tests/test_container_equivalent.py) prove the lists are
enough; these tests pin what they hold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import kale_nbconvert
from helpers import make_notebook

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RUNTIME = ["dill"]
REPORT = ["dill", "ipython"]  # a step that writes its HTML report renders it with IPython
SCIENCE = ["numpy", "pandas", "pyarrow", "scikit-learn"]  # pyarrow: pandas' string storage


def _names(step) -> list[str]:
    return sorted(requirement.split("==")[0].lower() for requirement in step.packages)


def _packages(notebook) -> dict[str, list[str]]:
    return {step.name: _names(step) for step in kale_nbconvert.plan(notebook).step_list()}


@pytest.mark.parametrize(
    "example, expected",
    [
        ("candies", {step: REPORT for step in ["sack", "kid1", "kid2", "kid3", "share"]}
         | {"pipeline_metrics": RUNTIME}),
        ("iris_classifier", {step: sorted(REPORT + SCIENCE) for step in
                             ["load", "prepare", "train", "evaluate"]}
         | {"pipeline_metrics": RUNTIME}),
        ("feature_engineering", {step: sorted(REPORT + ["numpy", "pandas", "pyarrow"]) for step in
                                 ["generate", "tools", "clean", "features", "summary"]}
         | {"pipeline_metrics": RUNTIME}),
    ],
)
def test_each_example_step_installs_what_its_cells_import(example, expected):
    """The shared imports run in every step, so every step installs their packages; the
    metrics step runs no cell and reads its numbers from the artifacts' kale.json."""
    assert _packages(EXAMPLES / f"{example}.ipynb") == expected


def test_a_step_gets_the_packages_of_the_values_it_receives():
    """``df`` is made in a step that imports pandas in its own cell: the step that
    reads it unpickles a DataFrame, so it needs pandas although it never imports it;
    the step beside them that receives nothing from it does not."""
    nb = make_notebook([
        ("import math", ["imports"]),
        ("import pandas as pd\ndf = pd.DataFrame({'a': [1, 2]})", ["step:make"]),
        ("rows = len(df)", ["step:count", "prev:make"]),
        ("half = math.sqrt(4)", ["step:alone"]),
        ("import numpy as np\narr = np.zeros(2)", ["step:other"]),
        ("print(rows)", ["step:report", "prev:count"]),
    ])
    packages = _packages(nb)
    assert "pandas" in packages["make"]
    assert "pandas" in packages["count"]
    assert "pyarrow" in packages["count"]  # pandas stores strings with it where it is installed
    assert "pandas" in packages["report"]  # rows came from a step that had pandas
    assert "pandas" not in packages["alone"] and "numpy" not in packages["alone"]
    assert "numpy" not in packages["count"]


def test_the_metrics_step_installs_only_the_runtime_even_when_shared_cells_use_magics():
    nb = make_notebook([
        ("import numpy as np\n%matplotlib inline", ["imports"]),
        ("score = np.float64(0.5)", ["step:train"]),
        ("print(score)", ["pipeline-metrics"]),
    ])
    packages = _packages(nb)
    assert packages["pipeline_metrics"] == RUNTIME
    assert "numpy" in packages["train"] and "ipython" in packages["train"]


METRICS_WITHOUT_NUMPY = r"""
import json, sys
sys.modules["numpy"] = None  # as in a container that installed only the runtime
from kale_nbconvert.runtime import _kale_log_metrics

class Metrics:
    logged = {}
    def log_metric(self, name, value):
        self.logged[name] = value

metrics = Metrics()
_kale_log_metrics("nb.ipynb", {name: (path, "train") for name, path in json.loads(sys.argv[1]).items()}, metrics)
print(json.dumps(metrics.logged))
"""


def test_the_metrics_step_reads_numpy_numbers_without_numpy(tmp_path):
    """A metric that is an ``np.float64`` (what scikit-learn's scores return), an
    ``np.int64`` or a 0-d array is logged by a process that cannot import
    numpy, and printed as the notebook prints it."""
    np = pytest.importorskip("numpy")
    from kale_nbconvert.embedded.marshal import _kale_marshal_save

    values = {"accuracy": np.float64(0.875), "count": np.int64(32), "single": np.array(2.5),
              "flag": True}
    paths = {}
    for name, value in values.items():
        paths[name] = str(tmp_path / name)
        _kale_marshal_save(value, paths[name])
    result = subprocess.run([sys.executable, "-c", METRICS_WITHOUT_NUMPY, json.dumps(paths)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert json.loads(lines[-1]) == {"accuracy": 0.875, "count": 32.0, "single": 2.5, "flag": 1.0}
    assert "accuracy: 0.875" in lines and "count: 32" in lines and "flag: True" in lines


def test_a_metric_that_is_not_a_number_still_fails_with_its_type(tmp_path):
    from kale_nbconvert.embedded.marshal import _kale_marshal_save

    path = str(tmp_path / "labels")
    _kale_marshal_save(["a", "b"], path)
    result = subprocess.run([sys.executable, "-c", METRICS_WITHOUT_NUMPY, json.dumps({"labels": path})],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "metric 'labels' from step 'train' is a list, not a number" in result.stderr


class OddShape:
    """Has ``__float__`` and a ``shape`` that is a method, not a tuple."""

    def shape(self):
        return (1,)

    def __float__(self):
        return 1.0


def test_a_value_with_an_odd_shape_is_saved_without_a_number(tmp_path):
    """Recording the number must never fail a save: a value it cannot read as one
    number is saved as usual, and the metrics step would load it."""
    import json as json_module

    from kale_nbconvert.embedded.marshal import _kale_marshal_save

    meta = _kale_marshal_save(OddShape(), str(tmp_path / "odd"))
    assert "number" not in meta
    assert "number" not in json_module.loads((tmp_path / "odd" / "kale.json").read_text())


def test_packages_follow_every_path_of_values_and_long_chains():
    """``x`` reads ``df`` from ``a`` and ``n`` from ``b`` (which read ``df`` too): every
    path brings pandas; and along a chain of 1,200 steps, every step gets it."""
    diamond = _packages(make_notebook([
        ("import pandas as pd\ndf = pd.DataFrame({'a': [1]})", ["step:a"]),
        ("n = len(df)", ["step:b", "prev:a"]),
        ("print(n, df)", ["step:x", "prev:b"]),
    ]))
    assert all("pandas" in diamond[step] for step in ("a", "b", "x"))
    cells = [("import pandas as pd\nv0 = pd.Series([0])", ["step:s0"])]
    cells += [(f"v{i} = v{i - 1} + 1", [f"step:s{i}", f"prev:s{i - 1}"]) for i in range(1, 1200)]
    chain = _packages(make_notebook(cells))
    assert "pandas" in chain["s1199"]
