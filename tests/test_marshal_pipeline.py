"""Marshalling end to end: numpy, pandas, scikit-learn and torch values cross steps of a
real kfp.local run with the notebook's values (xgboost, lightgbm and polars too, where
installed); what cannot travel fails the step clearly.

The default profile runs the numpy, pandas and scikit-learn steps; the exhaustive one
adds torch, xgboost, lightgbm and polars (their imports cost seconds in the kernel and
in the steps; tests/test_marshal.py round-trips their values in every profile)."""

from __future__ import annotations

import importlib.util
import json

import nbformat
import pytest

from equivalence import assert_pipeline_matches_notebook
from helpers import make_notebook, run_script, write_script

pytestmark = pytest.mark.slow

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_BOOSTING = all(importlib.util.find_spec(name) for name in ("xgboost", "lightgbm", "polars"))

CELLS = [
    ("import numpy as np\nimport pandas as pd\nfrom sklearn.linear_model import LogisticRegression", ["imports"]),
    (
        "X = np.random.default_rng(0).random((40, 3))\n"
        "y = (X[:, 0] > 0.5).astype('int64')\n"
        "frame = pd.DataFrame({'x0': X[:, 0], 'label': pd.Categorical(np.where(y == 1, 'hi', 'lo')),\n"
        "                      'when': pd.date_range('2024-01-01', periods=40, freq='D', tz='Europe/Paris')})\n"
        "frame.index.name = 'row'\n"
        "scale = np.float32(2.5)",
        ["step:data"],
    ),
    (
        "model = LogisticRegression().fit(X * scale, y)\n"
        "proba = model.predict_proba(X * scale)\n"
        "frame['proba'] = proba[:, 1]",
        ["step:train", "prev:data"],
    ),
    ("accuracy = float((model.predict(X * scale) == y).mean())\nsummary = frame.groupby('label', observed=True)['proba'].mean()", ["step:score", "prev:train"]),
]
CORE_CELLS = list(CELLS)
if HAS_TORCH:
    CELLS += [
        (
            "import torch\n"
            "torch.manual_seed(0)\n"
            "net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))\n"
            "inputs = torch.tensor(X, dtype=torch.float32)",
            ["step:network", "prev:data"],
        ),
        ("outputs = net(inputs).detach().numpy()\nnet_kind = type(net).__name__", ["step:apply", "prev:network"]),
    ]
if HAS_BOOSTING:
    CELLS += [
        (
            "import lightgbm\nimport polars as pl\nimport xgboost\n"
            "booster = xgboost.XGBClassifier(n_estimators=4, max_depth=2, n_jobs=1).fit(X, y)\n"
            "dtrain = xgboost.DMatrix(X, label=y, feature_names=['a', 'b', 'c'])\n"
            "gbm = lightgbm.train({'verbose': -1, 'num_threads': 1}, lightgbm.Dataset(X, label=y), 3)\n"
            "table = pl.DataFrame({'a': X[:, 0], 'label': y})",
            ["step:boost", "prev:score"] + (["prev:network"] if HAS_TORCH else []),
        ),
        (
            "boost_proba = booster.predict_proba(X)\n"
            "raw = booster.get_booster().predict(dtrain)\n"
            "names = dtrain.feature_names\n"
            "gbm_scores = gbm.predict(X)\n"
            "positives = table.filter(pl.col('label') == 1).height",
            ["step:boosted", "prev:boost"],
        ),
    ]


@pytest.mark.parametrize("cells", [
    pytest.param(CORE_CELLS, id="numpy-pandas-sklearn"),
    pytest.param(CELLS, id="and-torch-and-boosting", marks=pytest.mark.exhaustive),
])
def test_numpy_pandas_sklearn_and_torch_values_cross_steps_as_in_the_notebook(tmp_path, cells):
    notebook = tmp_path / "marshal.ipynb"
    nbformat.write(make_notebook(cells), notebook)
    snapshots = assert_pipeline_matches_notebook(notebook, tmp_path / "work")
    assert snapshots["score"]["accuracy"] > 0.5
    if cells is CORE_CELLS:
        assert set(snapshots) == {"data", "train", "score"}
    if HAS_TORCH and cells is CELLS:
        assert snapshots["apply"]["net_kind"] == "Sequential"
        assert snapshots["apply"]["outputs"].shape == (40, 1)
    if HAS_BOOSTING and cells is CELLS:
        assert snapshots["boosted"]["names"] == ["a", "b", "c"]
        assert snapshots["boosted"]["positives"] == int(snapshots["data"]["y"].sum())
    runs = sorted((tmp_path / "kale-local-runs").iterdir())
    meta = json.loads((runs[-1] / "data" / "frame_out" / "kale.json").read_text())
    assert meta["python_type"] == "pandas.DataFrame" or meta["python_type"].endswith(".DataFrame")
    assert meta["serializer"] == "pickle" and meta["variable"] == "frame" and meta["step"] == "data"
    assert json.loads((runs[-1] / "train" / "model_out" / "kale.json").read_text())["serializer"] == "joblib"
    script = (tmp_path / "marshal.py").read_text()
    assert "model_out: Output[Model]" in script and "frame_out: Output[Dataset]" in script


def test_an_untravelling_output_fails_its_step_naming_variable_cell_and_fix(tmp_path):
    nb = make_notebook(
        [
            ("import sqlite3", ["imports"]),
            ("conn = sqlite3.connect(':memory:')\nrows = [1, 2]", ["step:open_db"]),
            ("print(conn, rows)", ["step:use", "prev:open_db"]),
        ]
    )
    script = write_script(nb, tmp_path, "db.ipynb")
    result = run_script(script, "--local")
    output = (result.stdout + result.stderr).replace("\x1b[96m", "").replace("\x1b[0m", "")
    assert result.returncode != 0
    assert "'conn' (sqlite3.Connection, set in db.ipynb cell 2)" in output
    assert "is a database connection" in output and "Fix:" in output
    assert "Executing task 'use'" not in output
    run = sorted((tmp_path / "kale-local-runs").iterdir())[-1]
    leftovers = [p.name for p in (run / "open_db").iterdir()] if (run / "open_db").exists() else []
    assert not any(name.startswith("conn_out") for name in leftovers), leftovers
