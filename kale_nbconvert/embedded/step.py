"""Step execution. Runs INSIDE a pipeline step (in-step part of the script).

A component function calls ``_kale_run_step`` (or ``_kale_log_metrics`` for the
metrics step); the script ships these functions, with ``marshal.py`` and
``divergence.py``, with every component (``dsl.component(additional_funcs=...)``), so a
step's container needs nothing from this project: only kfp's executor, dill and the
notebook's own packages. The rules of ``kale_nbconvert/embedded/`` hold: top-level
``_kale_`` functions only, each importing what it uses.

A step runs its cells as module-level code of a fresh module registered as
``__main__`` (as Jupyter does): functions see the globals exactly as in the notebook,
and dill pickles functions and classes defined in the notebook by value, binding them
to the ``__main__`` of the step that loads them.
"""


def _kale_run_step(
    notebook, step, cells, shared=(), imports=(), parameters=None, inputs=None, outputs=None,
    ipython=False, watched=None, report=None,
):
    """Run one step: load its inputs, exec its cells in order, save its outputs.

    ``cells`` and ``shared`` are ``[(cell_number, code)]``; ``imports`` the import
    statements of modules bound upstream that the step uses; ``parameters`` maps a
    pipeline parameter to its value; ``inputs`` maps a variable to ``(input_artifact,
    producing_step)``; ``outputs`` maps a variable to ``(output_artifact, cell)``: a KFP
    artifact, whose metadata gets the type, serializer and size, or a bare path, and
    the cell that last sets it (for messages, or None). ``ipython``: some cell needs
    IPython (magics, ``get_ipython()``).
    ``watched`` maps the inputs the plan expects unchanged but later steps read too to
    those steps: the step checks them after its cells (``_kale_watch_start``).
    ``report``: the step's ``Output[HTML]`` (or a bare path), the page of its cells and
    their outputs (``report.py``), written when the step ends, failed or not; None: none.
    A failing cell prints a traceback that names the notebook cell and exits non-zero,
    so the step fails and nothing downstream runs.
    """
    import ast
    import builtins
    import linecache
    import os
    import sys
    import time
    import types

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)  # live logs in the pod / terminal
        except (AttributeError, ValueError):
            pass
    module = types.ModuleType("__main__")
    namespace = module.__dict__
    namespace["__builtins__"] = builtins
    saved_main = sys.modules.get("__main__")
    sys.modules["__main__"] = module
    recorder = None if report is None else _kale_report_start(report)
    try:
        if ipython or recorder is None or _kale_draws(shared, cells):
            shell, make_shell = _kale_shell(module, namespace, ipython, recorder), None
        else:  # a shell costs about 30 ms: made on the first display() only
            _kale_matplotlib_backend(False)
            shell = None

            def make_shell():
                return _kale_shell(module, namespace, ipython, recorder)

        namespace["display"] = _kale_display_function(shell, make_shell)
        run = (notebook, step, namespace, shell, recorder, ast, linecache)
        try:
            for number, code in shared:
                _kale_run_cell(run, number, code, shared=True)
        except BaseException as error:  # noqa: BLE001 - report every failure of user code
            _kale_cell_failed(notebook, step, error, recorder)
        _kale_report_cell(recorder, None)
        namespace["__kale_shared__"] = {
            key: value for key, value in namespace.items() if isinstance(value, type) or callable(value)
        }
        for statement in imports:
            exec(statement, namespace)
        namespace.update(parameters or {})
        try:
            for name, (artifact, producer) in sorted((inputs or {}).items()):
                namespace[name] = _kale_load(notebook, step, name, artifact, producer)
        except RuntimeError as error:
            _kale_fail(step, error)
        watch = _kale_watch_start(notebook, step, watched, inputs, namespace)
        try:
            for number, code in cells:
                began = time.perf_counter()
                _kale_run_cell(run, number, code)
                if watch:
                    _kale_watch_cell(watch, namespace, number, time.perf_counter() - began)
        except BaseException as error:  # noqa: BLE001 - report every failure of user code
            _kale_cell_failed(notebook, step, error, recorder)
        _kale_report_cell(recorder, None)
        warnings = _kale_watch_finish(notebook, step, watch, namespace)
        problems = []
        for name, (artifact, cell) in sorted((outputs or {}).items()):
            if name not in namespace:
                problems.append(
                    f"it should hand on {name!r}, but {name!r} is not defined when "
                    "the step ends"
                )
                continue
            try:
                _kale_save(notebook, step, name, namespace[name], artifact, cell)
            except RuntimeError as error:
                problems.append(str(error))
        if problems:
            _kale_fail(step, "\n".join(problems) if len(problems) == 1 else
                       "\n  - " + "\n  - ".join(problems))
        artifacts = [artifact for artifact, _ in (outputs or {}).values()] + [report]
        for artifact in artifacts if warnings else ():
            metadata = getattr(artifact, "metadata", None)
            if isinstance(metadata, dict):  # the run's record of it (KFP UI, kale-run.json)
                metadata["kale_warnings"] = warnings
        snapshot = os.environ.get("KALE_NBCONVERT_SNAPSHOT_DIR")
        if snapshot:
            _kale_snapshot(namespace, os.path.join(snapshot, step))
    finally:
        _kale_report_finish(recorder, notebook, step)
        sys.modules["__main__"] = saved_main


