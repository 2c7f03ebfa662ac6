"""--local forks its steps from one warm process that imported the notebook's libraries
once; every step still starts from a fresh ``__main__``, a crash fails only that step,
and ``--isolated`` gives each step a fresh interpreter, as a cluster does."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from equivalence import assert_pipeline_matches_notebook, load_snapshot, pipeline_snapshots
from helpers import make_notebook, run_script, write_script

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="no fork on Windows: steps always run isolated"),
]

# 'wave' is a standard-library module nothing else here imports: whether it is
# already in sys.modules when the imports cell starts tells if the step forked from
# the warm worker (which preloaded it) or started a fresh interpreter.
PRELOAD_PROBE = make_notebook(
    [
        ("import sys\npreloaded = 'wave' in sys.modules\nimport wave", ["imports"]),
        ("secret = 41\nvisible = [1, 2]", ["step:first"]),
        ("leaked = 'secret' in globals()\nprobe = preloaded\nsize = len(visible)",
         ["step:second", "prev:first"]),
    ]
)


def test_steps_fork_from_the_warm_worker_and_start_from_a_fresh_namespace(tmp_path):
    script = write_script(PRELOAD_PROBE, tmp_path, "probe.ipynb")
    snapshots = pipeline_snapshots(script, tmp_path / "fast")
    second = snapshots["second"]
    assert second["probe"] is True  # the worker had imported 'wave' before forking
    assert second["leaked"] is False  # 'secret' of step first did not reach step second
    assert second["size"] == 2  # what it did receive, it received


def test_isolated_starts_every_step_in_a_fresh_interpreter(tmp_path):
    script = write_script(PRELOAD_PROBE, tmp_path, "probe.ipynb")
    snapshots = pipeline_snapshots(script, tmp_path / "isolated", "--isolated")
    assert snapshots["second"]["probe"] is False
    assert snapshots["second"]["leaked"] is False


def test_a_step_that_kills_its_interpreter_fails_only_that_step(tmp_path):
    nb = make_notebook(
        [
            ("import json", ["imports"]),
            ("data = [1, 2, 3]", ["step:load"]),
            ("import os\nos._exit(3)", ["step:crash", "prev:load"]),
            ("total = sum(data)", ["step:after", "prev:crash"]),
        ]
    )
    script = write_script(nb, tmp_path, "crash.ipynb")
    result = run_script(script, "--local", timeout=120)
    assert result.returncode == 1
    out = result.stdout + result.stderr
    assert "load" in out and "succeeded" in out
    assert "crash" in out and "failed" in out
    assert "kale: not run: after" in result.stderr
    again = run_script(script, "--local", timeout=120)  # the next run is unaffected
    assert again.returncode == 1 and "kale: not run: after" in again.stderr


def test_a_step_that_fails_after_a_passing_one_reports_its_cell(tmp_path):
    nb = make_notebook(
        [
            ("x = 1", ["step:first"]),
            ("y = x / 0", ["step:second", "prev:first"]),
        ]
    )
    script = write_script(nb, tmp_path, "fails.ipynb")
    result = run_script(script, "--local", timeout=120)
    assert result.returncode == 1
    assert "ZeroDivisionError" in result.stdout + result.stderr
    assert "cell 2" in result.stderr


@pytest.mark.parametrize(
    "example, mode",
    # The forked way is what tests/test_examples.py runs on every example already (its
    # test_pipeline_computes_what_the_notebook_computes); the default profile runs
    # --isolated on candies (stdlib only: each step's fresh interpreter starts in a
    # second), the exhaustive one on feature_engineering too (pandas and scikit-learn
    # imported again in every step).
    [
        ("candies", ("--isolated",)),
        pytest.param("feature_engineering", ("--isolated",), marks=pytest.mark.exhaustive),
    ],
    ids=["candies-isolated", "feature_engineering-isolated"],
)
def test_an_example_computes_what_the_notebook_computes_both_ways(tmp_path, example, mode):
    examples = Path(__file__).resolve().parent.parent / "examples"
    notebook = tmp_path / f"{example}.ipynb"
    shutil.copy(examples / notebook.name, notebook)
    assert_pipeline_matches_notebook(notebook, tmp_path / "work", *mode)


# The worker compiles the component module's chunks once and its children execute that
# code instead of compiling the file: the module must be what compiling the file gives.
COMPONENT = '''
import kfp
from typing import *


def _kale_helper(value):
    """A helper whose text is the same in every step."""
    squares = [v * v for v in range(value)]
    return sum(squares)


@staticmethod
def _decorated():
    return 1


class Thing:
    size = 3


def step_function(x):
    return _kale_helper(x) / 0
'''


def _functions(code):
    import types

    return {c.co_name: c for c in code.co_consts if isinstance(c, types.CodeType)}


def test_the_worker_compiles_a_module_in_chunks_that_equal_the_whole():
    from kale_nbconvert.embedded.worker import _kale_worker_compile

    cache = {}
    codes = _kale_worker_compile(cache, COMPONENT)
    assert codes is not None and len(codes) == 5  # header, 2 functions, class, step
    whole = compile(COMPONENT.encode(), "ephemeral_component.py", "exec", dont_inherit=True)
    chunked = {}
    for code in codes:
        chunked.update(_functions(code))
    assert chunked == _functions(whole)  # code, line numbers, columns: all equal
    assert [chunked[name].co_firstlineno for name in ("_kale_helper", "step_function")] == [
        _functions(whole)[name].co_firstlineno for name in ("_kale_helper", "step_function")]
    namespace_whole, namespace_chunks = {}, {}
    exec(whole, namespace_whole)
    for code in codes:
        exec(code, namespace_chunks)
    assert sorted(namespace_whole) == sorted(namespace_chunks)
    assert namespace_chunks.get("__doc__") is None  # no chunk's first line becomes a docstring

    # the next step: same runtime, another step function; only that one is compiled
    other = COMPONENT.replace("/ 0", "+ 1")
    again = _kale_worker_compile(cache, other)
    assert again[:-1] == codes[:-1] and all(a is b for a, b in zip(again[:-1], codes[:-1]))
    assert again[-1] is not codes[-1] and len(cache) == 6


@pytest.mark.parametrize("source", [
    # a 'def' in column 0 after an empty line inside a string is no chunk boundary:
    # the chunk before it does not compile, so the module is compiled whole
    COMPONENT.replace("    return 1", '    return """\n\ndef inside():\n    pass\n"""'),
    "from __future__ import annotations\n" + COMPONENT,  # changes how the rest compiles
    COMPONENT.replace("\n", "\r\n"),  # another line count than the chunks' newlines
    "# -*- coding: latin-1 -*-\n" + COMPONENT,  # another reading of the bytes
    COMPONENT + '\n\ndef warns():\n    return "\\d"\n',  # the child's compile shows the warning
    COMPONENT + "\n\ndef broken(:\n",  # the child's compile reports the error
])
def test_the_worker_compiles_whole_what_chunks_cannot_reproduce(source):
    from kale_nbconvert.embedded.worker import _kale_worker_compile

    assert _kale_worker_compile({}, source) is None


def test_a_child_loads_the_compiled_module_with_its_file_name_and_lines(tmp_path):
    import importlib.machinery
    import importlib.util
    import traceback

    from kale_nbconvert.embedded.worker import _kale_worker_compile, _kale_worker_use_compiled

    loader = importlib.machinery.SourceFileLoader
    before = loader.__dict__.get("exec_module")
    path = tmp_path / "ephemeral_component.py"
    path.write_text(COMPONENT, encoding="utf-8")
    codes = _kale_worker_compile({}, COMPONENT)
    _kale_worker_use_compiled(str(path), codes)
    try:
        other = tmp_path / "other_module.py"  # any other file loads as always
        other.write_text("VALUE = 7\n", encoding="utf-8")
        spec = importlib.util.spec_from_file_location("other_module", other)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.VALUE == 7 and "exec_module" in loader.__dict__  # still waiting

        spec = importlib.util.spec_from_file_location("ephemeral_component", path)  # as kfp
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if loader.__dict__.get("exec_module") is not before:  # only if the test failed early
            if before is None:
                del loader.exec_module
            else:
                loader.exec_module = before
    assert loader.__dict__.get("exec_module") is before  # the loader's own method is back
    assert module.__file__ == str(path) and module.Thing.size == 3
    with pytest.raises(ZeroDivisionError) as raised:
        module.step_function(3)
    frames = [(frame.filename, frame.lineno, frame.name, frame.line)
              for frame in traceback.extract_tb(raised.tb)][1:]
    line = COMPONENT.splitlines().index("    return _kale_helper(x) / 0") + 1
    assert frames == [(str(path), line, "step_function", "return _kale_helper(x) / 0")]
    nested = [c for c in module._kale_helper.__code__.co_consts if hasattr(c, "co_filename")]
    assert all(code.co_filename == str(path) for code in nested)  # a comprehension's (3.11)


# A step's own view of its component module: the code of every function against what
# compiling the module's file gives, the file each code object names, the stack its
# cell runs under (lines and text in that file), the module's names.
MODULE_PROBE = (
    "import sys, traceback, types\n"
    "_module = sys.modules['ephemeral_component']\n"
    "with open(_module.__file__, 'rb') as _handle:\n"
    "    _whole = compile(_handle.read(), _module.__file__, 'exec', dont_inherit=True)\n"
    "_compiled = {c.co_name: c for c in _whole.co_consts if isinstance(c, types.CodeType)}\n"
    "_functions = {n: f for n, f in vars(_module).items()\n"
    "              if isinstance(f, types.FunctionType) and f.__module__ == _module.__name__}\n"
    "def _codes(code):\n"
    "    yield code\n"
    "    for constant in code.co_consts:\n"
    "        if isinstance(constant, types.CodeType):\n"
    "            yield from _codes(constant)\n"
    "functions = len(_functions)\n"
    "differing = sorted(n for n, f in _functions.items() if f.__code__ != _compiled.get(n))\n"
    "files = sorted({c.co_filename for f in _functions.values() for c in _codes(f.__code__)}\n"
    "               - {_module.__file__})\n"
    "stack = [(f.lineno, f.name, f.line) for f in traceback.extract_stack()\n"
    "         if f.filename == _module.__file__]\n"
    "names = sorted(vars(_module))\n"
    "import os\n"  # kfp's own load of the file writes its bytecode next to it
    "bytecode_written = os.path.exists(_module.__cached__)\n"
)


def _snapshots(script, folder, *args):
    """The steps' final variables (``pipeline_snapshots``), bytecode writing on."""
    env = {"KALE_NBCONVERT_SNAPSHOT_DIR": str(folder), "PYTHONDONTWRITEBYTECODE": ""}
    result = run_script(script, "--local", *args, env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return {path.name: load_snapshot(path) for path in sorted(folder.iterdir())}


def test_a_forked_step_runs_the_module_compiling_its_file_gives(tmp_path):
    nb = make_notebook([
        (MODULE_PROBE, ["step:first"]),
        (MODULE_PROBE, ["step:second", "prev:first"]),
    ])
    script = write_script(nb, tmp_path, "module.ipynb")
    forked = _snapshots(script, tmp_path / "forked")
    isolated = _snapshots(script, tmp_path / "isolated", "--isolated")
    for step in ("first", "second"):  # the second reuses what the first compiled
        assert forked[step]["bytecode_written"] is False  # the worker's code ran
        assert isolated[step]["bytecode_written"] is True  # kfp compiled the file
        assert forked[step]["functions"] > 50  # the runtime's functions and the step's
        assert forked[step]["differing"] == [] and forked[step]["files"] == []
        assert [frame[1] for frame in forked[step]["stack"]][:1] == [f"{step}_step"]
        for name in ("functions", "differing", "files", "stack", "names"):
            assert forked[step][name] == isolated[step][name], (step, name)


def test_a_build_reads_each_function_source_once_and_builds_what_kfp_alone_builds(tmp_path):
    """``build_pipeline`` (every compile, run and import) has kfp read each shipped
    function's source once, not once per step, and puts kfp's reader back after."""
    import runpy

    from kfp.dsl import component_factory

    nb = make_notebook([
        ("x = 1", ["step:first"]),
        ("y = x + 1", ["step:second", "prev:first"]),
        ("z = y + x", ["step:third", "prev:second"]),
    ])
    script = write_script(nb, tmp_path, "sources.ipynb")
    build = runpy.run_path(str(script), run_name="sources")["build_pipeline"]
    original = component_factory._get_function_source_definition
    reads = []

    def counted(function):
        reads.append(function)
        return original(function)

    component_factory._get_function_source_definition = counted
    try:
        for local in (True, False):
            reads.clear()
            cached = build(local=local)
            assert component_factory._get_function_source_definition is counted  # put back
            assert len(reads) == len(set(reads)) > 3  # each step's own and the runtime's, once
            read_once = set(reads)
            caching = build.__globals__["_kale_cache_function_sources"]
            build.__globals__["_kale_cache_function_sources"] = lambda: (lambda: None)
            try:
                reads.clear()
                plain = build(local=local)
            finally:
                build.__globals__["_kale_cache_function_sources"] = caching
            assert set(reads) == read_once and len(reads) > 2 * len(read_once)
            assert cached.pipeline_spec == plain.pipeline_spec  # the same, byte for byte
    finally:
        component_factory._get_function_source_definition = original
