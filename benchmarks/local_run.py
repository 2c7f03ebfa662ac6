"""Local-run figures: what ``python nb.py --local`` costs compared with running the notebook.

* Per-step overhead: chains of trivial ``x = x + 1`` steps of two lengths; the
  difference of their wall times over the difference of their step counts cancels the
  fixed start-up and leaves what each extra step costs. Baseline: the same chain
  written by hand as plain KFP components run with kfp.local (the floor of any
  kfp.local run), so the ratio shows what our runtime adds on top of kfp. A second
  row shows what importing the script costs per step (as ``kfp dsl compile`` does: the
  pipeline is built then; a ``--local`` run builds it once, in its command line).
* Each example end to end with ``--local`` against nbclient running the same notebook
  top to bottom in one kernel (what the user would otherwise do); the stdlib example
  (candies) also has an absolute target.
* Kale's titanic example (from ``../shared/kale-notebooks``, with its CSVs; absent
  there, the row says so): a real notebook whose 9 steps import pandas, seaborn and
  scikit-learn, the case the warm worker exists for. ``--isolated`` (a fresh
  interpreter per step, as before) is measured beside it.
* Peak RSS of a local run (largest process of its tree) against nbclient's.
* ``--jobs``: candies (a fan-out of three kids, tiny steps) and a generated fan-out
  whose kids each do a fixed amount of pure-Python work, run with the default
  ``--jobs`` (the number of cores) against ``--jobs 1`` in the same run: what running
  independent branches at once gains on this machine, and that it costs nothing where
  the steps are too small to gain.
"""

from __future__ import annotations

import os
import shutil
import sys

import nbformat

from . import common
from .common import Result, run_measured, unavailable
from .generate import NBCLIENT_RUNNER, increment_notebook, plain_kfp_script

PER_STEP_TARGET_S = 0.05
STDLIB_EXAMPLE = "candies.ipynb"
STDLIB_TARGET_S = 2.0
STDLIB_VS_NOTEBOOK_TARGET = 0.8
VS_NOTEBOOK_TARGET = 1.1
TITANIC = "kale__examples__titanic-ml-dataset__titanic_dataset_ml.ipynb"
TITANIC_VS_NOTEBOOK_TARGET = 1.5
JOBS_NO_GAIN_TARGET = 1.05  # tiny steps: running them at once must not cost
JOBS_FAN_OUT_TARGET = 0.8  # 4 busy kids on 2 or more cores
FAN_OUT_KIDS = 4
FAN_OUT_WORK = 20_000_000  # squares each kid sums: about a second of one core


def _write_script(nb, folder, name):
    """Convert in process (the conversion is measured elsewhere) and write the script."""
    from kale_nbconvert.exporter import KaleExporter

    script, _ = KaleExporter().from_notebook_node(nb, resources={"metadata": {"name": name}})
    path = folder / f"{name}.py"
    path.write_text(script, encoding="utf-8")
    return path


def _interleaved(ctx, commands):
    """Run each (argv, cwd) in turn, warm-up rounds first; samples per command."""
    samples = [[] for _ in commands]
    for round_ in range(ctx.warmup + ctx.runs):
        for kept, (argv, cwd) in zip(samples, commands):
            measured = run_measured(argv, cwd=cwd)
            if round_ >= ctx.warmup:
                kept.append(measured)
    return samples


IMPORT_ONLY = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='imported')"


def per_step_overhead(ctx):
    """The per-step figure, and what importing the script costs per step.

    The second row is what ``kfp dsl compile`` pays: imported (not run), the script
    builds its pipeline, and kfp's ``dsl.component`` reads the source of every
    function each component ships (the whole in-step runtime) anew for every step.
    A ``--local`` run builds it once, in its command line, where kfp reads each
    source once (``_kale_cache_function_sources``)."""
    small, large = (2, 4) if ctx.quick else (4, 20)
    figure = f"--local per-step overhead, (wall({large}) - wall({small})) / {large - small}"
    ctx.log(f"local run: trivial chains of {small} and {large} steps")
    try:
        commands = []
        for steps in (small, large):
            work = common.scratch_dir(f"increment-{steps}")
            script = _write_script(increment_notebook(steps), work, f"increment_{steps}")
            commands.append(([sys.executable, script, "--local"], work))
            plain = work / f"plain_{steps}.py"
            plain.write_text(plain_kfp_script(steps))
            commands.append(([sys.executable, plain, work / "plain-runs"], work))
            commands.append(([sys.executable, "-c", IMPORT_ONLY, script], work))
        ours_small, plain_small, import_small, ours_large, plain_large, import_large = (
            common.median_seconds(s) for s in _interleaved(ctx, commands))
    except Exception as error:
        return [unavailable("local run", figure, "plain kfp.local", "s", str(error)[:300],
                            target=PER_STEP_TARGET_S, target_on="value")]
    steps = large - small
    return [
        Result("local run", figure, (ours_large - ours_small) / steps,
               (plain_large - plain_small) / steps, "plain kfp.local", "s",
               PER_STEP_TARGET_S, "value"),
        Result("local run", "importing the script, as kfp dsl compile does (its pipeline "
               "built), per step: "
               f"(wall({large}) - wall({small})) / {large - small}",
               (import_large - import_small) / steps, None, "-", "s"),
    ]


