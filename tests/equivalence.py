"""The core acceptance check: the pipeline computes what the notebook computes.

Generic for any notebook: run it top to bottom with nbclient, snapshotting the globals
after each step's last cell; run the converted pipeline with kfp.local, snapshotting
each step's namespace when it ends (``KALE_NBCONVERT_SNAPSHOT_DIR``); then every
variable a step ends with must equal the notebook's value at the same point.
"""

from __future__ import annotations

import math
from pathlib import Path

import dill
import nbformat

from helpers import convert, run_script

RESEED_DIR = Path(__file__).resolve().parent / "reseed"
RESEED_CELL = (
    "import random as __kale_random\n__kale_random.seed({seed})\ndel __kale_random\n"
    "try:\n    import numpy as __kale_numpy\n    __kale_numpy.random.seed({seed})\n"
    "    del __kale_numpy\nexcept ImportError:\n    pass"
)
"""Put before each step's first cell when ``reseed`` is given: the notebook then draws
per step what the pipeline's fresh step processes draw (tests/reseed)."""

SNAPSHOT_CELL = (
    "from kale_nbconvert.embedded.step import _kale_snapshot as __kale_snapshot\n"
    "__kale_snapshot(globals(), {folder!r})\n"
    "del __kale_snapshot"
)


def load_snapshot(folder: Path) -> dict:
    values = {}
    for path in sorted(folder.glob("*.dill")):
        values[path.stem] = dill.loads(path.read_bytes())
    return values


def notebook_snapshots(notebook: Path, workdir: Path, steps, outside=(), reseed=None) -> dict[str, dict]:
    """Run ``notebook`` with nbclient; globals after each step's last cell, by step.

    ``outside`` are the numbers of cells the pipeline leaves out (``skip``, before the
    first tag): one of them may fail, as it would when a user runs all cells and reads
    on (Kale's own examples hold plots written for older libraries); a failing cell the
    pipeline runs fails the comparison.
    """
    import nbclient

    nb = nbformat.read(notebook, as_version=4)
    numbered = list(enumerate(nb.cells, start=1))
    last_cell = {}
    first_cell = set()
    for step in steps:
        if step.cells:
            last_cell[step.cells[-1].number] = step.name
            first_cell.add(step.cells[0].number)
    cells = []
    for index, cell in numbered:
        if reseed is not None and index in first_cell:
            cells.append(nbformat.v4.new_code_cell(RESEED_CELL.format(seed=reseed)))
        cells.append(cell)
        if index in last_cell:
            folder = workdir / "notebook" / last_cell[index]
            cells.append(nbformat.v4.new_code_cell(SNAPSHOT_CELL.format(folder=str(folder))))
    nb.cells = cells
    # The snapshots are on disk when the last cell ends: no need to wait for a graceful
    # shutdown of the kernel (0.8 s with numpy and pandas loaded).
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", allow_errors=bool(outside),
        resources={"metadata": {"path": str(notebook.parent)}}, shutdown_kernel="immediate",
    ).execute()
    for index, cell in numbered:
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors or index in outside, (
            f"{notebook.name} cell {index} failed in the notebook: {errors[0].get('ename')}: "
            f"{errors[0].get('evalue')}"
        )
    return {step: load_snapshot(workdir / "notebook" / step) for step in last_cell.values()}


def _reseed_env(seed) -> dict[str, str]:
    """Environment that makes every new Python process start with seeded generators."""
    import os

    if seed is None:
        return {}
    path = os.pathsep.join(filter(None, [str(RESEED_DIR), os.environ.get("PYTHONPATH")]))
    return {"KALE_TEST_RESEED": str(seed), "PYTHONPATH": path}


