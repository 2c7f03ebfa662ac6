"""Conversion figures: how long ``jupyter nbconvert --to kale`` takes, and how it scales.

* Command line, per example: what a user waits for. Baselines measured in the same run:
  ``jupyter nbconvert --to python`` on the same notebook (nbconvert's own exporter: the
  floor of start-up + nbformat + nbconvert that any exporter pays) and Kale 2.3.0's
  ``kale --nb`` (the tool this replaces; by default it only writes the DSL script and
  compiles the YAML, uploading nothing).
* In process, generated notebooks of 100 / 1,000 / 5,000 cells: the analysis itself,
  without interpreter start-up, and whether it grows linearly with the notebook
  (per-cell time at 5,000 / per-cell time at 100; linear is about 1).
"""

from __future__ import annotations

import shutil
import time

from . import common, kale_baseline
from .common import Result, BenchmarkError, run_measured, unavailable
from .generate import big_cell_notebook, chain_notebook

CLI_TARGET_S = 1.0
SCALING_TARGET_S = 1.0  # 1,000 cells analysed in at most this
GROWTH_TARGET = 2.0  # per-cell time at 5,000 cells / at 100 cells


def cli_conversion(ctx):
    """Rows for each example: ours vs ``--to python``, ours vs Kale 2.3.0; plus peak RSS."""
    results, ours_rss, python_rss, kale_rss = [], [], [], []
    kale, kale_reason = (None, "skipped in --quick") if ctx.quick or ctx.no_kale else (
        kale_baseline.kale_executable(ctx.log))
    if ctx.no_kale and not ctx.quick:
        kale_reason = "skipped (--no-kale)"
    nbconvert = common.nbconvert_command()
    for notebook in ctx.examples:
        work = common.scratch_dir(f"convert-{notebook.stem}")
        shutil.copy(notebook, work / notebook.name)
        figure = f"nbconvert --to kale {notebook.name}"
        ctx.log(f"conversion: {notebook.name}")
        try:
            ours, base = [], []

            def once():
                ours.append(run_measured(
                    nbconvert + ["--to", "kale", notebook.name], cwd=work))
                base.append(run_measured(
                    nbconvert + ["--to", "python", notebook.name, "--output",
                                 f"{notebook.stem}_plain"], cwd=work))

            for _ in range(ctx.warmup + ctx.runs):
                once()
            del ours[:ctx.warmup], base[:ctx.warmup]
        except BenchmarkError as error:
            results.append(unavailable("conversion", figure, "--to python", "s", str(error),
                                       target=CLI_TARGET_S, target_on="value"))
            continue
        ours_s = common.median_seconds(ours)
        ours_rss.append(common.max_rss(ours))
        python_rss.append(common.max_rss(base))
        results.append(Result("conversion", figure, ours_s, common.median_seconds(base),
                              "--to python", "s", CLI_TARGET_S, "value"))
        kale_figure = f"{figure} vs Kale {kale_baseline.KALE_VERSION}"
        if kale is None:
            results.append(Result("conversion", kale_figure, ours_s, None,
                                  f"kale {kale_baseline.KALE_VERSION}", "s", 1.0, "ratio",
                                  note=f"baseline unavailable: {kale_reason}"))
            continue
        try:
            kale_dir = common.scratch_dir(f"kale-{notebook.stem}")
            shutil.copy(notebook, kale_dir / notebook.name)
            samples = common.repeat(
                lambda: run_measured([kale, "--nb", notebook.name], cwd=kale_dir),
                ctx.runs, ctx.warmup)
            kale_rss.append(common.max_rss(samples))
            results.append(Result("conversion", kale_figure, ours_s,
                                  common.median_seconds(samples),
                                  f"kale {kale_baseline.KALE_VERSION}", "s", 1.0, "ratio"))
        except BenchmarkError as error:
            results.append(Result("conversion", kale_figure, ours_s, None,
                                  f"kale {kale_baseline.KALE_VERSION}", "s", 1.0, "ratio",
                                  note=f"baseline failed: {error}"))
    if ours_rss:
        results.append(Result("memory", "peak RSS, nbconvert --to kale (largest example)",
                              max(ours_rss), max(python_rss), "--to python", "MiB"))
    if kale_rss:
        results.append(Result("memory", "peak RSS, nbconvert --to kale vs Kale "
                              f"{kale_baseline.KALE_VERSION} (largest example)",
                              max(ours_rss), max(kale_rss),
                              f"kale {kale_baseline.KALE_VERSION}", "MiB"))
    return results


def _time_in_process(exporter_class, nb, runs, warmup):
    """Median seconds of ``from_notebook_node`` with a fresh exporter each time (as the
    command line does), after ``warmup`` discarded runs."""
    def once():
        exporter = exporter_class()
        started = time.perf_counter()
        exporter.from_notebook_node(nb, resources={"metadata": {"name": "bench"}})
        return time.perf_counter() - started
    return common.median_seconds(common.repeat(once, runs, warmup))


def in_process_scaling(ctx):
    """Rows for 100 / 1,000 / 5,000 generated cells and the growth ratio."""
    from nbconvert.exporters import PythonExporter
    from kale_nbconvert.exporter import KaleExporter

    sizes = [100] if ctx.quick else [100, 1000, 5000]
    ours, base, results = {}, {}, []
    for cells in sizes:
        ctx.log(f"in-process conversion: {cells} cells")
        nb = chain_notebook(cells)
        runs = ctx.runs if cells <= 1000 else max(1, min(ctx.runs, 3))
        # In-process warm-up is cheap and keeps one-off imports out of the figure.
        warmup = 1
        figure = f"in-process conversion, {cells:,} cells ({cells // 10} steps)"
        try:
            ours[cells] = _time_in_process(KaleExporter, nb, runs, warmup)
        except Exception as error:  # a conversion error must not stop the harness
            results.append(unavailable("scaling", figure, "PythonExporter", "s",
                                       f"{type(error).__name__}: {error}"[:200]))
            continue
        base[cells] = _time_in_process(PythonExporter, nb, runs, warmup)
        target = (SCALING_TARGET_S, "value") if cells == 1000 else (None, None)
        results.append(Result("scaling", figure, ours[cells], base[cells],
                               "PythonExporter", "s", *target))
    if not ctx.quick:
        results.append(_one_big_cell(ctx))
    if 100 in ours and 5000 in ours:
        growth = (ours[5000] / 5000) / (ours[100] / 100)
        base_growth = (base[5000] / 5000) / (base[100] / 100)
        results.append(Result("scaling", "growth: per-cell time at 5,000 / at 100 cells",
                              growth, base_growth, "PythonExporter", "x",
                              GROWTH_TARGET, "value"))
    return results


def _one_big_cell(ctx, lines=180_000):
    """One step of a single 3 MB cell (generated code, as notebooks that inline data
    have): each stage reads the cell's syntax tree, parsed once per conversion."""
    from nbconvert.exporters import PythonExporter
    from kale_nbconvert.exporter import KaleExporter

    nb = big_cell_notebook(lines)
    size = len(nb.cells[0].source.encode())
    figure = f"in-process conversion, one cell of {size / 2**20:.1f} MiB ({lines:,} lines)"
    ctx.log(figure)
    runs = max(1, min(ctx.runs, 3))
    ours = _time_in_process(KaleExporter, nb, runs, 0)
    base = _time_in_process(PythonExporter, nb, runs, 0)
    return Result("scaling", figure, ours, base, "PythonExporter", "s")


def run(ctx):
    return cli_conversion(ctx) + in_process_scaling(ctx)