def _kale_run_cell(run, number, code, shared=False):
    """One cell, as Jupyter runs it: its outputs go to the report's cell, and the
    shell's ``pre_execute``/``post_execute`` events go round it (on ``post_execute``
    matplotlib's inline backend shows the cell's open figures and closes them)."""
    notebook, step, namespace, shell, recorder, ast, linecache = run
    _kale_report_cell(recorder, number, code, shared)
    if shell is not None:
        shell.events.trigger("pre_execute")
    try:
        _kale_exec_cell(notebook, step, number, code, namespace, ast, linecache)
    finally:
        if shell is not None:
            shell.events.trigger("post_execute")


def _kale_cell_failed(notebook, step, error, recorder):
    """A cell raised ``error``: its traceback goes to the log and under the cell in the
    report, and the step ends non-zero (a ``sys.exit(0)`` in a cell ends it quietly)."""
    if isinstance(error, SystemExit) and not error.code:
        raise error
    text, summary = _kale_report_failure(notebook, step, error, recorder and recorder["stderr"])
    _kale_report_error(recorder, text, summary)
    raise SystemExit(1) from None


def _kale_shell(module, namespace, ipython, recorder):
    """The step's in-process IPython shell, or None where it needs none or there is no
    IPython (the report then holds text: ``display`` prints ``repr``).

    A shell serves the cells' magics and ``get_ipython()`` (``ipython``) and the report:
    its ``DisplayFormatter`` makes the mime bundles Jupyter would show and its display
    publisher, replaced here, records them. There is no kernel, no screen and no event
    loop: ``enable_gui`` does nothing (IPython's base shell raises
    ``NotImplementedError``, which failed every ``%matplotlib inline``) and
    ``%matplotlib`` with any GUI picks the inline backend (``agg`` stays ``agg``).

    The shell keeps no history and does no exit work (it would clear the namespace and
    collect all garbage as the process ends: 0.2 s in a step forked from a warm
    worker); pyplot's redraw of every figure after each cell, for a screen, is not
    registered (the inline backend draws each figure once, for the page). Without
    ``ipython`` the names the shell adds to the namespace (``In``, ``Out``,
    ``get_ipython``...) are taken out again: the cells see the namespace they always
    saw. Matplotlib's backend is set here too (``_kale_matplotlib_backend``): no figure
    opens a window.
    """
    import atexit
    import importlib.util

    if not ipython and recorder is None:
        _kale_matplotlib_backend(False)
        return None
    try:
        from IPython.core.displaypub import DisplayPublisher
        from IPython.core.interactiveshell import InteractiveShell
        from traitlets.config import Config
    except ImportError:
        if ipython:
            raise  # the cells need it, report or not
        _kale_matplotlib_backend(False)
        return None

    class StepShell(InteractiveShell):
        def enable_gui(self, gui=None):
            pass

        def enable_matplotlib(self, gui=None):
            return super().enable_matplotlib("agg" if gui == "agg" else "inline")

    class Publisher(DisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
            display_id = (transient or {}).get("display_id")
            _kale_report_display(recorder, data, metadata, display_id, update)

        def clear_output(self, wait=False):
            _kale_report_clear(recorder)

    InteractiveShell.clear_instance()  # the step owns its process (a fresh one)
    config = Config()
    config.HistoryManager.enabled = False
    before = set(namespace)
    shell = StepShell.instance(config=config, user_module=module, user_ns=namespace)
    atexit.unregister(shell.atexit_operations)
    shell.display_pub = Publisher(shell=shell)
    register = shell.events.register

    def register_unless_redraw(event, function):
        if getattr(function, "__name__", "") != "_draw_all_if_interactive":
            register(event, function)

    shell.events.register = register_unless_redraw
    if ipython:
        namespace["get_ipython"] = lambda: shell
    else:
        for name in set(namespace) - before:
            del namespace[name]
    _kale_matplotlib_backend(importlib.util.find_spec("matplotlib_inline") is not None)
    return shell


def _kale_matplotlib_backend(inline):
    """Matplotlib's backend for a step, unless the environment chose one
    (``MPLBACKEND``): Jupyter's inline backend where the step has a shell (figures go
    to the report at the end of each cell, as under a notebook cell), else Agg. Either
    way no figure opens a window, which on a headless node would fail and on a laptop
    would block the step. Matplotlib reads the variable when it is imported: one
    imported already (the warm worker of a ``--local`` run) is told directly."""
    import os
    import sys

    if os.environ.get("MPLBACKEND"):
        return
    backend = "module://matplotlib_inline.backend_inline" if inline else "agg"
    os.environ["MPLBACKEND"] = backend
    matplotlib = sys.modules.get("matplotlib")
    if matplotlib is not None:
        try:
            if matplotlib.get_backend(auto_select=False) is None:
                matplotlib.rcParams["backend"] = backend
        except (TypeError, AttributeError):  # before matplotlib 3.10: left as it is
            pass


def _kale_fail(step, error):
    """End the step with one clear line (a failure of the step, not of a cell)."""
    import sys

    print(f"\nkale: step {step!r} failed: {error}", file=sys.stderr, flush=True)
    raise SystemExit(1) from None


def _kale_cell_filename(notebook, step, number):
    return f"{notebook} cell {number}, step {step}"


def _kale_exec_cell(notebook, step, number, code, namespace, ast, linecache):
    """Exec one cell like Jupyter: the value of a final expression is displayed, unless
    a ``;`` ends it (``plt.plot(x);``)."""
    import re

    filename = _kale_cell_filename(notebook, step, number)
    # Register the source so tracebacks show the user's line, not "<string>".
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    tree = ast.parse(code, filename)
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr):
        tree.body.pop()
        exec(compile(tree, filename, "exec"), namespace)
        value = eval(compile(ast.Expression(last.value), filename, "eval"), namespace)
        line = re.split(r"\r\n|\r|\n", code)[last.end_lineno - 1]  # the parser's lines
        after = line.encode("utf-8")[last.end_col_offset:]  # its offsets count bytes
        if value is not None and not after.lstrip().startswith(b";"):
            namespace["display"](value)
    else:
        exec(compile(tree, filename, "exec"), namespace)


