"""Synthetic notebooks and pipelines, sized on demand.

Why generated: the examples are small and fixed, so they cannot show how conversion
time grows with notebook size, nor separate the fixed cost of a local run from its
per-step cost. These generators make notebooks whose shape is known exactly.
"""

from __future__ import annotations

import nbformat


def _code(source, tags=()):
    cell = nbformat.v4.new_code_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def chain_notebook(cells: int, cells_per_step: int = 10) -> nbformat.NotebookNode:
    """``cells`` code cells, ``cells_per_step`` per step, ``prev:`` chaining each step
    to the one before. Every cell reads the variable the previous cell set (the first
    cell of a step reads the last one of the previous step) and sets a new one, so the
    name analysis has a real input/output to find at every step boundary."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kubeflow_notebook"] = {"pipeline_name": f"chain-{cells}"}
    previous = None
    for index in range(cells):
        step, position = divmod(index, cells_per_step)
        name = f"v{index}"
        source = f"{name} = {previous} + 1" if previous else f"{name} = 0"
        tags = []
        if position == 0:
            tags = [f"step:s{step}"] + ([f"prev:s{step - 1}"] if step else [])
        nb.cells.append(_code(source, tags))
        previous = name
    return nb


def big_cell_notebook(lines: int) -> nbformat.NotebookNode:
    """One step whose single cell has ``lines`` assignments (about 17 bytes each, as
    notebooks that inline data have), and a step after it reading one of them."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kubeflow_notebook"] = {"pipeline_name": "big-cell"}
    code = "\n".join(f"v{i % 1000} = {i} + 1" for i in range(lines))
    nb.cells += [_code(code, ["step:big"]), _code("print(v1)", ["step:after", "prev:big"])]
    return nb


def increment_notebook(steps: int) -> nbformat.NotebookNode:
    """``steps`` trivial steps in a chain, each doing ``x = x + 1``: the smallest pipeline
    whose run time is all per-step overhead (plus one fixed start-up)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kubeflow_notebook"] = {"pipeline_name": f"increment-{steps}"}
    nb.cells.append(_code("x = 0", ["step:s0"]))
    for step in range(1, steps):
        nb.cells.append(_code("x = x + 1", [f"step:s{step}", f"prev:s{step - 1}"]))
    return nb


def plain_kfp_script(steps: int) -> str:
    """The same ``x = x + 1`` chain written by hand with KFP lightweight components and
    run with kfp.local's SubprocessRunner (no venv): the floor any KFP-based local run
    pays per step, used as the baseline for our per-step overhead. Like our local runs
    it installs nothing (``install_kfp_package=False``)."""
    return f'''"""Hand-written KFP baseline: {steps} chained components, x = x + 1."""
import sys
from kfp import dsl, local


@dsl.component(install_kfp_package=False)
def start() -> int:
    return 0


@dsl.component(install_kfp_package=False)
def increment(x: int) -> int:
    return x + 1


@dsl.pipeline(name="plain-{steps}")
def plain():
    task = start()
    for _ in range({steps - 1}):
        task = increment(x=task.output)


if __name__ == "__main__":
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=sys.argv[1])
    plain()
'''


NBCLIENT_RUNNER = """Run a notebook top to bottom with nbclient (the reference a pipeline is compared to).
import sys
import nbformat
from nbclient import NotebookClient

nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=600, kernel_name="python3",
               resources={"metadata": {"path": sys.argv[2]}}).execute()
"""
NBCLIENT_RUNNER = "# " + NBCLIENT_RUNNER