def pipeline_snapshots(script: Path, workdir: Path, *args, reseed=None) -> dict[str, dict]:
    folder = workdir / "pipeline"
    env = {"KALE_NBCONVERT_SNAPSHOT_DIR": str(folder), **_reseed_env(reseed)}
    result = run_script(script, "--local", *args, env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return {path.name: load_snapshot(path) for path in sorted(folder.iterdir())}


def assert_same(left, right, where: str) -> None:
    """Equal value and identical type, for the kinds of values notebooks hold."""
    assert type(left) is type(right) or type(left).__name__ == type(right).__name__, (
        f"{where}: type {type(left)} != {type(right)}"
    )
    module = type(left).__module__.split(".")[0]
    if module == "numpy" and hasattr(left, "bit_generator"):  # a random Generator
        assert_same(left.bit_generator.state, right.bit_generator.state, f"{where}.state")
    elif module == "numpy" and hasattr(left, "dtype"):
        import numpy as np

        assert np.array_equal(np.asarray(left), np.asarray(right), equal_nan=left.dtype.kind in "fc"), where
        assert getattr(left, "dtype", None) == getattr(right, "dtype", None), where
    elif module == "pandas":
        import pandas.testing as pdt

        if hasattr(left, "columns"):
            pdt.assert_frame_equal(left, right, obj=where)
        elif hasattr(left, "index") and hasattr(left, "dtype"):
            pdt.assert_series_equal(left, right, obj=where)
        else:
            assert left.equals(right), where
    elif module in ("polars", "pyarrow") and hasattr(left, "schema"):
        assert left.schema == right.schema and left.equals(right), where
    elif module == "lightgbm" and hasattr(left, "model_to_string"):
        assert left.model_to_string() == right.model_to_string(), where
    elif module == "xgboost" and hasattr(left, "save_raw"):
        assert left.save_raw() == right.save_raw(), where
    elif isinstance(left, float):
        assert (math.isnan(left) and math.isnan(right)) or left == right, f"{where}: {left} != {right}"
    elif isinstance(left, (list, tuple)):
        assert len(left) == len(right), where
        for index, (a, b) in enumerate(zip(left, right)):
            assert_same(a, b, f"{where}[{index}]")
    elif isinstance(left, dict):
        assert list(left) == list(right), where
        for key in left:
            assert_same(left[key], right[key], f"{where}[{key!r}]")
    elif isinstance(left, (int, str, bytes, bool, type(None), complex, set, frozenset)):
        assert left == right, f"{where}: {left!r} != {right!r}"
    elif hasattr(left, "get_params"):  # scikit-learn estimators: same settings, same state
        assert repr(left.get_params()) == repr(right.get_params()), where
        for key, value in vars(left).items():
            if key.endswith("_") and not key.startswith("_"):
                assert_same(value, vars(right)[key], f"{where}.{key}")
    elif hasattr(left, "__dict__"):
        assert_same(vars(left), vars(right), f"{where}.__dict__")
    elif isinstance(getattr(left, "__getstate__", lambda: None)(), dict):  # e.g. sklearn's Tree
        assert_same(left.__getstate__(), right.__getstate__(), f"{where}.__getstate__()")
    else:
        assert repr(left) == repr(right), f"{where}: {left!r} != {right!r}"


def assert_pipeline_matches_notebook(
    notebook: Path, workdir: Path, *run_args: str, allow_errors_outside: bool = False,
    reseed: int | None = None,
) -> dict[str, dict]:
    """Convert, run both ways, compare every step's variables; returns pipeline snapshots.
    ``run_args`` go to the script after ``--local`` (e.g. ``--isolated``);
    ``allow_errors_outside`` lets cells the pipeline leaves out fail in the notebook;
    ``reseed`` seeds the global generators at the start of every step in both runs,
    for notebooks that draw unseeded random numbers."""
    nb = nbformat.read(notebook, as_version=4)
    script_text, resources = convert(nb, notebook.name)
    script = notebook.with_suffix(".py")
    script.write_text(script_text, encoding="utf-8")
    pipeline = resources["kale_pipeline"]
    steps = [step for step in pipeline.step_list() if not step.is_metrics]
    inside = {cell.number for step in pipeline.steps.values() for cell in step.cells}
    inside |= {cell.number for cell in pipeline.shared_cells + pipeline.parameters_cells}
    outside = {index for index in range(1, len(nb.cells) + 1) if index not in inside}
    import os

    saved = dict(os.environ)
    os.environ.update(_reseed_env(reseed))  # the kernel nbclient starts inherits it
    try:
        expected = notebook_snapshots(
            notebook, workdir, steps, outside if allow_errors_outside else (), reseed
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    actual = pipeline_snapshots(script, workdir, *run_args, reseed=reseed)
    compared = 0
    for step in steps:
        assert step.name in actual, f"step {step.name} left no snapshot"
        for name, value in actual[step.name].items():
            if name in expected[step.name]:
                assert_same(value, expected[step.name][name], f"{notebook.name}: step {step.name}: {name}")
                compared += 1
    assert compared, "nothing was compared"
    return actual
