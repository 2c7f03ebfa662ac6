"""The notebooks the Kale project published, run both ways: every one whose data is
here and whose imports are installed runs with ``--local`` and ends each step with the
values nbclient computes running the notebook top to bottom.

They are read from ``../shared/kale-notebooks`` beside this repository (never copied
into it); without that folder these tests skip.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from equivalence import assert_pipeline_matches_notebook

pytestmark = pytest.mark.slow

SHARED = Path(__file__).resolve().parents[2] / "shared" / "kale-notebooks"

RUNNABLE = {
    "examples__base__candies_sharing.ipynb": (),
    "kale__examples__base__candies_sharing.ipynb": (),
    "kale__backend__kale__tests__assets__notebooks__pipeline_parameters_and_metrics.ipynb": ("numpy",),
    "kale__examples__serving__sklearn__iris.ipynb": ("sklearn", "numpy"),
    "kale__examples__serving__xgboost__iris.ipynb": ("xgboost", "sklearn", "numpy"),
    "kale__examples__titanic-ml-dataset__titanic_dataset_ml.ipynb": ("pandas", "seaborn", "sklearn"),
}
"""Notebook -> the modules it needs here. The others need data on a cluster volume,
downloads, a GPU or libraries not installed (dog breeds, CIFAR-10, open vaccine, taxi):
they are converted and compiled by test_kale_compatibility.py, not run."""


QUICK = {
    "kale__backend__kale__tests__assets__notebooks__pipeline_parameters_and_metrics.ipynb",
}
"""Run in the default profile (Kale's parameters and metrics); the others in the
exhaustive one (pandas, scikit-learn, xgboost: a minute between them; the candies
sharing notebooks are close kin of the candies example every profile runs)."""


def _profiled(names):
    return [n if n in QUICK else pytest.param(n, marks=pytest.mark.exhaustive) for n in names]


@pytest.mark.parametrize("name", _profiled(sorted(RUNNABLE)),
                         ids=lambda n: n.split("__")[-1].removesuffix(".ipynb"))
def test_a_kale_notebook_runs_as_a_pipeline_that_computes_what_it_computes(name, tmp_path):
    source = SHARED / name
    if not source.exists():
        pytest.skip(f"{SHARED} is not beside this repository")
    missing = [m for m in RUNNABLE[name] if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"not installed here: {', '.join(missing)}")
    notebook = tmp_path / name
    shutil.copy(source, notebook)
    data = source.with_suffix(".files")
    if data.is_dir():
        shutil.copytree(data, tmp_path, dirs_exist_ok=True)
    # Kale's examples draw unseeded random numbers (candies' handfuls, titanic's ages):
    # both runs reseed at every step, so each step draws the same in both.
    assert_pipeline_matches_notebook(notebook, tmp_path / "work", allow_errors_outside=True, reseed=0)


def test_the_shared_notebooks_are_there_in_ci():
    import os

    if not SHARED.exists() and not os.environ.get("CI"):
        pytest.skip(f"{SHARED} is not beside this repository")
    assert set(RUNNABLE) <= {path.name for path in SHARED.glob("*.ipynb")}
