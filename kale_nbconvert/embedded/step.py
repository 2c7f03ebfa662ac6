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
    ipython=False, watched=None,
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
    try:
        namespace["display"] = _kale_display_function()
        if ipython:
            from IPython.core.interactiveshell import InteractiveShell

            shell = InteractiveShell.instance(user_module=module, user_ns=namespace)
            namespace["get_ipython"] = lambda: shell
        for number, code in shared:
            _kale_exec_cell(notebook, step, number, code, namespace, ast, linecache)
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
                _kale_exec_cell(notebook, step, number, code, namespace, ast, linecache)
                if watch:
                    _kale_watch_cell(watch, namespace, number, time.perf_counter() - began)
        except BaseException as error:  # noqa: BLE001 - report every failure of user code
            if isinstance(error, SystemExit) and not error.code:
                raise
            _kale_report_failure(notebook, step, error)
            raise SystemExit(1) from None
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
        for artifact, _ in (outputs or {}).values() if warnings else ():
            metadata = getattr(artifact, "metadata", None)
            if isinstance(metadata, dict):  # the run's record of it (KFP UI, kale-run.json)
                metadata["kale_warnings"] = warnings
        snapshot = os.environ.get("KALE_NBCONVERT_SNAPSHOT_DIR")
        if snapshot:
            _kale_snapshot(namespace, os.path.join(snapshot, step))
    finally:
        sys.modules["__main__"] = saved_main


def _kale_fail(step, error):
    """End the step with one clear line (a failure of the step, not of a cell)."""
    import sys

    print(f"\nkale: step {step!r} failed: {error}", file=sys.stderr, flush=True)
    raise SystemExit(1) from None


def _kale_cell_filename(notebook, step, number):
    return f"{notebook} cell {number}, step {step}"


def _kale_exec_cell(notebook, step, number, code, namespace, ast, linecache):
    """Exec one cell like Jupyter: the value of a final expression is displayed."""
    filename = _kale_cell_filename(notebook, step, number)
    # Register the source so tracebacks show the user's line, not "<string>".
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    tree = ast.parse(code, filename)
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr):
        tree.body.pop()
        exec(compile(tree, filename, "exec"), namespace)
        value = eval(compile(ast.Expression(last.value), filename, "eval"), namespace)
        if value is not None:
            namespace["display"](value)
    else:
        exec(compile(tree, filename, "exec"), namespace)


def _kale_display_function():
    """Jupyter's ``display`` (IPython's, imported on first use: it is slow to import),
    or ``print(repr(...))`` where the container has no IPython."""

    def display(*objects, **kwargs):
        try:
            from IPython.display import display as ipython_display
        except ImportError:
            for obj in objects:
                print(repr(obj))
            return None
        return ipython_display(*objects, **kwargs)

    return display


def _kale_report_failure(notebook, step, error):
    """Print the traceback from the first notebook cell frame on, and where it failed."""
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
    print("".join(lines), end="", file=sys.stderr)
    summary = "".join(traceback.format_exception_only(type(error), error)).strip()
    print(f"\nkale: step {step!r} failed{where}: {summary}", file=sys.stderr, flush=True)


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
    for name, (artifact, producer) in inputs.items():
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
        print(f"{name}: {value}")
