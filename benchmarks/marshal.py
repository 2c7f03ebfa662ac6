"""Marshalling figures: kale's in-step save+load against bare numpy and plain dill.

    python -m benchmarks.marshal            full sizes (a 1 GiB array, a 1,000,000-row frame)
    python -m benchmarks.marshal --quick    small sizes, same rows (for CI)

``run(quick)`` returns table rows (:class:`benchmarks.common.Result`) for
``python -m benchmarks``; every ratio comes from the same run, side by side. Targets (from the issue):
ndarray save+load >= 0.8x the speed of bare np.save+np.load and >= 3x dill; a mixed
10-column DataFrame >= 3x dill with exact dtypes; peak extra memory while saving
<= 0.2x the object (<= 1.2x in total); <= 5 ms per small variable.

With ``kale`` (from :func:`benchmarks.kale_runs.marshal_baseline`), the ndarray and
each DataFrame also get a row against Kale 2.3.0's ``kale.marshal`` on the same object,
measured right after ours (same sizes, same seed, same number of round trips).
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import tempfile
import time
import tracemalloc

from kale_nbconvert.runtime import _kale_marshal_load, _kale_marshal_save

from .common import Result, format_table

GROUP = "marshalling"


def _interleaved(functions: dict, repeat: int, cleanup) -> dict:
    """Best time of each function, run in turns (disk and page-cache noise hits all
    alike); ``cleanup()`` runs untimed after each call."""
    best = {name: float("inf") for name in functions}
    for _ in range(repeat):
        for name, function in functions.items():
            gc.collect()
            start = time.perf_counter()
            result = function()
            best[name] = min(best[name], time.perf_counter() - start)
            del result
            cleanup()
    return best


def _workdir() -> str:
    """A RAM disk when there is one (serialization cost, not the disk, is measured);
    ``KALE_BENCH_DIR`` overrides."""
    root = os.environ.get("KALE_BENCH_DIR")
    if not root and os.path.isdir("/dev/shm") and shutil.disk_usage("/dev/shm").free > 4 * 2**30:
        root = "/dev/shm"
    return tempfile.mkdtemp(prefix="kale-marshal-bench-", dir=root)


def _peak_extra(function) -> int:
    """Bytes allocated at the peak while ``function`` runs (what it adds to memory)."""
    gc.collect()
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _dill_roundtrip(obj, path):
    import dill

    with open(path, "wb") as handle:
        dill.dump(obj, handle, protocol=dill.HIGHEST_PROTOCOL)
    with open(path, "rb") as handle:
        return dill.load(handle)


def _kale_roundtrip(obj, path):
    _kale_marshal_save(obj, path)
    return _kale_marshal_load(path)


def _mixed_frame(rows: int, text="str"):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "int64": rng.integers(0, 1_000_000, rows),
            "int32": rng.integers(0, 1000, rows).astype("int32"),
            "float64": rng.random(rows),
            "float32": rng.random(rows).astype("float32"),
            "bool": rng.random(rows) > 0.5,
            "text": pd.Series(rng.integers(0, 100_000, rows)).map("item-{}".format).astype(text),
            "category": pd.Categorical.from_codes(rng.integers(0, 5, rows), list("abcde")),
            "when": pd.date_range("2020-01-01", periods=rows, freq="s", tz="Europe/Paris"),
            "nullable": pd.array(rng.integers(0, 10, rows), dtype="Int64"),
            "city": pd.Series(rng.choice(["Athens", "Berlin", "Lisbon", "Oslo"], rows)).astype(text),
        }
    )


def _vs_kale(label, ours, kale, spec, folder) -> list[Result]:
    """Our best save+load time against Kale 2.3.0's on the object ``spec`` describes
    (no row without ``kale``; a row with the reason when Kale's is unavailable)."""
    if kale is None:
        return []
    kale_folder = os.path.join(folder, "kale-2.3.0")
    os.makedirs(kale_folder, exist_ok=True)
    try:
        base, note = kale({**spec, "folder": kale_folder, "repeat": 3}), ""
    except Exception as error:  # a missing baseline must not lose our figures
        base, note = None, f"baseline unavailable: {error}"[:300]
    finally:
        shutil.rmtree(kale_folder, ignore_errors=True)
    return [Result(GROUP, f"{label} save+load vs Kale 2.3.0", ours, base,
                   "kale 2.3.0 marshal", "s", 1.0, "ratio", note=note)]


def run(quick: bool = False, kale=None) -> list[Result]:
    import numpy as np
    import pandas as pd

    rows = []
    folder = _workdir()
    try:
        path = os.path.join(folder, "value")

        def cleanup():
            for leftover in (path, path + ".npy", path + ".dill"):
                if os.path.isdir(leftover):
                    shutil.rmtree(leftover)
                elif os.path.exists(leftover):
                    os.remove(leftover)

        # -- a large float64 ndarray -------------------------------------------------
        size = (64 if quick else 1024) * 2**20
        array = np.random.default_rng(0).random(size // 8)

        def bare():
            np.save(path + ".npy", array)
            return np.load(path + ".npy")

        best = _interleaved(
            {
                "bare": bare,
                "kale": lambda: _kale_roundtrip(array, path),
                "dill": lambda: _dill_roundtrip(array, path + ".dill"),
            },
            3,
            cleanup,
        )
        bare_s, kale_s, dill_s = best["bare"], best["kale"], best["dill"]
        _kale_marshal_save(array, path)
        back = _kale_marshal_load(path)
        cleanup()
        assert type(back) is np.ndarray and back.dtype == array.dtype and np.array_equal(back, array)
        label = f"ndarray {size // 2**20} MiB float64"
        rows += [  # time ratios: >= 0.8x the throughput is <= 1.25x the time
            Result(GROUP, f"{label} save+load", kale_s, bare_s, "np.save+np.load", "s", 1.25, "ratio"),
            Result(GROUP, f"{label} save+load", kale_s, dill_s, "dill", "s", 1 / 3, "ratio"),
        ]
        rows += _vs_kale(label, kale_s, kale, {"kind": "ndarray", "bytes": size}, folder)
        peak = _peak_extra(lambda: _kale_marshal_save(array, path))
        total = (array.nbytes + peak) / array.nbytes
        rows.append(Result(GROUP, f"{label}: peak memory saving / object size", total, None, "", "x", 1.2, "value"))
        del array, back
        cleanup()

        # -- a mixed 10-column DataFrame, text as pandas' default str dtype and as object --
        n = 100_000 if quick else 1_000_000
        for text in ("str", "object"):
            frame = _mixed_frame(n, text)
            best = _interleaved(
                {
                    "kale": lambda: _kale_roundtrip(frame, path),
                    "dill": lambda: _dill_roundtrip(frame, path + ".dill"),
                },
                3,
                cleanup,
            )
            kale_s, dill_s = best["kale"], best["dill"]
            _kale_marshal_save(frame, path)
            back = _kale_marshal_load(path)
            cleanup()
            exact = list(back.dtypes) == list(frame.dtypes) and back.equals(frame)
            pd.testing.assert_frame_equal(back, frame)
            label = f"DataFrame {n:,} rows x 10 mixed columns, text as {text}"
            rows.append(Result(GROUP, f"{label} save+load", kale_s, dill_s, "dill", "s", 1 / 3, "ratio",
                               note="dtypes exact" if exact else "DTYPES DIFFER"))
            rows += _vs_kale(label, kale_s, kale, {"kind": "frame", "rows": n, "text": text}, folder)
            object_size = int(frame.memory_usage(deep=True).sum())
            peak = _peak_extra(lambda: _kale_marshal_save(frame, path))
            total = (object_size + peak) / object_size
            rows.append(Result(GROUP, f"{label}: peak memory saving / object size", total, None, "", "x", 1.2, "value"))
            del frame, back
            cleanup()

        # -- information: an object-dtype column of distinct strings -------------------
        # (pickle memoises every string it writes: about 70 bytes each at the peak)
        strings = pd.DataFrame({"object": pd.Series(np.arange(n)).map("v{}".format).astype(object)})
        object_size = int(strings.memory_usage(deep=True).sum())
        peak = _peak_extra(lambda: _kale_marshal_save(strings, path))
        rows.append(Result(
            GROUP, f"object-dtype column of {n:,} distinct strings: peak memory saving / object size",
            (object_size + peak) / object_size, None, "", "x",
        ))
        del strings

        # -- per-variable overhead for small objects --------------------------------
        small = {"accuracy": 0.93, "labels": ["a", "b"], "n": 3}
        count = 200
        start = time.perf_counter()
        for index in range(count):
            _kale_roundtrip(small, os.path.join(folder, f"small{index}"))
        per = (time.perf_counter() - start) / count * 1000
        rows.append(Result(GROUP, "small variable: save+load per variable", per, None, "", "ms", 5, "value"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def main(argv=None) -> int:
    quick = "--quick" in (argv if argv is not None else sys.argv[1:])
    results = run(quick)
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
