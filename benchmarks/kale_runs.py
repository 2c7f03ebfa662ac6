"""Kale 2.3.0 at run time, not just at conversion: its generated pipeline on kfp.local,
and its marshalling, each measured side by side with ours in the same run.

Why: the conversion figures only compare the compilers. What a user waits for is the
run, and Kale 2.3.0 runs every step in a fresh Jupyter kernel (``jputils.run_code``)
after a ``pip install`` of its ``packages_to_install`` (kfp.local's SubprocessRunner
runs that command too, in the current environment), and passes data through
``kale.marshal`` (numpy: ``np.save``; pandas: ``to_pickle``; anything else: dill).

* Local run: ``kale --nb candies.ipynb`` (compile only, no upload) in the baseline venv,
  then the generated ``auto_generated_pipeline`` is called under kfp.local
  (``SubprocessRunner(use_venv=False)``, the venv's kfp) by :data:`KFP_LOCAL_DRIVER`;
  against our ``python candies.py --local``. Kale 2.3.0 writes string pipeline
  parameters into the step code as ``name = '{value}'``, so a default containing a
  quote (candies' ``shop_name``) is a SyntaxError in the first step. The harness first
  runs the pipeline as generated; if that fails, it says why in the row's note and
  measures the same pipeline with the quotes removed from such string parameters
  (the steps do the same work), or reports the row as unavailable.
* Marshalling: the objects of :mod:`benchmarks.marshal` (same construction code, same
  seed, built before the clock starts) saved and loaded with ``kale.marshal`` in the
  venv's Python; best of the same number of round trips as ours. numpy and pandas are
  installed into the venv at the versions of the measured environment, so only the
  marshalling differs.

Both are skipped with ``--quick`` and ``--no-kale`` (the row then says so).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import shutil
import sys

import nbformat

from . import common, kale_baseline
from .common import BenchmarkError, Result, run_measured, unavailable

KALE = f"kale {kale_baseline.KALE_VERSION}"
LOCAL_TARGET = 1.0      # ratio: ours no slower than Kale's pipeline on kfp.local
MARSHAL_TARGET = 1.0    # ratio: our save+load no slower than Kale's
MAX_PIPELINE_RUNS = 3   # a Kale run of candies takes about a minute: cap the repeats

KFP_LOCAL_DRIVER = '''\
"""Run a Kale-generated DSL script's pipeline on kfp.local (no cluster, no upload).