def _step_count(nb):
    names = set()
    for cell in nb.cells:
        for tag in cell.get("metadata", {}).get("tags", []):
            kind, _, name = tag.partition(":")
            if kind in ("step", "block") and name:
                names.add(name)
    return len(names)


def examples_vs_notebook(ctx):
    results, ours_rss, nb_rss = [], [], []
    for notebook in ctx.examples:
        figure = f"{notebook.name} --local vs nbclient"
        ctx.log(f"local run: {notebook.name} and nbclient")
        work = common.scratch_dir(f"local-{notebook.stem}")
        try:
            nb = nbformat.read(notebook, as_version=4)
            shutil.copy(notebook, work / notebook.name)
            script = _write_script(nb, work, notebook.stem)
            runner = work / "run_nbclient.py"
            runner.write_text(NBCLIENT_RUNNER)
            ours, reference = _interleaved(ctx, [
                ([sys.executable, script, "--local"], work),
                ([sys.executable, runner, work / notebook.name, work], work),
            ])
        except Exception as error:  # e.g. an example being edited right now
            results.append(unavailable("local run", figure, "nbclient", "s",
                                       str(error)[:300], target=VS_NOTEBOOK_TARGET,
                                       target_on="ratio"))
            continue
        ours_s, ref_s = common.median_seconds(ours), common.median_seconds(reference)
        ours_rss.append((common.max_rss(ours), notebook.name))
        nb_rss.append(common.max_rss(reference))
        target = STDLIB_VS_NOTEBOOK_TARGET if notebook.name == STDLIB_EXAMPLE else VS_NOTEBOOK_TARGET
        results.append(Result("local run", figure, ours_s, ref_s, "nbclient", "s", target, "ratio"))
        if notebook.name == STDLIB_EXAMPLE:
            results.append(Result(
                "local run", f"{notebook.name} ({_step_count(nb)} steps, stdlib) end to end",
                ours_s, ref_s, "nbclient", "s", STDLIB_TARGET_S, "value"))
    if not any(r.figure.startswith(STDLIB_EXAMPLE) for r in results):
        results.append(unavailable("local run", f"{STDLIB_EXAMPLE} end to end", "nbclient",
                                   "s", "example not present (or not selected)",
                                   target=STDLIB_TARGET_S, target_on="value"))
    if ours_rss:
        rss, name = max(ours_rss)
        results.append(Result("memory", f"peak RSS, --local (largest: {name})", rss,
                              max(nb_rss), "nbclient", "MiB"))
    return results


def titanic_vs_notebook(ctx):
    """Kale's titanic example: --local (forked steps) and --isolated against nbclient."""
    figure = "Kale's titanic (9 steps, pandas/seaborn/sklearn) --local vs nbclient"
    source = common.REPO.parent / "shared" / "kale-notebooks" / TITANIC
    data = source.with_suffix(".files")
    if not source.exists() or not data.is_dir():
        return [unavailable("local run", figure, "nbclient", "s", "../shared/kale-notebooks absent",
                            target=TITANIC_VS_NOTEBOOK_TARGET, target_on="ratio")]
    ctx.log("local run: Kale's titanic, forked and isolated, and nbclient")
    work = common.scratch_dir("local-titanic")
    try:
        shutil.copytree(data, work, dirs_exist_ok=True)
        shutil.copy(source, work / "titanic.ipynb")
        script = _write_script(nbformat.read(source, as_version=4), work, "titanic")
        runner = work / "run_nbclient.py"
        # One of its cells calls seaborn's catplot the pre-0.12 way and raises today:
        # "Run all" goes on past it, as a user's Jupyter would with that cell skipped.
        runner.write_text(NBCLIENT_RUNNER.replace('kernel_name="python3",',
                                                  'kernel_name="python3", allow_errors=True,'))
        forked, isolated, reference = _interleaved(ctx, [
            ([sys.executable, script, "--local"], work),
            ([sys.executable, script, "--local", "--isolated"], work),
            ([sys.executable, runner, work / "titanic.ipynb", work], work),
        ])
    except Exception as error:
        return [unavailable("local run", figure, "nbclient", "s", str(error)[:300],
                            target=TITANIC_VS_NOTEBOOK_TARGET, target_on="ratio")]
    forked_s, isolated_s, ref_s = (common.median_seconds(s) for s in (forked, isolated, reference))
    return [
        Result("local run", figure, forked_s, ref_s, "nbclient", "s",
               TITANIC_VS_NOTEBOOK_TARGET, "ratio"),
        Result("local run", "Kale's titanic --local --isolated (a fresh interpreter per step) vs nbclient",
               isolated_s, ref_s, "nbclient", "s"),
    ]