def _kale_display_function(shell, make_shell=None):
    """Jupyter's ``display``: IPython's where the step has a shell (its formatter and
    publisher: ``_kale_shell``), or gets one on the first call (``make_shell``), else
    ``print(repr(...))``, the text IPython's plain formatter gives for most values
    (``np.int64(0)``, not ``0``)."""
    if shell is not None:
        from IPython.display import display

        return display
    made = {}

    def display(*objects, **kwargs):
        if make_shell is not None and "shell" not in made:
            made["shell"] = make_shell()
        if made.get("shell") is not None:
            from IPython.display import display as shown

            return shown(*objects, **kwargs)
        for obj in objects:
            print(repr(obj))
        return None

    return display


def _kale_draws(*parts):
    """Whether a step's cells may draw figures: its shell must then exist before the
    plotting library is imported (matplotlib's inline backend hooks into the shell
    there, to show each cell's figures at its end). ``parts``: lists of (cell, code)."""
    words = ("matplotlib", "pyplot", "plt.", "seaborn", "plotnine", ".plot(", ".hist(")
    return any(word in code for part in parts for _, code in part for word in words)


def _kale_report_failure(notebook, step, error, file=None):
    """Print the traceback from the first notebook cell frame on, and where it failed,
    to ``file`` (default stderr); returns both, for the report."""
    import sys
    import traceback

    prefix = f"{notebook} cell "
    frames = traceback.extract_tb(error.__traceback__)
    start = next((i for i, frame in enumerate(frames) if frame.filename.startswith(prefix)), 0)
    cell_frames = [frame for frame in frames if frame.filename.startswith(prefix)]
    where = ""
    if cell_frames:
        frame = cell_frames[-1]
        where = f" in {frame.filename}, line {frame.lineno}"
    lines = ["Traceback (most recent call last):\n"]
    lines += traceback.format_list(frames[start:])
    lines += traceback.format_exception_only(type(error), error)
    summary = "".join(traceback.format_exception_only(type(error), error)).strip()
    summary = f"kale: step {step!r} failed{where}: {summary}"
    print("".join(lines), end="", file=file or sys.stderr)
    print("\n" + summary, file=file or sys.stderr, flush=True)
    return "".join(lines), summary


