"""Code that runs INSIDE a pipeline step.

The generated script embeds this module's source verbatim and ships these functions
with every component (``dsl.component(additional_funcs=...)``), so a step's container
needs nothing from this project: only kfp's executor, dill and the notebook's own
packages. Every function here must therefore be top-level and import what it uses.

A step runs its cells as module-level code of a fresh module registered as
``__main__`` (as Jupyter does): functions see the globals exactly as in the notebook,
and dill pickles functions and classes defined in the notebook by value, binding them
to the ``__main__`` of the step that loads them.
"""


def _kale_run_step(notebook, step, cells, shared=(), imports=(), parameters=None, inputs=None, outputs=None, uses_ipython=False):
    """Run one step: load its inputs, exec its cells in order, save its outputs.

    ``cells`` and ``shared`` are ``[(cell_number, code)]``; ``inputs`` maps a variable
    to ``(artifact_path, producing_step)``; ``outputs`` maps a variable to the artifact
    path to write. A failing cell prints a traceback that names the notebook cell and
    exits non-zero, so the step fails and nothing downstream runs.
    """
    import ast
    import builtins
    import linecache
    import os
    import sys
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
        if uses_ipython:
            from IPython.core.interactiveshell import InteractiveShell

            shell = InteractiveShell.instance(user_module=module, user_ns=namespace)
            namespace["get_ipython"] = lambda: shell
        for number, code in shared:
            _kale_exec_cell(notebook, step, number, code, namespace, ast, linecache)
        for statement in imports:
            exec(statement, namespace)
        namespace.update(parameters or {})
        try:
            for name, (path, producer) in sorted((inputs or {}).items()):
                namespace[name] = _kale_load(notebook, step, name, path, producer)
        except RuntimeError as error:
            _kale_fail(step, error)
        try:
            for number, code in cells:
                _kale_exec_cell(notebook, step, number, code, namespace, ast, linecache)
        except BaseException as error:  # noqa: BLE001 - report every failure of user code
            if isinstance(error, SystemExit) and not error.code:
                raise
            _kale_report_failure(notebook, step, error)
            raise SystemExit(1) from None
        try:
            for name, path in sorted((outputs or {}).items()):
                if name not in namespace:
                    raise RuntimeError(
                        f"it should hand on {name!r}, but {name!r} is not defined when "
                        "the step ends"
                    )
                _kale_save(notebook, step, name, namespace[name], path)
        except RuntimeError as error:
            _kale_fail(step, error)
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


def _kale_save(notebook, step, name, value, path):
    """Write ``value`` to the artifact path atomically (no partial file on failure)."""
    import os

    import dill

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    partial = f"{path}.partial"
    try:
        with open(partial, "wb") as handle:
            dill.dump(value, handle, protocol=dill.HIGHEST_PROTOCOL)
        os.replace(partial, path)
    except Exception as error:
        if os.path.exists(partial):
            os.remove(partial)
        raise RuntimeError(
            f"cannot save {name!r} (a {type(value).__module__}.{type(value).__qualname__}) "
            f"for the steps that read it: {type(error).__name__}: {error}. "
            f"Fix: re-create it in the step that uses it, or create it in the "
            f"'functions' cell"
        ) from None


def _kale_load(notebook, step, name, path, producer):
    """Read a variable that ``producer`` handed on."""
    import dill

    try:
        with open(path, "rb") as handle:
            return dill.load(handle)
    except Exception as error:
        raise RuntimeError(
            f"cannot load {name!r} from step {producer!r} ({path}): "
            f"{type(error).__name__}: {error}"
        ) from None


def _kale_snapshot(namespace, folder):
    """Dump the step's final variables (debugging and equivalence tests)."""
    import os
    import types

    import dill

    os.makedirs(folder, exist_ok=True)
    for name, value in list(namespace.items()):
        if name.startswith("_") or isinstance(value, types.ModuleType) or callable(value):
            continue
        try:
            data = dill.dumps(value)
        except Exception:  # noqa: BLE001 - a snapshot is best effort
            continue
        with open(os.path.join(folder, f"{name}.dill"), "wb") as handle:
            handle.write(data)


def _kale_log_metrics(notebook, inputs, metrics):
    """Report the notebook's metrics variables as KFP run metrics."""
    import sys

    for name, (path, producer) in sorted(inputs.items()):
        value = _kale_load(notebook, "pipeline_metrics", name, path, producer)
        try:
            number = float(value)
        except (TypeError, ValueError):
            print(
                f"kale: metric {name!r} from step {producer!r} is a "
                f"{type(value).__name__}, not a number",
                file=sys.stderr,
            )
            raise SystemExit(1) from None
        metrics.log_metric(name, number)
        print(f"{name}: {number}")


RUNTIME_FUNCTIONS = (
    "_kale_run_step",
    "_kale_fail",
    "_kale_cell_filename",
    "_kale_exec_cell",
    "_kale_display_function",
    "_kale_report_failure",
    "_kale_save",
    "_kale_load",
    "_kale_snapshot",
    "_kale_log_metrics",
)
"""Functions shipped with each component (kfp ships functions only, not classes)."""