def fan_out_notebook(kids, work):
    """``root -> kid1..kidN -> join``: each kid sums ``work`` squares (pure Python: a
    fixed amount of one core's work, the same however many kids run at once), so
    running the kids at once can only gain by using more cores."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kubeflow_notebook"] = {"pipeline_name": f"fan-out-{kids}"}
    cells = [(f"n = {work}", ["step:root"])]
    for kid in range(1, kids + 1):
        cells.append((f"part{kid} = sum(i * i for i in range(n)) + {kid}",
                      [f"step:kid{kid}", "prev:root"]))
    cells.append(("total = " + " + ".join(f"part{kid}" for kid in range(1, kids + 1)),
                  ["step:join", *(f"prev:kid{kid}" for kid in range(1, kids + 1))]))
    for source, tags in cells:
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = tags
        nb.cells.append(cell)
    return nb


def jobs_vs_sequential(ctx):
    """The default ``--jobs`` (one step per core) against ``--jobs 1``, interleaved, on
    candies (tiny kids: nothing to gain, nothing may be lost) and on a fan-out of busy
    kids (the gain the cores allow)."""
    cores = os.cpu_count() or 1
    kids, work = (2, FAN_OUT_WORK // 10) if ctx.quick else (FAN_OUT_KIDS, FAN_OUT_WORK)
    candies = common.EXAMPLES / STDLIB_EXAMPLE
    shapes = [
        (STDLIB_EXAMPLE, "candies", JOBS_NO_GAIN_TARGET,
         lambda: nbformat.read(candies, as_version=4)),
        (f"fan-out of {kids} kids ({work / 1e6:g}M squares each)", f"fan_out_{kids}",
         # --quick's kids are too small to gain: the row only shows the harness works
         JOBS_FAN_OUT_TARGET if cores > 1 and not ctx.quick else None,
         lambda: fan_out_notebook(kids, work)),
    ]
    results = []
    for label, stem, target, notebook in shapes:
        figure = f"{label} --local, default --jobs ({cores} cores) vs --jobs 1"
        ctx.log(f"local run: {label}, --jobs {cores} and --jobs 1")
        work_dir = common.scratch_dir(f"jobs-{stem}")
        try:
            script = _write_script(notebook(), work_dir, stem)
            parallel, sequential = _interleaved(ctx, [
                ([sys.executable, script, "--local"], work_dir),
                ([sys.executable, script, "--local", "--jobs", "1"], work_dir),
            ])
        except Exception as error:  # e.g. candies being edited right now
            results.append(unavailable("local run", figure, "--jobs 1", "s", str(error)[:300],
                                       target=target, target_on="ratio"))
            continue
        results.append(Result("local run", figure, common.median_seconds(parallel),
                              common.median_seconds(sequential), "--jobs 1", "s", target,
                              "ratio" if target is not None else None))
    return results


def run(ctx):
    return (per_step_overhead(ctx) + examples_vs_notebook(ctx) + jobs_vs_sequential(ctx)
            + ([] if ctx.quick else titanic_vs_notebook(ctx)))


def main(argv=None) -> int:
    """``python -m benchmarks.local_run [--quick] [--runs N]``: only the ``--jobs`` rows
    (a few minutes), with the machine header of the full table; the other rows of this
    module run in the full harness (``python -m benchmarks``)."""
    import argparse

    from .__main__ import Context

    parser = argparse.ArgumentParser(prog="python -m benchmarks.local_run",
                                     description="the --local --jobs rows only")
    parser.add_argument("--quick", action="store_true", help="one run, no warm-up, small fan-out")
    parser.add_argument("--runs", type=int, default=5, help="measured runs after one warm-up")
    args = parser.parse_args(argv)
    ctx = Context(quick=args.quick, runs=1 if args.quick else max(1, args.runs),
                  warmup=0 if args.quick else 1, no_kale=True, examples=[])
    options = ("quick: 1 run, no warm-up" if ctx.quick
               else f"median of {ctx.runs} runs after {ctx.warmup} warm-up")
    info = common.machine_info()  # its load average is the one at the start
    results = jobs_vs_sequential(ctx)
    print(common.format_header(info, options))
    print()
    print(common.format_table(results))
    common.remove_scratch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
