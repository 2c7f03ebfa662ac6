"""Run-time check figures: what a step pays to prove its inputs did not change unseen.

    python -m benchmarks.check            full sizes (a 1 GiB array, a 1,000,000-row frame)
    python -m benchmarks.check --quick    small sizes, same rows (for CI)

A step fingerprints each input that later steps also read when it loads it (given the
artifact folder, as ``_kale_watch_start`` gives it: its kale.json says which object
columns saving found to hold only strings), checks it after its cells
(``_kale_fingerprint`` / ``_kale_fingerprint_changed`` in
``kale_nbconvert/embedded/divergence.py``) and, for a cheap check, after each cell
too. Targets (issue 12): save+load+check at most 1.05x save+load for the 1 GiB float64
ndarray and the 1M-row mixed DataFrame of ``marshal.py``, and at most 1 ms per small input.

The ratios are the best of interleaved round trips (7 for the array, 5 for the frames;
3 with ``--quick``): both sides run the same save+load, so the ratio is the check's
cost plus page-cache noise. So each also gets the check's own time (median of
repeated fingerprint+check on the loaded value, no I/O) over the same save+load
(target 0.05x, the same 5% without the noise), and the cost of one more check after a
cell (report only: a step checks after a cell only when that costs at most 5% of the
cells run since the last check).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time

from kale_nbconvert.runtime import (
    _kale_fingerprint,
    _kale_fingerprint_changed,
    _kale_hash_pickler,
    _kale_marshal_load,
    _kale_marshal_save,
    _kale_path_size,
    _kale_watch_cell,
    _kale_watch_finish,
    _kale_watch_start,
)

from .common import Result, format_table
from .marshal import _benchmark_object, _interleaved, _workdir

GROUP = "run-time check"


def _checked_roundtrip(obj, path, pickler):
    """save+load, then what the step adds: the fingerprint at load, the check at the end."""
    _kale_marshal_save(obj, path)
    back = _kale_marshal_load(path)
    fingerprint = _kale_fingerprint(back, _kale_path_size(path), None, pickler, path)
    assert fingerprint["kind"] != "skip"
    assert not _kale_fingerprint_changed(fingerprint, back, pickler)
    return back


def _plain_roundtrip(obj, path):
    _kale_marshal_save(obj, path)
    return _kale_marshal_load(path)


def _median_seconds(function, repeat):
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _rows_for(label, obj, path, cleanup, repeat, pickler) -> list[Result]:
    """save+load+check vs save+load, the check alone, one more check after a cell."""
    best = _interleaved(
        {"plain": lambda: _plain_roundtrip(obj, path), "checked": lambda: _checked_roundtrip(obj, path, pickler)},
        repeat, cleanup,
    )
    _kale_marshal_save(obj, path)
    back = _kale_marshal_load(path)
    size = _kale_path_size(path)
    fingerprint = _kale_fingerprint(back, size, None, pickler, path)
    kind = fingerprint["kind"]
    alone = _median_seconds(
        lambda: _kale_fingerprint_changed(_kale_fingerprint(back, size, None, pickler, path), back, pickler), 5)
    again = _median_seconds(lambda: _kale_fingerprint_changed(fingerprint, back, pickler), 5)
    back = fingerprint = None
    cleanup()
    return [
        Result(GROUP, f"{label} save+load+check vs save+load", best["checked"], best["plain"],
               "save+load", "s", 1.05, "ratio", note=f"{kind} check"),
        Result(GROUP, f"{label}: fingerprint at load + check at the end vs save+load", alone * 1000,
               best["plain"] * 1000, "save+load", "ms", 0.05, "ratio", note=f"{kind} check alone"),
        Result(GROUP, f"{label}: one more check after a cell", again * 1000, None, "", "ms"),
    ]


def _small_inputs_rows(folder, count=20) -> list[Result]:
    """A step's whole check for ``count`` small inputs (start, a check after one cell, the
    final check), per input, against their save+load."""
    small = {"accuracy": 0.93, "labels": ["a", "b"], "n": 3}
    inputs = {}
    for index in range(count):
        path = os.path.join(folder, f"small{index}")
        _kale_marshal_save(small, path)
        inputs[f"v{index}"] = (path, "producer")
    watched = {name: ["later"] for name in inputs}

    def plain():
        return {name: _kale_marshal_load(path) for name, (path, _) in inputs.items()}

    def checked():
        namespace = plain()
        watch = _kale_watch_start("bench.ipynb", "step", watched, inputs, namespace)
        _kale_watch_cell(watch, namespace, 1, 0.001)
        assert _kale_watch_finish("bench.ipynb", "step", watch, namespace) == []

    load = _median_seconds(plain, 50)
    total = _median_seconds(checked, 50)
    per = (total - load) / count * 1000
    return [Result(GROUP, f"small input: check per input (a step with {count}; start, one cell, end)",
                   per, None, "", "ms", 1.0, "value",
                   note=f"its load alone: {load / count * 1000:.3f} ms")]


def run(quick: bool = False) -> list[Result]:
    rows = []
    folder = _workdir()
    pickler = _kale_hash_pickler()
    try:
        path = os.path.join(folder, "value")

        def cleanup():
            if os.path.isdir(path):
                shutil.rmtree(path)

        size = (64 if quick else 1024) * 2**20
        array = _benchmark_object("ndarray", size)
        rows += _rows_for(f"ndarray {size // 2**20} MiB float64", array, path, cleanup, 3 if quick else 7, pickler)
        array = None
        n = 100_000 if quick else 1_000_000
        for text in ("str", "object"):
            frame = _benchmark_object(text, n)
            rows += _rows_for(f"DataFrame {n:,} rows x 10 mixed columns, text as {text}", frame, path,
                              cleanup, 3 if quick else 5, pickler)
            frame = None
        rows += _small_inputs_rows(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def main(argv=None) -> int:
    quick = "--quick" in (argv if argv is not None else sys.argv[1:])
    print(format_table(run(quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
