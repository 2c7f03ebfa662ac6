"""Parallel steps over the same data: the most common shape of an ML notebook.

One step prepares a frame, several steps fit different models on it (and plot it,
and score it through a helper that only reads), one step compares them. Passing the
frame to ``fit``/``plot``/a helper only reads it, so the notebook converts with no
extra tags, the training steps run as parallel branches, and every step ends with the
values the notebook had.
"""

from __future__ import annotations

import pytest

from equivalence import assert_pipeline_matches_notebook
from helpers import convert, make_notebook, run_nbconvert, run_script, yaml_documents

FAN_OUT = make_notebook(
    [
        (
            "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
            "import numpy as np\nimport pandas as pd\n"
            "from sklearn.linear_model import LogisticRegression\n"
            "from sklearn.ensemble import RandomForestClassifier\n"
            "from sklearn.metrics import accuracy_score\n"
            "from sklearn.model_selection import train_test_split\n"
            "import xgboost as xgb",
            ["imports"],
        ),
        ("def describe_frame(frame):\n    return {c: float(frame[c].mean()) for c in frame.columns}", ["functions"]),
        (
            "rng = np.random.default_rng(0)\n"
            "train_df = pd.DataFrame(rng.normal(size=(200, 3)), columns=['a', 'b', 'c'])\n"
            "labels = (train_df['a'] + train_df['b'] > 0).astype(int)\n"
            "X_train, X_test, y_train, y_test = train_test_split(train_df, labels, random_state=0)",
            ["step:prepare"],
        ),
        (
            "forest = RandomForestClassifier(n_estimators=10, random_state=0)\n"
            "forest.fit(X_train, y_train)\n"
            "acc_forest = accuracy_score(y_test, forest.predict(X_test))",
            ["step:forest", "prev:prepare"],
        ),
        (
            "logreg = LogisticRegression()\nlogreg.fit(X_train, y_train)\n"
            "acc_logreg = accuracy_score(y_test, logreg.predict(X_test))",
            ["step:logreg", "prev:prepare"],
        ),
        (
            "booster = xgb.XGBClassifier(n_estimators=5, max_depth=2, random_state=0)\n"
            "booster.fit(X_train, y_train)\n"
            "acc_xgb = accuracy_score(y_test, booster.predict(X_test))",
            ["step:boosted", "prev:prepare"],
        ),
        (
            "figure, axis = plt.subplots()\naxis.plot(train_df['a'])\n"
            "plt.hist(train_df['b'])\nsummary = describe_frame(train_df)\nplt.close(figure)\ndel figure, axis",
            ["step:explore", "prev:prepare"],
        ),
        (
            "scores = {'forest': acc_forest, 'logreg': acc_logreg, 'xgb': acc_xgb}\n"
            "best = max(scores, key=scores.get)\nrows = len(train_df)",
            ["step:compare", "prev:forest", "prev:logreg", "prev:boosted", "prev:explore"],
        ),
    ]
)

PARALLEL = ("forest", "logreg", "boosted", "explore")


def test_fan_out_converts_with_no_extra_tags_and_stays_parallel():
    _, resources = convert(FAN_OUT, "fan_out.ipynb")
    steps = resources["kale_pipeline"].steps
    for name in PARALLEL:
        assert steps[name].upstream == ["prepare"], name
        assert {a.producer for a in steps[name].inputs} == {"prepare"}, name
    assert {a.name: a.producer for a in steps["compare"].inputs}["train_df"] == "prepare"


@pytest.mark.slow
def test_fan_out_compiles_to_parallel_tasks(tmp_path):
    script, _ = convert(FAN_OUT, "fan_out.ipynb")
    path = tmp_path / "fan_out.py"
    path.write_text(script, encoding="utf-8")
    compiled = run_script(path)
    assert compiled.returncode == 0, compiled.stderr
    tasks = yaml_documents(path.with_suffix(".yaml"))[0]["root"]["dag"]["tasks"]
    for name in PARALLEL:
        assert tasks[name]["dependentTasks"] == ["prepare"], name
    assert sorted(tasks["compare"]["dependentTasks"]) == sorted(PARALLEL + ("prepare",))


@pytest.mark.slow
def test_fan_out_pipeline_computes_what_the_notebook_computes(tmp_path):
    import nbformat

    notebook = tmp_path / "fan_out.ipynb"
    nbformat.write(FAN_OUT, notebook)
    actual = assert_pipeline_matches_notebook(notebook, tmp_path / "work")
    assert set(PARALLEL) <= set(actual)


def test_a_real_in_place_change_in_a_sibling_is_still_refused():
    from kale_nbconvert.errors import NotebookError

    nb = make_notebook(
        [
            ("import random\ndeck = list(range(10))", ["step:prepare"]),
            ("random.shuffle(deck)", ["step:shuffle", "prev:prepare"]),
            ("first = deck[0]", ["step:peek", "prev:prepare"]),
        ]
    )
    with pytest.raises(NotebookError) as caught:
        convert(nb)
    assert "step 'peek' reads 'deck'" in caught.value.message
    assert caught.value.fix == "add the tag 'prev:shuffle' to step 'peek'"


def test_the_refusal_fix_works_when_followed():
    nb = make_notebook(
        [
            ("import random\ndeck = list(range(10))", ["step:prepare"]),
            ("random.shuffle(deck)", ["step:shuffle", "prev:prepare"]),
            ("first = deck[0]", ["step:peek", "prev:prepare", "prev:shuffle"]),
        ]
    )
    _, resources = convert(nb)
    assert [(a.name, a.producer) for a in resources["kale_pipeline"].steps["peek"].inputs] == [("deck", "shuffle")]


def test_explain_names_the_line_of_each_in_place_change(tmp_path):
    import nbformat

    nbformat.write(FAN_OUT, tmp_path / "fan_out.ipynb")
    result = run_nbconvert(tmp_path, "--to", "kale", "fan_out.ipynb",
                           "--NameAnalysisPreprocessor.explain=True")
    assert result.returncode == 0, result.stderr
    assert "forest: forest (cell 4, line 2: forest.fit(X_train, y_train))" in result.stderr
    assert "train_df <- prepare" in result.stderr