def _kale_snapshot(namespace, folder):
    """Dump the step's final variables (debugging and equivalence tests)."""
    import os
    import types

    import dill

    os.makedirs(folder, exist_ok=True)
    ipython_history = ("In", "Out", "exit", "quit")  # IPython's, not the notebook's values
    for name, value in list(namespace.items()):
        if name.startswith("_") or name in ipython_history:
            continue
        if isinstance(value, types.ModuleType) or callable(value):
            continue
        try:
            data = dill.dumps(value)
        except Exception:  # noqa: BLE001 - a snapshot is best effort
            continue
        with open(os.path.join(folder, f"{name}.dill"), "wb") as handle:
            handle.write(data)


def _kale_log_metrics(notebook, inputs, metrics, parameters=None):
    """Report the notebook's metrics variables as KFP run metrics. ``parameters``: the
    pipeline parameters the metrics cell lists, with this run's values."""
    import sys

    values = {name: (value, "the pipeline parameters") for name, value in (parameters or {}).items()}
    shown = {}
    for name, (artifact, producer) in inputs.items():
        about = _kale_marshal_about(getattr(artifact, "path", artifact))
        if "number" in about:  # recorded by the producer: nothing to unpickle
            values[name] = (float(about["number"]), f"step {producer!r}")
            shown[name] = about.get("shown")
            continue
        value = _kale_load(notebook, "pipeline_metrics", name, artifact, producer)
        values[name] = (value, f"step {producer!r}")
    for name, (value, source) in sorted(values.items()):
        try:
            number = float(value)
        except (TypeError, ValueError):
            print(
                f"kale: step 'pipeline-metrics' failed: metric {name!r} from {source} is "
                f"a {type(value).__name__}, not a number. Fix: list a variable that holds "
                f"a number in the pipeline-metrics cell (e.g. compute "
                f"'{name}_score = float(...)' in the step and list that)",
                file=sys.stderr, flush=True,
            )
            raise SystemExit(1) from None
        metrics.log_metric(name, number)
        # as the notebook's print(name) shows it: 32, not 32.0
        print(f"{name}: {shown.get(name) or value}")