usage: python drive.py SCRIPT.kale.py PIPELINE_ROOT [--strip-quotes]
--strip-quotes: pass string parameters whose default holds a quote without the quotes.
"""
import importlib.util
import sys

from kfp import local

local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=sys.argv[2])
spec = importlib.util.spec_from_file_location("kale_pipeline", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
pipeline = module.auto_generated_pipeline
arguments = {}
if "--strip-quotes" in sys.argv:
    for name, spec in pipeline.component_spec.inputs.items():
        if isinstance(spec.default, str) and ("'" in spec.default or '"' in spec.default):
            arguments[name] = spec.default.replace("'", "").replace('"', "")
    print("arguments:", arguments)
pipeline(**arguments)
'''


def _skip_reason(ctx):
    if ctx.quick:
        return "skipped in --quick"
    if ctx.no_kale:
        return "skipped (--no-kale)"
    return None


# ---------------------------------------------------------------- local run


def _failure(measured) -> str:
    """The useful lines of a failed Kale pipeline run: the failing task and the
    error Kale's ``jputils`` logged for the user's code."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", measured.stdout + measured.stderr)
    task = re.search(r"Task '([^']+)' finished with status FAILURE", text)
    errors = re.findall(r"\[ERROR\]\s+Error: (.+)", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = errors[0] if errors else (lines[-1] if lines else "no output")
    where = f"step {task.group(1)}: " if task else ""
    return f"exit {measured.returncode}, {where}{detail}"[:200]


def local_run(ctx) -> list[Result]:
    """One row: ``candies.py --local`` against Kale 2.3.0's pipeline on kfp.local."""
    from .local_run import STDLIB_EXAMPLE, _interleaved, _write_script

    figure = f"{STDLIB_EXAMPLE} --local vs Kale {kale_baseline.KALE_VERSION} pipeline on kfp.local"
    row = dict(target=LOCAL_TARGET, target_on="ratio")
    notebook = common.EXAMPLES / STDLIB_EXAMPLE
    reason = _skip_reason(ctx) or (None if notebook.exists() else "example not present")
    kale = None
    if reason is None:
        kale, reason = kale_baseline.kale_executable(ctx.log)
    if reason:
        return [unavailable("local run", figure, KALE, "s", reason, **row)]
    ctx.log(f"local run: {STDLIB_EXAMPLE} and Kale {kale_baseline.KALE_VERSION}'s pipeline")
    work = common.scratch_dir("kale-local-candies")
    try:
        shutil.copy(notebook, work / notebook.name)
        ours = [sys.executable, _write_script(nbformat.read(notebook, as_version=4), work,
                                              notebook.stem), "--local"]
        run_measured([kale, "--nb", notebook.name], cwd=work)
        generated = sorted((work / ".kale").glob("*.kale.py"))
        if not generated:
            raise BenchmarkError("kale --nb wrote no .kale/*.kale.py")
        driver = work / "run_kale_pipeline.py"
        driver.write_text(KFP_LOCAL_DRIVER)
        theirs = [kale_baseline.VENV / "bin" / "python", driver, generated[0], work / "kfp-root"]
        # The first run of each side is the warm-up; Kale's also checks that it runs.
        run_measured(ours, cwd=work)
        note = ""
        first = run_measured(theirs, cwd=work, check=False)
        if first.returncode != 0:
            note = (f"as generated it fails ({_failure(first)}); measured with the quotes "
                    "removed from string parameters")
            theirs.append("--strip-quotes")
            second = run_measured(theirs, cwd=work, check=False)
            if second.returncode != 0:
                return [unavailable("local run", figure, KALE, "s",
                                    f"Kale's pipeline fails on kfp.local: {_failure(first)}; "
                                    f"with quotes removed: {_failure(second)}", **row)]
        rounds = dataclasses.replace(ctx, runs=min(ctx.runs, MAX_PIPELINE_RUNS), warmup=0)
        ours_s, theirs_s = (common.median_seconds(s) for s in
                            _interleaved(rounds, [(ours, work), (theirs, work)]))
    except Exception as error:  # never let the baseline stop the harness
        return [unavailable("local run", figure, KALE, "s", str(error)[:300], **row)]
    return [Result("local run", figure, ours_s, theirs_s, f"{KALE} on kfp.local", "s",
                   note=note, **row)]


# ---------------------------------------------------------------- marshalling

MARSHAL_CHILD = '''\
"""Best-of-N save+load of one object with Kale 2.3.0's kale.marshal; prints JSON."""
import gc
import json
import os
import shutil
import sys
import time

import numpy as np
import pandas as pd
from kale import marshal

{mixed_frame}

spec = json.loads(sys.argv[1])
if spec["kind"] == "ndarray":
    obj = np.random.default_rng(0).random(spec["bytes"] // 8)
else:
    obj = _mixed_frame(spec["rows"], spec["text"])
marshal.set_data_dir(spec["folder"])


def cleanup():
    for entry in os.listdir(spec["folder"]):
        path = os.path.join(spec["folder"], entry)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


best = float("inf")
for _ in range(spec["repeat"]):
    gc.collect()
    start = time.perf_counter()
    marshal.save(obj, "value")
    back = marshal.load("value")
    best = min(best, time.perf_counter() - start)
    if spec["kind"] == "ndarray":
        assert type(back) is np.ndarray and np.array_equal(back, obj)
    else:
        pd.testing.assert_frame_equal(back, obj)
    del back
    cleanup()
print(json.dumps({{"seconds": best, "file": marshal.get_backend(obj).file_type}}))
'''


def marshal_baseline(ctx):
    """A function ``spec -> seconds`` for :func:`benchmarks.marshal.run`: Kale 2.3.0's
    save+load of the object ``spec`` describes, in the venv's Python. It raises
    :class:`BenchmarkError` with the reason when the baseline is skipped or fails."""
    from .marshal import _mixed_frame

    python = kale_baseline.VENV / "bin" / "python"
    reason = _skip_reason(ctx)
    if reason is None and not python.exists():
        reason = f"{kale_baseline.VENV.name} missing (the conversion figures create it)"
    if reason is None:
        try:
            # the same numpy and pandas, and pyarrow if we have it (pandas 3 then keeps
            # str columns in Arrow): both sides save the very same kind of object
            versions = {name: common.installed_version(name) for name in ("numpy", "pandas", "pyarrow")}
            reason = kale_baseline.install_into_venv(
                [f"{name}=={version}" for name, version in versions.items() if version], ctx.log)
            child = common.scratch_dir("kale-marshal") / "kale_marshal_roundtrip.py"
            child.write_text(MARSHAL_CHILD.format(mixed_frame=inspect.getsource(_mixed_frame)))
        except Exception as error:  # our marshalling figures must not depend on it
            reason = f"{type(error).__name__}: {error}"
    if reason:
        def skipped(spec):
            raise BenchmarkError(reason)
        return skipped

    def measure(spec):
        ctx.log(f"marshalling: Kale {kale_baseline.KALE_VERSION}, {spec['kind']}")
        done = run_measured([python, child, json.dumps(spec)], cwd=spec["folder"], timeout=1200)
        return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
    return measure


def main(argv=None) -> int:
    """``python -m benchmarks.kale_runs [--runs N]``: only the Kale 2.3.0 run-time rows
    (with the marshalling rows of ours they are measured beside), to refresh them
    without the whole harness."""
    import argparse

    from .__main__ import Context
    from .marshal import run as marshal_run

    parser = argparse.ArgumentParser(prog="python -m benchmarks.kale_runs")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--marshal-only", action="store_true",
                        help="only the marshalling rows (ours, bare numpy, dill, Kale's marshal)")
    args = parser.parse_args(argv)
    ctx = Context(quick=False, runs=max(1, args.runs), warmup=1, no_kale=False, examples=[])
    try:
        if args.marshal_only:
            kale_baseline.kale_executable(ctx.log)  # creates the venv when missing
            results = marshal_run(False, kale=marshal_baseline(ctx))
        else:
            results = local_run(ctx) + marshal_run(False, kale=marshal_baseline(ctx))
    finally:
        common.remove_scratch()
    print(common.format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
