"""The run-time check of issue 12: a step that changes an input in place where static
analysis cannot see it, while a later step reads the same value, is caught when the
pipeline runs. ``--local`` fails on it (``--allow-divergence`` warns), the compiled
YAML (what a cluster runs) warns; nothing is said when nothing diverges.

The unseen changes go through computed attribute names (``getattr(x, "app" + "end")``)
and a callable from an installed module (``operator.methodcaller``): what no static
analysis of the cell can resolve. The second half unit-tests the fingerprints, one per
kind (``same``, ``hash``, ``mapped``, ``frame``, ``skip``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from helpers import convert, make_notebook, run_script, write_script
from kale_nbconvert import runtime
from kale_nbconvert.runtime import (
    _kale_divergence_message,
    _kale_fingerprint,
    _kale_fingerprint_changed,
    _kale_hash,
    _kale_marshal_load,
    _kale_marshal_save,
    _kale_watch_cell,
    _kale_watch_finish,
    _kale_watch_start,
)

BIG = 2_621_440  # float64 elements: 20 MiB, above the 16 MiB from which arrays load mapped


def _output(result):
    return result.stdout + result.stderr


def _fan_out(change, read="total = sum(data)"):
    """make -> change (the unseen change) and, later in the notebook, reader."""
    return make_notebook([
        ("data = [0]", ["step:make"]),
        (change + "\nn = len(data)", ["step:change", "prev:make"]),
        (read, ["step:reader", "prev:make"]),
        ("print(n, total)", ["step:report", "prev:change", "prev:reader"]),
    ])


UNSEEN = _fan_out('getattr(data, "app" + "end")(1)')


def _manifest(folder):
    (run,) = [path for path in (folder / "kale-local-runs").iterdir() if path.is_dir() and not path.name.startswith(".")]
    return json.loads((run / "kale-run.json").read_text())


# -- conversion: which inputs are watched ------------------------------------------------


def test_only_inputs_a_later_step_reads_from_the_same_producer_are_watched():
    nb = make_notebook([
        ("data = [0]\nother = 1", ["step:make"]),
        ("a = len(data) + other", ["step:first", "prev:make"]),
        ("data.append(2)", ["step:changer", "prev:make"]),  # seen: it hands data on
        ("b = sum(data)", ["step:second", "prev:changer"]),
        ("c = len(data)", ["step:third", "prev:make", "prev:changer"]),
    ])
    _, resources = convert(nb)
    steps = resources["kale_pipeline"].steps
    # 'changer' loads make's data too (to change it), so an unseen change in 'first' would
    # reach it in the notebook; 'other' nobody reads later; 'second' and 'third' read
    # data from 'changer'
    assert steps["first"].watched_inputs == {"data": ["changer"]}
    assert steps["changer"].watched_inputs == {}  # an output is an expected change
    assert steps["second"].watched_inputs == {"data": ["third"]}
    assert steps["third"].watched_inputs == {}


def test_the_watched_inputs_reach_the_generated_call():
    script, resources = convert(UNSEEN)
    assert resources["kale_pipeline"].steps["change"].watched_inputs == {"data": ["reader"]}
    assert "watched={'data': ['reader']}" in script
    assert script.count("watched={") == 1  # steps with nothing to watch pay nothing


# -- runs -------------------------------------------------------------------------------


@pytest.mark.slow
def test_local_run_fails_on_an_unseen_change_and_names_variable_step_and_reader(tmp_path):
    script = write_script(UNSEEN, tmp_path, "unseen.ipynb")
    result = run_script(script, "--local")
    output = _output(result)
    assert result.returncode == 1, output
    summary = [line for line in result.stderr.splitlines() if line.startswith("kale: step 'change' failed")]
    assert summary, output
    line = summary[-1]
    for text in ("'data'", "in place", "after unseen.ipynb cell 2", "'reader'", "from step 'make'",
                 "data = data.copy()", "mutating_functions", "prev:change"):
        assert text in line, (text, line)
    manifest = _manifest(tmp_path)
    assert manifest["steps"]["change"]["status"] == "failed"
    assert "'data'" in manifest["steps"]["change"]["failure"]


@pytest.mark.slow
def test_allow_divergence_warns_and_the_run_succeeds(tmp_path):
    script = write_script(UNSEEN, tmp_path, "unseen.ipynb")
    result = run_script(script, "--local", "--allow-divergence")
    output = _output(result)
    assert result.returncode == 0, output
    assert "kale: warning: step 'change' changed 'data' in place" in output
    assert "the run may differ from the notebook" in output
    manifest = _manifest(tmp_path)
    (warning,) = manifest["steps"]["change"]["warnings"]
    assert "'reader'" in warning and "prev:change" in warning
    # and in the metadata of the step's outputs, as on a cluster
    assert manifest["steps"]["change"]["outputs"]["n"]["metadata"]["kale_warnings"] == [
        "warning: " + warning
    ]
    assert manifest["steps"]["reader"]["warnings"] == []


# Exhaustive profile only: from YAML each of the four steps is a new interpreter (10 s);
# every profile runs a compiled YAML with kfp.local in tests/test_local_run.py and the
# check itself on --local runs above.
@pytest.mark.slow
@pytest.mark.exhaustive
def test_the_compiled_yaml_runs_and_warns(tmp_path):
    nb = _fan_out('import operator\noperator.methodcaller("append", 1)(data)')
    script = write_script(nb, tmp_path, "unseen.ipynb")
    compiled = run_script(script)
    assert compiled.returncode == 0, compiled.stderr
    runner = textwrap.dedent(
        f"""
        from kfp import components, local
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root={str(tmp_path / 'runs')!r})
        pipeline = components.load_component_from_file({str(tmp_path / 'unseen.yaml')!r})
        pipeline()
        """
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("KALE_NBCONVERT_")}
    result = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True,
                            env=env, timeout=600)
    output = _output(result)
    assert result.returncode == 0, output[-3000:]
    assert "kale: warning: step 'change' changed 'data' in place" in output, output[-3000:]
    assert "'reader'" in output
    # the run's metadata: the step's output artifacts carry the warning
    (executor_output,) = (tmp_path / "runs").glob("*/change/executor_output.json")
    artifacts = json.loads(executor_output.read_text())["artifacts"]["n_out"]["artifacts"]
    (warning,) = artifacts[0]["metadata"]["kale_warnings"]
    assert "changed 'data' in place" in warning and "'reader'" in warning


@pytest.mark.slow
def test_nothing_is_said_when_nothing_diverges(tmp_path):
    nb = make_notebook([
        ("data = [0, 1]\nframe_sum = 0", ["step:make"]),
        # changes 'data' unseen, but nobody reads data later: not checked at all
        ('getattr(data, "app" + "end")(2)\nlength = len(data)', ["step:alone", "prev:make"]),
        ("total = sum(data)", ["step:reads", "prev:make"]),  # reads only; 'last' reads data later
        ("print(length, total, max(data))", ["step:last", "prev:make", "prev:alone", "prev:reads"]),
    ])
    _, resources = convert(nb)
    steps = resources["kale_pipeline"].steps
    assert steps["alone"].watched_inputs == {"data": ["reads", "last"]}
    # 'alone' changes data, which 'reads' and 'last' read: make a notebook where it does not
    nb = make_notebook([
        ("data = [0, 1]", ["step:make"]),
        ("total = sum(data)", ["step:reads", "prev:make"]),
        ("print(total, max(data))", ["step:last", "prev:make", "prev:reads"]),
        ('getattr(data, "app" + "end")(2)\nprint(len(data))', ["step:alone", "prev:make"]),
    ])
    _, resources = convert(nb)
    steps = resources["kale_pipeline"].steps
    assert steps["alone"].watched_inputs == {}
    assert steps["reads"].watched_inputs == {"data": ["last", "alone"]}
    script = write_script(nb, tmp_path, "quiet.ipynb")
    result = run_script(script, "--local")
    output = _output(result)
    assert result.returncode == 0, output
    assert "kale: warning" not in output and "kale: note" not in output, output


@pytest.mark.slow
def test_the_local_only_flags_are_refused_elsewhere_and_sizes_are_checked(tmp_path):
    script = write_script(UNSEEN, tmp_path, "unseen.ipynb")
    for args in (["--allow-divergence"], ["--check-limit", "1G"]):
        refused = run_script(script, *args)
        assert refused.returncode == 2 and "apply to --local runs" in refused.stderr
    bad = run_script(script, "--local", "--check-limit", "lots")
    assert bad.returncode == 2 and "write a size such as 512M" in bad.stderr


ARRAYS_AND_FRAMES = make_notebook([
    ("import numpy as np\nimport pandas as pd", ["imports"]),
    (f"arr = np.zeros({BIG})\n"
     "df = pd.DataFrame({'a': np.arange(5.0), 'b': list('vwxyz'), 'c': np.arange(5)})", ["step:make"]),
    ("print('loaded as', type(arr.base).__name__)\n"
     "getattr(arr, '__setitem__')(123456, 1.0)\nx1 = 1", ["step:arr_changed", "prev:make"]),
    ("total = float(arr.sum()) + float(arr[BIG_INDEX])\nx2 = 1".replace("BIG_INDEX", str(BIG - 1)),
     ["step:arr_read", "prev:make"]),
    ("getattr(df, 'lo' + 'c')[0, 'a'] = 99\nx3 = 1", ["step:df_loc", "prev:make"]),
    ("getattr(df, '__setitem__')('new', 1)\nx4 = 1", ["step:df_new", "prev:make"]),
    ("summary = df.describe()\nfirst = df.loc[0, 'a'] + df['c'].sum()\nx5 = 1", ["step:df_read", "prev:make"]),
    ("print(float(arr.sum()), df.shape, x1, x2, x3, x4, x5)",
     ["step:last", "prev:arr_changed", "prev:arr_read", "prev:df_loc", "prev:df_new", "prev:df_read"]),
])


@pytest.mark.slow
def test_big_arrays_and_frames_changed_in_place_are_caught_read_only_ones_are_not(tmp_path):
    script = write_script(ARRAYS_AND_FRAMES, tmp_path, "data.ipynb")
    result = run_script(script, "--local", "--allow-divergence")
    output = _output(result)
    assert result.returncode == 0, output
    assert "loaded as memmap" in output  # the copy-on-write map path, not a hash
    warnings = {task.replace("-", "_"): record["warnings"]  # KFP task names use dashes
                for task, record in _manifest(tmp_path)["steps"].items()}
    assert len(warnings["arr_changed"]) == 1 and "changed 'arr' in place" in warnings["arr_changed"][0]
    assert "'last'" in warnings["arr_changed"][0]
    assert len(warnings["df_loc"]) == 1 and "changed 'df' in place" in warnings["df_loc"][0]
    assert len(warnings["df_new"]) == 1 and "changed 'df' in place" in warnings["df_new"][0]
    for quiet in ("make", "arr_read", "df_read", "last"):
        assert warnings[quiet] == [], (quiet, warnings[quiet])
    assert "kale: note" not in output


# -- the in-step functions, without a pipeline ---------------------------------------------


def _watch(namespace, names, tmp_path):
    inputs = {}
    for name in names:
        path = str(tmp_path / name)
        _kale_marshal_save(namespace[name], path)
        namespace[name] = _kale_marshal_load(path)
        inputs[name] = (path, "make")
    return _kale_watch_start("nb.ipynb", "step", {name: ["later"] for name in names}, inputs, namespace)


def test_the_watch_names_the_cell_and_ignores_a_change_undone(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KALE_NBCONVERT_DIVERGENCE", "warn")
    namespace = {"items": [1, 2], "undone": [3]}
    watch = _watch(namespace, ["items", "undone"], tmp_path)
    _kale_watch_cell(watch, namespace, 4, 0.01)
    namespace["items"].append(3)
    namespace["undone"].append(4)
    _kale_watch_cell(watch, namespace, 5, 0.01)
    namespace["undone"].pop()
    _kale_watch_cell(watch, namespace, 6, 0.01)
    (line,) = _kale_watch_finish("nb.ipynb", "step", watch, namespace)
    assert "step 'step' changed 'items' in place (first seen after nb.ipynb cell 5)" in line
    assert "kale: warning: step 'step' changed 'items'" in capsys.readouterr().err


def test_rebinding_and_deleting_unseen_are_divergences_too(tmp_path, monkeypatch):
    monkeypatch.setenv("KALE_NBCONVERT_DIVERGENCE", "warn")
    namespace = {"a": [1], "b": [2], "c": 3, "d": [4]}
    watch = _watch(namespace, ["a", "b", "c", "d"], tmp_path)
    namespace["a"] = [9]      # another value
    namespace["b"] = [2]      # an equal value under the same name: no divergence
    del namespace["c"]
    namespace["d"] = list(namespace["d"])
    _kale_watch_cell(watch, namespace, 1, 0.01)
    lines = _kale_watch_finish("nb.ipynb", "step", watch, namespace)
    assert len(lines) == 2
    assert "bound 'a' to another value" in lines[0] and "deleted 'c'" in lines[1]


def test_fail_mode_ends_the_step_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KALE_NBCONVERT_DIVERGENCE", "fail")
    namespace = {"items": [1]}
    watch = _watch(namespace, ["items"], tmp_path)
    namespace["items"].append(2)
    _kale_watch_cell(watch, namespace, 1, 0.01)
    with pytest.raises(SystemExit):
        _kale_watch_finish("nb.ipynb", "step", watch, namespace)
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line]
    assert line.startswith("kale: step 'step' failed: it changed 'items' in place")


def test_a_costly_check_waits_and_names_the_cells_since_the_last_one():
    entry = {"name": "x", "readers": ["b", "c"], "producer": "a", "seen": [3, 4, 5], "how": "changed"}
    line = _kale_divergence_message("nb.ipynb", "s", entry, "step 's'")
    assert "first seen in one of nb.ipynb cells 3, 4, 5" in line
    assert "steps 'b', 'c' read 'x' from step 'a'" in line and "add 'prev:s' to 'b', 'c'" in line


def test_same_kind_immutable_values_cost_nothing():
    for value in (3, 2.5, "text", None, np.float32(1.5), b"x"):
        fingerprint = _kale_fingerprint(value)
        assert fingerprint["kind"] == "same"
        assert not _kale_fingerprint_changed(fingerprint, value)
    pyarrow = pytest.importorskip("pyarrow")
    table = pyarrow.table({"a": [1, 2]})
    assert _kale_fingerprint(table)["kind"] == "same"


def test_hash_kind_sees_changes_of_nested_values_and_buffers():
    values = [
        ({"a": [1, 2]}, lambda v: v["a"].append(3)),
        (np.arange(10.0), lambda v: v.__setitem__(3, 7.0)),
        (np.arange(6.0).reshape(2, 3)[:, ::2], lambda v: v.__setitem__((0, 0), 5.0)),  # not contiguous
        (np.arange(6.0), lambda v: setattr(v, "shape", (2, 3))),
        ({"frame": pd.DataFrame({"a": [1.0, 2.0]})}, lambda v: v["frame"].__setitem__("b", 1)),
        ([{1, 2}], lambda v: v[0].add(3)),
    ]
    for value, change in values:
        fingerprint = _kale_fingerprint(value)
        assert fingerprint["kind"] == "hash"
        assert not _kale_fingerprint_changed(fingerprint, value)
        change(value)
        assert _kale_fingerprint_changed(fingerprint, value), value


def test_hash_of_a_nested_frame_ignores_pandas_block_layout():
    frame = pd.DataFrame({"a": [1.0, 2.0]})
    frame["b"] = [3.0, 4.0]  # a second block
    digest = _kale_hash({"f": frame})
    frame._consolidate_inplace()  # what some pandas reads do: one block now, same values
    assert len(frame._mgr.blocks) == 1
    assert _kale_hash({"f": frame}) == digest


def test_hash_kind_for_torch_tensors_and_modules():
    torch = pytest.importorskip("torch")
    tensor = torch.arange(6.0)
    fingerprint = _kale_fingerprint(tensor)
    assert not _kale_fingerprint_changed(fingerprint, tensor)
    tensor[0] = 9.0
    assert _kale_fingerprint_changed(fingerprint, tensor)
    net = torch.nn.Linear(3, 2)
    fingerprint = _kale_fingerprint(net)
    net(torch.ones(1, 3))  # a forward pass reads it
    assert not _kale_fingerprint_changed(fingerprint, net)
    with torch.no_grad():
        net.weight[0, 0] += 1.0
    assert _kale_fingerprint_changed(fingerprint, net)


def _mapped(tmp_path, values):
    path = str(tmp_path / "arr")
    _kale_marshal_save(values, path)
    array = _kale_marshal_load(path)
    assert type(array.base).__name__ == "memmap"
    return array


def test_mapped_kind_reads_cost_nothing_and_writes_are_compared_with_the_file(tmp_path):
    array = _mapped(tmp_path, np.arange(BIG, dtype=np.float64))
    fingerprint = _kale_fingerprint(array)
    assert fingerprint["kind"] == "mapped"
    assert not _kale_fingerprint_changed(fingerprint, array)
    assert float(array.sum()) > 0  # every page read
    assert not _kale_fingerprint_changed(fingerprint, array)
    array[1000] = array[1000]  # a write of the same value dirties the page, changes nothing
    assert runtime._kale_dirty_ranges(array.__array_interface__["data"][0], array.nbytes)
    assert not _kale_fingerprint_changed(fingerprint, array)
    array[BIG - 1] = -1.0
    assert _kale_fingerprint_changed(fingerprint, array)


def test_mapped_kind_without_pagemap_compares_the_whole_file(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "_kale_dirty_ranges", lambda address, nbytes: None)
    array = _mapped(tmp_path, np.zeros((BIG // 4, 4), dtype=np.float64, order="F"))
    fingerprint = _kale_fingerprint(array)
    assert fingerprint["kind"] == "mapped"
    assert not _kale_fingerprint_changed(fingerprint, array)
    array[7, 3] = 1.0
    assert _kale_fingerprint_changed(fingerprint, array)
    # over the limit, with no cheap way to check: skipped, and the note says why
    skipped = _kale_fingerprint(array, size=array.nbytes, limit=1)
    assert skipped["kind"] == "skip" and "check limit" in skipped["why"]


def test_pagemap_sees_which_pages_were_written(tmp_path):
    array = _mapped(tmp_path, np.zeros(BIG))
    address = array.__array_interface__["data"][0]
    ranges = runtime._kale_dirty_ranges(address, array.nbytes)
    if ranges is None:
        pytest.skip("no /proc/self/pagemap here")
    assert ranges == []
    array[0] = 1.0
    array[BIG // 2] = 1.0
    ranges = runtime._kale_dirty_ranges(address, array.nbytes)
    assert len(ranges) == 2
    assert ranges[0][0] == 0 and ranges[1][0] <= BIG // 2 * 8 < ranges[1][1]


def _frame():
    return pd.DataFrame({
        "a": np.arange(5.0), "b": np.arange(5.0), "i": np.arange(5),
        "s": pd.array(list("vwxyz"), dtype="str"), "n": pd.array([1, 2, None, 4, 5], dtype="Int64"),
        "c": pd.Categorical(list("aabba")), "t": pd.date_range("2024-01-01", periods=5, tz="UTC"),
    })


@pytest.mark.parametrize("change", [
    lambda f: f.loc.__setitem__((0, "a"), 99.0),
    lambda f: f.__setitem__("new", 1),
    lambda f: f.iloc.__setitem__((1, 1), -1.0),
    lambda f: f.loc.__setitem__((0, "s"), "q"),
    lambda f: f.loc.__setitem__((0, "n"), 7),
    lambda f: f.loc.__setitem__((0, "c"), "b"),
    lambda f: f.pop("i"),
    lambda f: setattr(f, "columns", list("ABCDEFG")),
    lambda f: setattr(f.index, "name", "row"),
    lambda f: f.attrs.__setitem__("note", 1),
    lambda f: f.insert(0, "z", 1),
])
def test_frame_kind_catches_each_kind_of_in_place_change(change):
    import pandas

    if int(pandas.__version__.split(".")[0]) < 3:
        pytest.skip("pandas < 3 is hashed")
    frame = _frame()
    fingerprint = _kale_fingerprint(frame)
    assert fingerprint["kind"] == "frame"
    assert not _kale_fingerprint_changed(fingerprint, frame)
    change(frame)
    assert _kale_fingerprint_changed(fingerprint, frame)


def test_frame_kind_reads_and_equal_writes_are_no_change():
    frame = _frame()
    fingerprint = _kale_fingerprint(frame)
    frame.describe()
    frame.sum(numeric_only=True)
    frame.groupby("c", observed=True)["a"].mean()
    frame[["a", "i"]].to_numpy()
    assert not _kale_fingerprint_changed(fingerprint, frame)
    frame.loc[0, "a"] = frame.loc[0, "a"]  # pandas copies the block: same values
    assert not _kale_fingerprint_changed(fingerprint, frame)
    frame._consolidate_inplace()  # new blocks, same values
    assert not _kale_fingerprint_changed(fingerprint, frame)


def test_frame_kind_hashes_object_columns_that_may_hold_mutable_elements():
    frame = pd.DataFrame({"lists": pd.Series([[1], [2]], dtype=object), "text": pd.Series(["a", None], dtype=object)})
    fingerprint = _kale_fingerprint(frame)
    assert list(fingerprint["objects"]) == [0]  # strings (and missing values) cannot change
    frame["lists"].iloc[0].append(5)
    assert _kale_fingerprint_changed(fingerprint, frame)


def test_series_kind():
    series = pd.Series(np.arange(3.0), name="x")
    fingerprint = _kale_fingerprint(series)
    assert fingerprint["kind"] == "frame"
    assert not _kale_fingerprint_changed(fingerprint, series)
    series.iloc[0] = 5.0
    assert _kale_fingerprint_changed(fingerprint, series)
    renamed = pd.Series([1.0], name="x")
    fingerprint = _kale_fingerprint(renamed)
    renamed.name = "y"
    assert _kale_fingerprint_changed(fingerprint, renamed)


def test_values_over_the_limit_that_need_a_hash_are_skipped_with_a_note(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KALE_NBCONVERT_CHECK_LIMIT", "10")
    namespace = {"items": list(range(100))}
    watch = _watch(namespace, ["items"], tmp_path)
    assert watch is None
    err = capsys.readouterr().err
    assert "kale: note: step 'step' does not check 'items'" in err and "--check-limit" in err


def test_a_value_that_cannot_be_fingerprinted_is_skipped_not_fatal(tmp_path, capsys):
    class Odd:
        def __reduce__(self):
            raise TypeError("no")

    namespace = {"odd": Odd()}
    watch = _kale_watch_start("nb.ipynb", "step", {"odd": ["later"]}, {"odd": (str(tmp_path), "make")}, namespace)
    assert watch is None
    assert "cannot be fingerprinted" in capsys.readouterr().err


def _text_frame(rows=300):
    """Object text columns (one with missing values) in one block with a column that holds
    lists too (few enough that the block still goes as joined strings)."""
    return pd.DataFrame({
        "n": np.arange(rows),
        "text": pd.Series([f"t{i}" for i in range(rows)], dtype=object),
        "lists": pd.Series([[i] if i % 10 == 0 else f"l{i}" for i in range(rows)], dtype=object),
        "city": pd.Series([None if i % 7 else "Oslo" for i in range(rows)], dtype=object),
    })


class _EqualToText(list):
    """A mutable element that compares equal to any string (what a column's equality
    test cannot tell from the string it replaced)."""

    def __eq__(self, other):
        return isinstance(other, str) or list.__eq__(self, other)

    __hash__ = None


@pytest.mark.parametrize("change", [
    lambda f: f.iloc.__setitem__((0, 1), [1]),            # a mutable element in a text column
    lambda f: f.loc.__setitem__((3, "city"), "Lisbon"),   # another string
    lambda f: f.__setitem__("text", f["text"].str.upper()),
])
def test_columns_the_artifact_lists_as_text_are_not_scanned_yet_changes_are_caught(tmp_path, monkeypatch, change):
    """Saving a frame lists in kale.json the object columns it found to hold only str,
    None and NaN; the check of a step that loads it does not scan those again, and a
    write to one still copies its block (Copy-on-Write), which the check sees."""
    if int(pd.__version__.split(".")[0]) < 3:
        pytest.skip("pandas < 3 is hashed")
    scanned = []
    scan = runtime._kale_immutable_objects
    monkeypatch.setattr(runtime, "_kale_immutable_objects", lambda values: scanned.append(len(values)) or scan(values))
    monkeypatch.setenv("KALE_NBCONVERT_DIVERGENCE", "warn")
    namespace = {"df": _text_frame()}
    watch = _watch(namespace, ["df"], tmp_path)
    assert json.loads((tmp_path / "df" / "kale.json").read_text())["text_columns"] == [1, 3]
    (entry,) = watch["entries"]
    assert entry["fingerprint"]["kind"] == "frame" and list(entry["fingerprint"]["objects"]) == [2]
    assert scanned == [300]  # the column of lists only
    _kale_watch_cell(watch, namespace, 1, 0.01)
    assert entry["how"] is None
    change(namespace["df"])
    _kale_watch_cell(watch, namespace, 2, 0.01)
    (line,) = _kale_watch_finish("nb.ipynb", "step", watch, namespace)
    assert "changed 'df' in place (first seen after nb.ipynb cell 2)" in line


def test_a_mutable_element_equal_to_the_text_it_replaced_is_watched_from_then_on(tmp_path):
    """A write of an equal value is no change, but a mutable element that compares equal
    to the string it replaced could change later without a write to its block: from the
    check that sees it on, its column is hashed."""
    if int(pd.__version__.split(".")[0]) < 3:
        pytest.skip("pandas < 3 is hashed")
    path = str(tmp_path / "df")
    _kale_marshal_save(_text_frame(), path)
    frame = _kale_marshal_load(path)
    fingerprint = _kale_fingerprint(frame, 0, None, None, path)
    assert list(fingerprint["objects"]) == [2]
    sneaky = _EqualToText()
    frame.iloc[0, 1] = sneaky
    assert not _kale_fingerprint_changed(fingerprint, frame)  # equal, so no change yet
    assert sorted(fingerprint["objects"]) == [1, 2]
    sneaky.append(1)  # but now
    assert _kale_fingerprint_changed(fingerprint, frame)


def test_a_frame_not_from_that_artifact_is_scanned_as_before(tmp_path):
    path = str(tmp_path / "df")
    _kale_marshal_save(_text_frame(), path)
    other = pd.DataFrame({"lists": pd.Series([[1]] * 300, dtype=object), "x": pd.Series([[2]] * 300, dtype=object)})
    assert list(_kale_fingerprint(other.iloc[:, 0], 0, None, None, path)["objects"]) == [0]  # a Series
    fingerprint = _kale_fingerprint(other, 0, None, None, str(tmp_path / "missing"))
    assert list(fingerprint["objects"]) == [0, 1]
