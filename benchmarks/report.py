"""Report figures: what a step's HTML report (issue 14) adds to the step.

    python -m benchmarks.report            median of 5 runs after 1 warm-up
    python -m benchmarks.report --quick    one run, fewer steps (for CI)

Both kinds of step run side by side in the same ``--local`` run: one pipeline whose
steps each have three cells that print and one that draws a matplotlib figure, every
other step tagged ``report:disabled``, chained by ``prev:`` so they alternate. A
step's time is its ``duration_s`` in ``kale-run.json`` (kfp.local's task, the same for
both kinds); the figure is the median step with a report minus the median step
without: the tee, the in-process IPython shell, the figure drawn as a PNG (a step
without a report never draws it) and the page written. Target: at most 0.2 s. The
first pair of steps of each run warms up and is left out.

The same with ``--isolated`` (a fresh interpreter per step, as on a cluster) is
reported beside it: there a step with a report also pays IPython's import (about half
a second) unless its cells use IPython anyway (a magic, ``display``); the warm worker
of a plain ``--local`` run imports it once for all steps.
"""

from __future__ import annotations

import json
import statistics
import sys

from . import common
from .common import Result, run_measured, unavailable

GROUP = "report"
TARGET_S = 0.2
STEP_CELLS = [
    "print('loading', list(range(5)))",
    "for i in range(3):\n    print('row', i, 'of', 3)",
    "print('summary:', {'mean': 1.5, 'n': 3})",
    "fig, ax = plt.subplots()\nax.plot(range(10), [i * i for i in range(10)])\nax.set_title('squares')",
]


def report_notebook(pairs):
    """``pairs`` steps with a report and as many with ``report:disabled``, alternating."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("import matplotlib.pyplot as plt")
    cell.metadata["tags"] = ["imports"]
    nb.cells.append(cell)
    previous = None
    for index in range(2 * pairs):
        name = f"{'with' if index % 2 == 0 else 'without'}_{index // 2}"
        for number, source in enumerate(STEP_CELLS):
            cell = nbformat.v4.new_code_cell(source)
            tags = [f"step:{name}"] if number else [f"step:{name}"] + (
                [f"prev:{previous}"] if previous else []) + (["report:disabled"] if index % 2 else [])
            cell.metadata["tags"] = tags
            nb.cells.append(cell)
        previous = name
    return nb


def _durations(ctx, script, work, flags, runs, warmup):
    """Per-step seconds of each kind over ``runs`` runs of the script (after ``warmup``)."""
    import shutil

    kept = {"with": [], "without": []}
    for round_ in range(warmup + runs):
        runs_dir = work / "kale-local-runs"
        shutil.rmtree(runs_dir, ignore_errors=True)
        run_measured([sys.executable, script, "--local", *flags], cwd=work)
        (manifest,) = runs_dir.glob("*/kale-run.json")
        steps = json.loads(manifest.read_text(encoding="utf-8"))["steps"]
        if round_ < warmup:
            continue
        for name, step in steps.items():
            kind, _, pair = name.partition("-")
            if pair != "0":  # the first pair warms up
                kept[kind].append(step["duration_s"])
    return statistics.median(kept["with"]), statistics.median(kept["without"])


def run(ctx):
    from .local_run import _write_script

    pairs = 3 if ctx.quick else 5
    work = common.scratch_dir("report")
    try:
        script = _write_script(report_notebook(pairs), work, "report_cost")
    except Exception as error:  # noqa: BLE001 - the row says why
        return [unavailable(GROUP, "report per step", "report:disabled", "s", str(error)[:300],
                            target=TARGET_S, target_on="value")]
    results = []
    for flags, label, runs, target in (
        ((), "--local (warm worker)", ctx.runs, TARGET_S),
        (("--isolated",), "--local --isolated (a fresh interpreter per step)", min(ctx.runs, 2), None),
    ):
        figure = f"report added per step (3 cells of text, 1 figure), {label}"
        ctx.log(f"report: {2 * pairs} steps, {label}")
        try:
            with_report, without = _durations(ctx, script, work, flags, runs, ctx.warmup)
        except Exception as error:  # noqa: BLE001
            results.append(unavailable(GROUP, figure, "report:disabled", "s", str(error)[:300],
                                       target=target, target_on="value" if target else None))
            continue
        results.append(Result(GROUP, figure, with_report - without, without,
                              "step with report:disabled", "s", target,
                              "value" if target else None))
    return results


def main(argv=None) -> int:
    from .__main__ import Context

    quick = "--quick" in (argv if argv is not None else sys.argv[1:])
    ctx = Context(quick=quick, runs=1 if quick else 5, warmup=0 if quick else 1, no_kale=True,
                  examples=[])
    print(common.format_table(run(ctx)))
    common.remove_scratch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
