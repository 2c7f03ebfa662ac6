"""Code that runs INSIDE a pipeline step.

The generated script embeds this module's source verbatim and ships these functions
with every component (``dsl.component(additional_funcs=...)``), so a step's container
needs nothing from this project: only kfp's executor, dill and the notebook's own
packages. Every function here must therefore be top-level and import what it uses.

A step runs its cells as module-level code of a fresh module registered as
``__main__`` (as Jupyter does): functions see the globals exactly as in the notebook,
and dill pickles functions and classes defined in the notebook by value, binding them
to the ``__main__`` of the step that loads them.

Marshalling (how a variable crosses a step boundary). Each variable is one KFP artifact
whose path is a FOLDER::

    <artifact path>/
        kale.json       {"format": "kale-marshal/1", "serializer": ..., "file": ...,
                         "python_type": "pandas.core.frame.DataFrame", "kind": "Dataset",
                         "size_bytes": ..., "variable": ..., "step": ..., "cell": ...}
        data.<ext>      the value, in the serializer's native format

``_kale_marshal_save(obj, path)`` / ``_kale_marshal_load(path)`` are the only places that
decide the format; anything that reads a finished run's artifacts should call them.
The serializer is chosen by the object's type (every class of its MRO, matched by
``module.QualName`` so nothing is imported until the object is known to need it):

    serializer  file           for
    npy         data.npy       numpy.ndarray of a non-object dtype (np.save / np.load; from
                               16 MiB on, loaded by a copy-on-write memory map)
    pickle      data.pkl       pandas, numpy scalars and object arrays, plain values, ...:
                               stdlib pickle protocol 5; large buffers go from memory to
                               the file and back without copies (Arrow-backed pandas
                               columns too), and an object array of strings goes as one
                               joined string, not a memoised object per element
    dill        data.dill      anything referring to code defined in the notebook
                               (functions, lambdas, classes: by value), or that the
                               stdlib pickle refuses
    joblib      data.joblib    scikit-learn estimators and pipelines, xgboost and
                               lightgbm Boosters and their scikit-learn models
    torch       data.pt        torch tensors and modules (``pickle_module`` in kale.json)
    keras       model.keras    keras / tensorflow models (keras 3 on any backend); classes
                               defined in the notebook (a subclassed model, custom layers)
                               go beside it by value, custom_objects.dill, for load_model
    xgboost-dmatrix            xgboost DMatrix, in its binary buffer format
                data.dmatrix
    arrow       data.arrow     pyarrow Tables (Arrow IPC file)
    polars      data.arrow     polars DataFrames (Arrow IPC file)
    custom:KEY  data           a serializer the notebook registered (below)

Register your own: define ``KALE_SERIALIZERS`` in a ``functions`` cell, mapping a class
(or its ``"module.QualName"``, which avoids importing it) to ``(save, load)`` where
``save(obj, path)`` writes a file or folder at ``path`` and ``load(path)`` returns the
object. It matches subclasses too. In Jupyter it is just a dict, so the notebook runs
unchanged::

    def _save_graph(graph, path):
        networkx.write_graphml(graph, path)

    KALE_SERIALIZERS = {"networkx.classes.graph.Graph": (_save_graph, networkx.read_graphml)}

Writes are atomic (a ``<path>.partial`` folder renamed into place; a failed save leaves
nothing). Generators, locks, sockets, open files, database connections, modules and
Spark sessions cannot travel: saving one fails with the variable, its type, its cell
and the fix.

The divergence check (``watched``). Static analysis cannot see every in-place change.
A step therefore fingerprints the inputs that later steps read from the same producer
(``Step.watched_inputs``, computed at conversion) and checks them after its cells
(``_kale_watch_*``; how each kind of value is checked: ``_kale_fingerprint``). A
changed one would reach those steps in the notebook but not in the pipeline: the step
fails (``KALE_NBCONVERT_DIVERGENCE=fail``, what ``--local`` sets) or warns, in its log
and in its output artifacts' metadata (any other run, e.g. on a cluster).
"""


def _kale_run_step(notebook, step, cells, shared=(), imports=(), parameters=None, inputs=None, outputs=None, uses_ipython=False, output_cells=None, watched=None):
    """Run one step: load its inputs, exec its cells in order, save its outputs.

    ``cells`` and ``shared`` are ``[(cell_number, code)]``; ``inputs`` maps a variable
    to ``(input_artifact, producing_step)``; ``outputs`` maps a variable to its output
    artifact (a KFP artifact, whose metadata gets the type, serializer and size, or a
    bare path); ``output_cells`` maps it to the cell that last set it (for messages).
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
        if uses_ipython:
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
        for name, artifact in sorted((outputs or {}).items()):
            if name not in namespace:
                problems.append(
                    f"it should hand on {name!r}, but {name!r} is not defined when "
                    "the step ends"
                )
                continue
            cell = (output_cells or {}).get(name)
            try:
                _kale_save(notebook, step, name, namespace[name], artifact, cell)
            except RuntimeError as error:
                problems.append(str(error))
        if problems:
            _kale_fail(step, "\n".join(problems) if len(problems) == 1 else
                       "\n  - " + "\n  - ".join(problems))
        for artifact in (outputs or {}).values() if warnings else ():
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


def _kale_save(notebook, step, name, value, artifact, cell=None):
    """Hand on ``value``: write it to its output artifact and describe it in the
    artifact's metadata (visible in the KFP UI). Errors name the variable, its type,
    the cell that set it and the fix."""
    path = getattr(artifact, "path", artifact)
    where = f"{notebook} cell {cell}" if cell else f"{notebook}, step {step}"
    try:
        registry = _kale_marshal_registry()
        info = {"variable": name, "step": step, "cell": cell, "notebook": notebook}
        meta = _kale_marshal_save(value, path, registry, info)
    except Exception as error:  # noqa: BLE001 - every failure becomes one clear message
        kind = _kale_marshal_type_name(value)
        problem = _kale_marshal_problem(value)
        if problem is None and isinstance(error, TypeError) and str(error).startswith("contains "):
            problem = (str(error), None)
        if problem is not None:
            what, hint = problem
            raise RuntimeError(
                f"{name!r} ({kind}, set in {where}) cannot be handed on to later steps: "
                f"it {what}. Fix: {hint + '; or ' if hint else ''}re-create it in "
                "the step that uses it, or move its creation into the 'functions' or "
                "'imports' cells (they run in every step)"
            ) from None
        raise RuntimeError(
            f"cannot save {name!r} ({kind}, set in {where}) for the steps that read "
            f"it: {type(error).__name__}: {error}. Fix: re-create it in the step that "
            "uses it, or create it in the 'functions' cell"
        ) from None
    metadata = getattr(artifact, "metadata", None)
    if isinstance(metadata, dict):
        for key in ("python_type", "serializer", "size_bytes", "kind"):
            metadata[key] = meta[key]
    return meta


def _kale_load(notebook, step, name, artifact, producer):
    """Read a variable that ``producer`` handed on; errors name what and where."""
    import json
    import os

    path = getattr(artifact, "path", artifact)
    try:
        return _kale_marshal_load(path, _kale_marshal_registry())
    except Exception as error:  # noqa: BLE001 - every failure becomes one clear message
        about = {}
        try:
            with open(os.path.join(path, "kale.json"), encoding="utf-8") as handle:
                about = json.load(handle)
        except (OSError, ValueError):
            pass
        kind = about.get("python_type", "of unknown type")
        origin = f"step {producer!r}"
        if about.get("cell"):
            origin += f", {about.get('notebook') or notebook} cell {about['cell']}"
        fix = "make sure this step's image has the packages the producing step used"
        if isinstance(error, ImportError):
            fix = f"install {getattr(error, 'name', None) or 'the missing module'} in this step (import it in the step or the imports cell)"
        raise RuntimeError(
            f"cannot load {name!r} ({kind}, saved with "
            f"{about.get('serializer', 'an unknown serializer')} by {origin}) from {path}: "
            f"{type(error).__name__}: {error}. Fix: {fix}"
        ) from None


def _kale_marshal_registry():
    """The notebook's own serializers: ``KALE_SERIALIZERS`` of the running step."""
    import sys

    main = sys.modules.get("__main__")
    registry = getattr(main, "KALE_SERIALIZERS", None)
    return registry if isinstance(registry, dict) else None


def _kale_marshal_type_name(obj):
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _kale_marshal_problem(obj):
    """Why ``obj`` itself cannot travel between steps: ``(what, fix)``, or None."""
    names = [f"{c.__module__}.{c.__qualname__}" for c in type(obj).__mro__]
    first = names[0]
    if first in ("builtins.generator", "builtins.async_generator", "builtins.coroutine"):
        return (f"is a {first.split('.')[1].replace('_', ' ')}, which runs only once",
                "turn it into a list (list(...)) if the data is small")
    if first == "builtins.module":
        return ("is a module", "import it in the step that uses it")
    if "_io._IOBase" in names and first not in ("_io.BytesIO", "_io.StringIO"):
        return ("is an open file", "hand on its path and open it where it is read")
    kinds = {
        "_thread.lock": "a lock", "_thread.RLock": "a lock",
        "threading.Condition": "a lock", "threading.Semaphore": "a lock",
        "threading.Thread": "a thread", "subprocess.Popen": "a running process",
        "socket.socket": "a socket", "ssl.SSLSocket": "a socket",
        "sqlite3.Connection": "a database connection", "sqlite3.Cursor": "a database cursor",
        "psycopg2.extensions.connection": "a database connection",
        "psycopg2.extensions.cursor": "a database cursor",
        "psycopg.connection.Connection": "a database connection",
        "pymysql.connections.Connection": "a database connection",
        "sqlalchemy.engine.base.Engine": "a database engine",
        "sqlalchemy.engine.base.Connection": "a database connection",
        "sqlalchemy.orm.session.Session": "a database session",
        "pyspark.sql.session.SparkSession": "a Spark session",
        "pyspark.context.SparkContext": "a Spark context",
        "multiprocessing.pool.Pool": "a process pool",
        "concurrent.futures._base.Executor": "an executor",
    }
    for name in names:
        if name in kinds:
            return (f"is {kinds[name]}, a handle on something outside this process", None)
    return None


def _kale_marshal_choose(obj, registry=None):
    """The serializer and KFP artifact kind for ``obj``, from the classes of its MRO."""
    mro = type(obj).__mro__
    names = [f"{c.__module__}.{c.__qualname__}" for c in mro]
    if registry:
        for klass, name in zip(mro, names):
            if klass in registry or name in registry:
                return "custom:" + name, "Artifact"
    first = names[0]
    if first == "numpy.ndarray":
        return ("pickle" if obj.dtype.hasobject else "npy"), "Dataset"
    roots = {name.partition(".")[0] for name in names}
    if roots & {"numpy", "pandas"}:
        return "pickle", "Dataset"
    if "pyarrow.lib.Table" in names:
        return "arrow", "Dataset"
    if "polars.dataframe.frame.DataFrame" in names:
        return "polars", "Dataset"
    if first == "xgboost.core.DMatrix":
        return "xgboost-dmatrix", "Dataset"
    for name in names:  # before torch: a keras model on the torch backend is a Module
        module, _, qualname = name.rpartition(".")
        if qualname in ("Model", "Functional", "Sequential") and module.partition(".")[0] in ("keras", "tf_keras", "tensorflow"):
            return "keras", "Model"
    if "torch.nn.modules.module.Module" in names:
        return "torch", "Model"
    if "torch.Tensor" in names or "torch._tensor.Tensor" in names:
        return "torch", "Dataset"
    models = ("sklearn.base.BaseEstimator", "xgboost.core.Booster", "lightgbm.basic.Booster")
    if any(name in names for name in models):
        return "joblib", "Model"
    return "pickle", "Artifact"


def _kale_marshal_remove(path):
    import os
    import shutil

    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def _kale_marshal_save(obj, path, registry=None, info=None):
    """Write ``obj`` as the artifact folder ``path`` (see the module docstring), once
    and atomically; returns what it wrote into ``kale.json``."""
    import json
    import os

    problem = _kale_marshal_problem(obj)
    if problem is not None:
        raise TypeError(problem[0])
    serializer, kind = _kale_marshal_choose(obj, registry)
    partial = f"{path}.partial"
    _kale_marshal_remove(partial)
    os.makedirs(partial)
    try:
        serializer, file, extra = _kale_marshal_write(obj, serializer, partial, registry)
        size = _kale_path_size(partial)  # every data file; kale.json is not written yet
        meta = {
            "format": "kale-marshal/1",
            "serializer": serializer,
            "file": file,
            "python_type": _kale_marshal_type_name(obj),
            "kind": kind,
            "size_bytes": size,
            **extra,
            **(info or {}),
        }
        with open(os.path.join(partial, "kale.json"), "w", encoding="utf-8") as handle:
            json.dump(meta, handle, default=str)
        _kale_marshal_remove(path)
        os.rename(partial, path)
    except BaseException:
        _kale_marshal_remove(partial)
        raise
    return meta


def _kale_path_size(path):
    """Bytes in a file, or in all the files of a folder (0 if it does not exist)."""
    import os

    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(root, name))
                   for root, _, names in os.walk(path) for name in names)
    return os.path.getsize(path) if os.path.exists(path) else 0


def _kale_marshal_pickler(base, by_value_ok):
    """A pickler class that refuses what cannot travel, nested anywhere in the object,
    and (unless ``by_value_ok``) code defined in the notebook, which must travel by
    value: it raises ``LookupError('by value')`` so the caller falls back to dill.
    Functions and classes of the imports/functions cells (``__kale_shared__``) go by
    reference: every step defines them, and the consumer's own class must be used."""
    import copyreg
    import sys
    import types

    verdicts = {}
    arrow_arrays = {}

    main = sys.modules.get("__main__")
    shared = getattr(main, "__kale_shared__", {})

    class Call:
        """A value rebuilt on load by calling ``function(*args)``, then
        ``result[key] = value`` for each of ``items`` (pickle's reduce protocol)."""

        def __init__(self, function, args, items=()):
            self.reduced = (function, args, None, None, iter(items) if items else None)

    def reducer_override(self, obj):
        cls = type(obj)
        if cls is Call:
            return obj.reduced
        if cls is types.FunctionType or isinstance(obj, type):
            if by_value_ok or not (obj.__module__ in ("__main__", None) or "<" in obj.__qualname__):
                return NotImplemented
            name = obj.__qualname__
            if shared.get(name) is obj and getattr(main, name, None) is obj:
                return NotImplemented  # from the functions cell: every step defines it
            raise LookupError("by value")
        if cls.__name__ == "ndarray" and cls.__module__ == "numpy":
            if obj.dtype.kind in "mM":
                # numpy copies datetime arrays to pickle them; their int64 view it does not
                return cls.view, (obj.view("i8"), obj.dtype)
            if obj.dtype.kind == "O" and obj.size >= 256:
                reduced = _kale_marshal_reduce_strings(obj, Call)
                if reduced is not None:
                    return reduced
        elif arrow_arrays.setdefault(cls, _kale_marshal_is_arrow_array(cls)):
            chunks = obj._pa_array.chunks
            try:  # what the chunks hold vs what their buffers hold (more for a slice)
                own = sum(chunk.nbytes for chunk in chunks)
                held = sum(chunk.get_total_buffer_size() for chunk in chunks)
            except AttributeError:  # an older pyarrow
                own, held = 0, 1
            if chunks and not _kale_marshal_oversized(own, held, len(chunks)):
                # pandas' own __getstate__ copies the column into one chunk first; that
                # copy is needed only to cut a slice out of a bigger buffer
                state = {**obj.__dict__, "_pa_array": chunks, "_cache": {}}
                return copyreg.__newobj__, (cls,), state
        verdict = verdicts.get(cls)
        if verdict is None:
            verdict = verdicts[cls] = _kale_marshal_problem(obj) or ()
        if verdict:
            if verdict[0] == "is a module":
                if by_value_ok:
                    return NotImplemented
                raise LookupError("by value")  # dill pickles modules by reference
            raise TypeError(f"contains an object that {verdict[0]} ({_kale_marshal_type_name(obj)})")
        return NotImplemented

    return type("KalePickler", (base,), {"reducer_override": reducer_override})


def _kale_marshal_reduce_strings(array, Call, chunk=65536):
    """A compact reduce for an object array that holds mostly ``str``: the strings
    joined with a separator no element contains, ``chunk`` elements at a time, split
    again on load; the other elements are put back by index (missing values, None or
    NaN, all at once by an index array). Pickling each string instead memoises it
    (about 58 bytes per element at the peak, more than the strings themselves); here
    the peak is the joined text plus one chunk's list.
    Returns None when the array is not like that."""
    from array import array as compact

    import numpy

    order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
    flat = array.ravel(order)
    if not len(flat):
        return None
    texts, others, missing = [], [], {}
    for start in range(0, len(flat), chunk):
        items = flat[start:start + chunk].tolist()
        if any(type(item) is not str for item in items):
            for offset, item in enumerate(items):
                kind = type(item)
                if kind is str:
                    continue
                items[offset] = ""
                if item is None or (kind is float and item != item):
                    missing.setdefault(kind, (item, compact("q")))[1].append(start + offset)
                else:
                    others.append((start + offset, item))
                    if len(others) * 4 > len(flat):
                        return None
        # ASCII separators first: one outside Latin-1 would widen the whole text
        for separator in ("\x00", "\x1f", "\x1e", "\x1d", "\ue000", "\uf8ff", "\ufdd0"):
            joined = separator.join(items)
            if joined.count(separator) == len(items) - 1:
                break
        else:
            return None
        texts.append(Call(str.split, (joined, separator)))
    others += [(numpy.frombuffer(where, dtype=numpy.int64), value) for value, where in missing.values()]
    if len(texts) == 1:
        whole = Call(numpy.array, (texts[0], object), others)
    else:
        whole = Call(numpy.concatenate, ([Call(numpy.array, (text, object)) for text in texts],), others)
    if array.ndim == 1:
        return whole.reduced
    return numpy.reshape, (whole, array.shape, order)


def _kale_marshal_oversized(own, held, pieces=1):
    """Whether a value of ``own`` bytes sits in buffers of ``held`` bytes so much larger
    (a slice, a view) that writing the buffers as they are would carry data the value
    does not hold: more than a quarter more, plus 4 KiB of slack per piece."""
    return held > own + own // 4 + 4096 * pieces


def _kale_marshal_is_arrow_array(cls):
    """Whether ``cls`` is a pandas Arrow-backed extension array that pickles through
    ``ArrowExtensionArray.__getstate__`` (which copies the data into one chunk)."""
    getstate = getattr(cls, "__getstate__", None)
    return (
        cls.__module__.startswith("pandas.")
        and getattr(getstate, "__qualname__", "") == "ArrowExtensionArray.__getstate__"
    )


def _kale_marshal_write(obj, serializer, folder, registry):
    """Write ``obj`` into ``folder``; returns ``(serializer, file, extra_metadata)``."""
    import os
    import pickle

    def dill_dump():
        import dill

        with open(os.path.join(folder, "data.dill"), "wb") as handle:
            _kale_marshal_pickler(dill.Pickler, True)(handle, protocol=dill.HIGHEST_PROTOCOL).dump(obj)
        return "dill", "data.dill", {}

    def by_value_fallback(write, file):
        try:
            return write()
        except (LookupError, pickle.PicklingError, AttributeError) as error:
            if isinstance(error, LookupError) and error.args != ("by value",):
                raise
        except TypeError as error:
            if str(error).startswith("contains "):
                raise
        _kale_marshal_remove(os.path.join(folder, file))
        return dill_dump()

    if serializer == "npy":
        import numpy

        with open(os.path.join(folder, "data.npy"), "wb") as handle:
            numpy.save(handle, obj, allow_pickle=False)
        return "npy", "data.npy", {}
    if serializer == "pickle":
        def write():
            with open(os.path.join(folder, "data.pkl"), "wb") as handle:
                _kale_marshal_pickler(pickle.Pickler, False)(handle, protocol=5).dump(obj)
            return "pickle", "data.pkl", {}

        return by_value_fallback(write, "data.pkl")
    if serializer == "joblib":
        try:
            from joblib.numpy_pickle import NumpyPickler
        except ImportError:
            return _kale_marshal_write(obj, "pickle", folder, registry)

        def write():
            with open(os.path.join(folder, "data.joblib"), "wb") as handle:
                _kale_marshal_pickler(NumpyPickler, False)(handle, protocol=5).dump(obj)
            return "joblib", "data.joblib", {}

        return by_value_fallback(write, "data.joblib")
    if serializer == "torch":
        import types

        import torch

        if isinstance(obj, torch.Tensor) and obj.layout == torch.strided and not obj.is_nested:
            # torch.save writes a view's whole storage: a 10-element slice of a 1 GB
            # tensor would carry 1 GB. Such a view goes as a copy of itself.
            if _kale_marshal_oversized(obj.numel() * obj.element_size(), obj.untyped_storage().nbytes()):
                obj = obj.detach().clone().requires_grad_(obj.requires_grad)

        def write():
            module = types.SimpleNamespace(Pickler=_kale_marshal_pickler(pickle.Pickler, False), __name__="pickle")
            with open(os.path.join(folder, "data.pt"), "wb") as handle:
                torch.save(obj, handle, pickle_module=module)
            return "torch", "data.pt", {"pickle_module": "pickle"}

        try:
            return write()
        except (LookupError, pickle.PicklingError, AttributeError) as error:
            if isinstance(error, LookupError) and error.args != ("by value",):
                raise
        import dill

        with open(os.path.join(folder, "data.pt"), "wb") as handle:
            torch.save(obj, handle, pickle_module=dill)
        return "torch", "data.pt", {"pickle_module": "dill"}
    if serializer == "keras":
        obj.save(os.path.join(folder, "model.keras"))
        # a .keras file names its classes; those defined in the notebook (a subclassed
        # model, custom layers) travel beside it by value, for load_model's custom_objects
        layers = getattr(obj, "_flatten_layers", lambda **kw: [obj])(include_self=True, recursive=True)
        classes = {
            klass.__name__: klass
            for layer in layers for klass in type(layer).__mro__ if klass.__module__ == "__main__"
        }
        if not classes:
            return "keras", "model.keras", {}
        import dill

        with open(os.path.join(folder, "custom_objects.dill"), "wb") as handle:
            _kale_marshal_pickler(dill.Pickler, True)(handle, protocol=dill.HIGHEST_PROTOCOL).dump(classes)
        return "keras", "model.keras", {"custom_objects": "custom_objects.dill"}
    if serializer == "xgboost-dmatrix":
        # a DMatrix holds a C handle that pickle refuses; xgboost's own binary format
        # keeps data, labels, weights, base margins, groups and feature names and types
        obj.save_binary(os.path.join(folder, "data.dmatrix"), silent=True)
        return "xgboost-dmatrix", "data.dmatrix", {}
    if serializer == "arrow":
        import pyarrow
        import pyarrow.ipc

        with pyarrow.OSFile(os.path.join(folder, "data.arrow"), "wb") as sink:
            with pyarrow.ipc.new_file(sink, obj.schema) as writer:
                writer.write_table(obj)
        return "arrow", "data.arrow", {}
    if serializer == "polars":
        obj.write_ipc(os.path.join(folder, "data.arrow"))
        return "polars", "data.arrow", {}
    if serializer.startswith("custom:"):
        key = serializer[len("custom:"):]
        for klass in type(obj).__mro__:
            entry = registry.get(klass) or registry.get(f"{klass.__module__}.{klass.__qualname__}")
            if entry:
                entry[0](obj, os.path.join(folder, "data"))
                return serializer, "data", {}
        raise LookupError(f"no serializer registered for {key}")
    raise ValueError(f"unknown serializer {serializer!r}")


def _kale_marshal_load(path, registry=None):
    """Read back what ``_kale_marshal_save`` wrote at ``path`` (a bare dill file, the
    format of earlier versions, is read too)."""
    import json
    import os

    if os.path.isfile(path):
        import dill

        with open(path, "rb") as handle:
            return dill.load(handle)
    with open(os.path.join(path, "kale.json"), encoding="utf-8") as handle:
        meta = json.load(handle)
    serializer = meta["serializer"]
    data = os.path.join(path, meta["file"])
    if serializer == "npy":
        import numpy

        if os.path.getsize(data) >= 16 * 2**20:
            # A big array is mapped, not copied: its pages come from the file as they are
            # read (none read, none paid for), copy-on-write, so changing the array never
            # changes the artifact. A plain, writable ndarray all the same.
            try:
                return numpy.load(data, mmap_mode="c", allow_pickle=False).view(numpy.ndarray)
            except (OSError, ValueError):  # a file system without mmap
                pass
        return numpy.load(data, allow_pickle=False)
    if serializer == "pickle":
        import pickle

        with open(data, "rb") as handle:
            return pickle.load(handle)
    if serializer == "dill":
        import dill

        with open(data, "rb") as handle:
            return dill.load(handle)
    if serializer == "joblib":
        import joblib

        return joblib.load(data)
    if serializer == "torch":
        import torch

        if meta.get("pickle_module") == "dill":
            import dill

            return torch.load(data, pickle_module=dill, weights_only=False)
        return torch.load(data, weights_only=False)
    if serializer == "keras":
        import keras

        custom = {}
        if meta.get("custom_objects"):
            import sys

            import dill

            with open(os.path.join(path, meta["custom_objects"]), "rb") as handle:
                classes = dill.load(handle)
            main = sys.modules.get("__main__")
            for name, klass in classes.items():
                own = getattr(main, name, None)  # the functions cell's class, if it defines one
                if not isinstance(own, type):
                    # as in the notebook, the class is a global (its methods may use it)
                    own = klass
                    if main is not None and not hasattr(main, name):
                        setattr(main, name, klass)
                custom[name] = own
        return keras.models.load_model(data, custom_objects=custom)
    if serializer == "xgboost-dmatrix":
        import xgboost

        return xgboost.DMatrix(data, silent=True)
    if serializer == "arrow":
        import pyarrow.ipc

        with pyarrow.OSFile(data, "rb") as source:
            return pyarrow.ipc.open_file(source).read_all()
    if serializer == "polars":
        import polars

        with open(data, "rb") as handle:
            return polars.read_ipc(handle)
    if serializer.startswith("custom:"):
        key = serializer[len("custom:"):]
        for candidate, entry in (registry or {}).items():
            name = candidate if isinstance(candidate, str) else f"{candidate.__module__}.{candidate.__qualname__}"
            if name == key:
                return entry[1](data)
        raise LookupError(
            f"{key} was saved with a serializer from KALE_SERIALIZERS, which is not "
            "defined here (define it in a 'functions' cell)"
        )
    raise ValueError(f"unknown serializer {serializer!r} (written by a newer kale_nbconvert?)")


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
        print(f"{name}: {value}")  # as the notebook's print(name) shows it: 32, not 32.0


def _kale_watch_start(notebook, step, watched, inputs, namespace):
    """Fingerprint the inputs that later steps read too (``watched``: name -> readers),
    so the step can tell whether its cells changed them where the plan expected no
    change. Returns None when there is nothing to watch (the common case: no cost)."""
    import sys

    if not watched:
        return None
    limit = _kale_check_limit()
    pickler = _kale_hash_pickler()
    entries = []
    for name, readers in sorted(watched.items()):
        if name not in namespace or name not in (inputs or {}):
            continue
        artifact, producer = inputs[name]
        try:
            size = _kale_path_size(getattr(artifact, "path", artifact))
            fingerprint = _kale_fingerprint(namespace[name], size, limit, pickler)
        except Exception as error:  # noqa: BLE001 - a check must never break the step
            fingerprint = {"kind": "skip", "why": f"it cannot be fingerprinted ({type(error).__name__}: {error})"}
        if fingerprint["kind"] == "skip":
            print(f"kale: note: step {step!r} does not check {name!r} for in-place changes: "
                  f"{fingerprint['why']}", file=sys.stderr, flush=True)
            continue
        entries.append({
            "name": name, "readers": list(readers), "producer": producer,
            "fingerprint": fingerprint, "unchecked": [], "elapsed": 0.0, "seen": None, "how": None,
            # a hash costs about its size at 1 GB/s (measured at each check from then on);
            # the other checks are cheap
            "cost": 10e-6 + size / 1e9 if fingerprint["kind"] == "hash" else 0.0,
        })
    return {"entries": entries, "pickler": pickler} if entries else None


def _kale_watch_cell(watch, namespace, number, seconds):
    """After cell ``number`` (which took ``seconds``): check each watched input whose
    check costs at most 5% of the cells run since its last check (or 50 us), so the
    change is named by its cell without slowing the step; a costlier check waits for
    later cells (the message then names the cells since the last check)."""
    import time

    for entry in list(watch["entries"]):  # a check that fails drops its entry
        if entry["seen"] is not None:
            continue  # located already; the final check decides whether it stayed
        entry["unchecked"].append(number)
        entry["elapsed"] += seconds
        if entry["cost"] > max(50e-6, 0.05 * entry["elapsed"]):
            continue
        began = time.perf_counter()
        _kale_watch_check(watch, entry, namespace)
        entry["cost"] = time.perf_counter() - began


def _kale_watch_check(watch, entry, namespace):
    """Check one watched input now; a change found is recorded with the cells run since
    the previous check. A check that fails drops the input (with a note), never the step."""
    import sys

    try:
        how = _kale_watch_how(entry, namespace, watch["pickler"])
    except Exception as error:  # noqa: BLE001 - a check must never break the step
        print(f"kale: note: could not check {entry['name']!r} for in-place changes "
              f"({type(error).__name__}: {error})", file=sys.stderr, flush=True)
        watch["entries"].remove(entry)
        return
    if how and entry["seen"] is None:
        entry["seen"] = list(entry["unchecked"])
    entry["how"] = how
    entry["unchecked"], entry["elapsed"] = [], 0.0


def _kale_watch_how(entry, namespace, pickler=None):
    """How the step's namespace differs from the input it loaded: None (it does not),
    ``"changed"`` (in place), ``"rebound"`` (another value) or ``"deleted"``."""
    name, fingerprint = entry["name"], entry["fingerprint"]
    if name not in namespace:
        return "deleted"
    value = namespace[name]
    if not _kale_fingerprint_changed(fingerprint, value, pickler):
        return None
    return "changed" if value is fingerprint["value"] else "rebound"


def _kale_watch_finish(notebook, step, watch, namespace):
    """The last check, when the cells have ended (what later steps would see in the
    notebook); returns one message per diverging input. ``KALE_NBCONVERT_DIVERGENCE``
    says what to do: ``fail`` (a ``--local`` run, unless ``--allow-divergence``) fails
    the step; otherwise (``warn``, a cluster) the messages are printed as warnings and
    returned, for the metadata of the step's output artifacts."""
    import os
    import sys

    if not watch:
        return []
    messages = []
    for entry in list(watch["entries"]):
        if entry["seen"] is None and not entry["unchecked"]:
            continue  # checked after the last cell already: unchanged
        _kale_watch_check(watch, entry, namespace)
        if entry in watch["entries"] and entry["how"]:
            messages.append(entry)
    if not messages:
        return []
    fail = os.environ.get("KALE_NBCONVERT_DIVERGENCE", "warn") == "fail"
    if fail:
        for entry in messages[1:]:
            print("kale: " + _kale_divergence_message(notebook, step, entry, f"step {step!r}"),
                  file=sys.stderr, flush=True)
        _kale_fail(step, _kale_divergence_message(notebook, step, messages[0], "it")
                   + (f" (and {len(messages) - 1} more input(s), above)" if len(messages) > 1 else ""))
    lines = ["warning: " + _kale_divergence_message(notebook, step, entry, f"step {step!r}")
             for entry in messages]
    for line in lines:
        print("kale: " + line, file=sys.stderr, flush=True)
    return lines


def _kale_divergence_message(notebook, step, entry, subject):
    """One line: the variable, the step and cell(s) that changed it, its later readers,
    and the two fixes (keep the original for them, or let them follow this step)."""
    name, readers, cells = entry["name"], entry["readers"], entry["seen"]
    if len(cells) == 1:
        where = f"after {notebook} cell {cells[0]}"
    else:
        listed = ", ".join(map(str, cells)) if len(cells) <= 4 else f"{cells[0]}-{cells[-1]}"
        where = f"in one of {notebook} cells {listed}"
    how = {"changed": f"changed {name!r} in place", "rebound": f"bound {name!r} to another value",
           "deleted": f"deleted {name!r}"}[entry["how"]]
    one = len(readers) == 1
    them = "it" if one else "they"
    shown = ", ".join(repr(reader) for reader in readers)
    return (
        f"{subject} {how} (first seen {where}), which static analysis did not see: "
        f"later in the notebook {'step' if one else 'steps'} {shown} read{'s' if one else ''} "
        f"{name!r} from step {entry['producer']!r}, so in the notebook {them} would see the "
        f"change and in this pipeline {them} do{'es' if one else ''} not. Fix: if {shown} must "
        f"see the original, copy it before changing it ('{name} = {name}.copy()') or use a "
        f"new name; if {shown} should see the change, tell the analysis "
        f"(--NameAnalysisPreprocessor.mutating_functions=NAME for the function that changes "
        f"it, or assign the result: '{name} = ...') and add 'prev:{step}' to {shown}"
    )


def _kale_check_limit():
    """Largest input (bytes, as saved) the check may hash: ``KALE_NBCONVERT_CHECK_LIMIT``,
    4 GiB by default. Inputs checked without hashing (big arrays, pandas frames) have no
    limit."""
    import os

    try:
        return int(os.environ.get("KALE_NBCONVERT_CHECK_LIMIT") or 4 * 2**30)
    except ValueError:
        return 4 * 2**30


def _kale_fingerprint(value, size=0, limit=None, pickler=None):
    """What ``_kale_fingerprint_changed`` needs to tell, exactly and cheaply, whether
    ``value`` changed in place. ``size``: its bytes as saved; ``limit``: the largest size
    to hash. ``kind`` is one of

    same    immutable values (numbers, strings, Arrow data): only rebinding changes them
    mapped  an ndarray loaded as a copy-on-write map of its .npy: a write makes private
            copies of the pages it touches, which /proc/self/pagemap shows; only those
            pages are compared with the file (all of it where the kernel does not say)
    frame   a pandas >= 3 DataFrame or Series: Copy-on-Write copies a block before any
            write once a shallow copy shares it, so a column still in the shallow copy's
            block (same reference set, same address) is untouched; other columns are
            compared exactly, object columns that may hold mutable elements are hashed
    hash    anything else: SHA-256 of its pickle, buffers (numpy, pandas, Arrow, torch)
            hashed in place (``_kale_hash``)
    skip    too big to hash (``why`` says so)
    """
    import sys

    fingerprint = {"value": value}
    if limit is None:
        limit = _kale_check_limit()
    if _kale_is_immutable(value):
        return {**fingerprint, "kind": "same"}
    numpy = sys.modules.get("numpy")
    if numpy is not None and type(value) is numpy.ndarray:
        mapped = _kale_mapped_file(value)
        if mapped is not None:
            if size > limit and _kale_dirty_ranges(value.__array_interface__["data"][0], value.nbytes) is None:
                return {"kind": "skip", "why": _kale_over_limit(size, limit)}
            view = value.T if value.flags.f_contiguous and not value.flags.c_contiguous else value
            raw = numpy.frombuffer(memoryview(view).cast("B"), dtype=numpy.uint8) if value.nbytes else None
            return {**fingerprint, "kind": "mapped", "file": mapped[0], "offset": mapped[1], "raw": raw,
                    "meta": (value.shape, value.dtype, value.strides)}
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(value, (pandas.DataFrame, pandas.Series)):
        if int(pandas.__version__.split(".")[0]) >= 3 and hasattr(value, "_mgr"):
            return _kale_frame_fingerprint(value, pickler)
    if size > limit:
        return {"kind": "skip", "why": _kale_over_limit(size, limit)}
    return {**fingerprint, "kind": "hash", "hash": _kale_hash(value, pickler)}


def _kale_over_limit(size, limit):
    def shown(n):
        return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"

    return (f"it is {shown(size)}, more than the check limit of {shown(limit)} (raise it with "
            "--check-limit, or KALE_NBCONVERT_CHECK_LIMIT on a cluster, to check it)")


def _kale_fingerprint_changed(fingerprint, value, pickler=None):
    """Whether ``value`` (the name's value now) differs from what ``fingerprint``
    recorded: exact for every kind (see ``_kale_fingerprint``)."""
    kind, original = fingerprint["kind"], fingerprint["value"]
    if value is not original:  # rebound: equal only if it hashes or compares the same
        if kind == "same":
            try:
                return not (type(value) is type(original) and bool(value == original))
            except Exception:  # noqa: BLE001 - an object that cannot compare is different
                return True
        if kind == "hash":
            return type(value) is not type(original) or _kale_hash(value, pickler) != fingerprint["hash"]
        return True
    if kind == "same":
        return False
    if kind == "hash":
        return _kale_hash(value, pickler) != fingerprint["hash"]
    if kind == "mapped":
        return _kale_mapped_changed(fingerprint, value)
    if kind == "frame":
        return _kale_frame_changed(fingerprint, value, pickler)
    raise ValueError(f"unknown fingerprint kind {kind!r}")


def _kale_is_immutable(value):
    """Values that cannot change in place: numbers, strings, bytes, None, numpy scalars
    (not structured ones), dates and times, and Arrow data (immutable by design)."""
    import datetime
    import decimal
    import fractions
    import sys

    kind = type(value)
    if kind in (int, float, complex, bool, str, bytes, type(None), range, decimal.Decimal,
                fractions.Fraction, datetime.date, datetime.datetime, datetime.time,
                datetime.timedelta, datetime.timezone):
        return True
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.generic) and not isinstance(value, (numpy.void, numpy.object_)):
        return True
    name = kind.__name__
    return kind.__module__.startswith("pyarrow.") and (
        name in ("Table", "RecordBatch", "Schema", "Field") or name.endswith(("Array", "Scalar"))
    )


def _kale_mapped_file(array):
    """``(file, offset)`` when ``array`` is exactly a copy-on-write map of a file (what
    ``_kale_marshal_load`` returns for a big .npy), else None."""
    import numpy

    base = array.base
    if not isinstance(base, numpy.memmap) or base.mode != "c" or not base.filename:
        return None
    if (base.__array_interface__["data"][0], base.nbytes) != (array.__array_interface__["data"][0], array.nbytes):
        return None
    if not (array.flags.c_contiguous or array.flags.f_contiguous):
        return None
    return base.filename, base.offset


def _kale_dirty_ranges(address, nbytes):
    """Byte ranges ``[(start, end)]`` (relative to ``address``) of the pages of a private
    file mapping that hold private copies (written since mapped, or swapped out), read
    from /proc/self/pagemap: O(pages) of 8 bytes, no page of data touched. None where
    the kernel does not tell (no /proc, or a pagemap without flags)."""
    import mmap
    import os
    import sys

    import numpy

    if not nbytes:
        return []
    page = mmap.PAGESIZE
    first, last = address // page, (address + nbytes - 1) // page
    entries = numpy.zeros(last - first + 1, dtype=numpy.uint64)
    probe = numpy.ones(1, dtype=numpy.uint64)  # a present anonymous page: the kernel must say so
    probe_entry = numpy.zeros(1, dtype=numpy.uint64)
    try:
        handle = os.open("/proc/self/pagemap", os.O_RDONLY)
    except OSError:
        return None
    try:
        done = os.preadv(handle, [entries], first * 8)
        os.preadv(handle, [probe_entry], probe.__array_interface__["data"][0] // page * 8)
    except (OSError, AttributeError):
        return None
    finally:
        os.close(handle)
    top = 7 if sys.byteorder == "little" else 0
    if done != entries.nbytes or (int(probe_entry.view(numpy.uint8)[top]) & 0xA0) != 0x80:
        return None
    flags = entries.view(numpy.uint8)[top::8]  # bit 63 present, 62 swapped, 61 file page
    dirty = numpy.flatnonzero(((flags & 0xA0) == 0x80) | ((flags & 0x40) != 0))
    if not len(dirty):
        return []
    breaks = numpy.flatnonzero(numpy.diff(dirty) != 1)
    starts = numpy.concatenate(([dirty[0]], dirty[breaks + 1]))
    ends = numpy.concatenate((dirty[breaks], [dirty[-1]])) + 1
    if len(starts) > 64:  # scattered writes: one comparison over their whole span
        starts, ends = starts[:1], ends[-1:]
    return [
        (max(int(start + first) * page - address, 0), min(int(end + first) * page - address, nbytes))
        for start, end in zip(starts, ends)
    ]


def _kale_mapped_changed(fingerprint, array):
    """Whether a mapped array differs from its file: the dirty pages, compared byte for
    byte with the file (a write of the same values is no change)."""
    import numpy

    if (array.shape, array.dtype, array.strides) != fingerprint["meta"]:
        return True
    raw = fingerprint["raw"]
    if raw is None:
        return False
    ranges = _kale_dirty_ranges(raw.__array_interface__["data"][0], raw.nbytes)
    if ranges is None:
        ranges = [(0, raw.nbytes)]
    if not ranges:
        return False
    original = numpy.memmap(fingerprint["file"], dtype=numpy.uint8, mode="r",
                            offset=fingerprint["offset"], shape=(raw.nbytes,))
    return any(not numpy.array_equal(raw[start:end], original[start:end]) for start, end in ranges)


def _kale_frame_fingerprint(frame, pickler=None):
    """A pandas >= 3 DataFrame or Series: a shallow copy (sharing every block, so any
    write to ``frame`` copies the block first), its axes and their names, attrs and
    flags, and a hash of each object column whose elements may be mutable."""
    from pandas.api.types import infer_dtype

    shallow = frame.copy(deep=False)
    fingerprint = {
        "kind": "frame", "value": frame, "shallow": shallow, "layout": _kale_frame_layout(shallow),
        "axes": [(axis, list(axis.names)) for axis in frame.axes],
        "name": getattr(frame, "name", None), "flags": frame.flags.allows_duplicate_labels,
        "attrs": _kale_hash(frame.attrs, pickler) if frame.attrs else None, "objects": {},
    }
    immutable = {"string", "bytes", "floating", "integer", "mixed-integer-float", "decimal",
                 "complex", "boolean", "datetime", "date", "timedelta", "time", "period",
                 "interval", "empty"}
    dtypes = [frame.dtype] if frame.ndim == 1 else list(frame.dtypes)
    for position, dtype in enumerate(dtypes):
        if dtype != object:
            continue
        values = (frame if frame.ndim == 1 else frame.iloc[:, position])._values
        if infer_dtype(values, skipna=True) not in immutable:
            fingerprint["objects"][position] = _kale_hash(values, pickler)
    return fingerprint


def _kale_frame_layout(frame):
    """Per block: its reference set (pandas' Copy-on-Write bookkeeping, shared by every
    block viewing the same data), data address, shape and column positions."""
    layout = []
    for block in frame._mgr.blocks:
        values = block.values
        address = getattr(values, "__array_interface__", {"data": (None,)})["data"][0]
        layout.append((block.refs, address, getattr(values, "shape", None), block.mgr_locs.as_array.tobytes()))
    return layout


def _kale_frame_columns(frame):
    """Per column position: (reference set, data address) of the block row holding it."""
    if frame.ndim == 1:  # a Series: one block, placed over its rows
        block = frame._mgr.blocks[0]
        return [(block.refs, getattr(block.values, "__array_interface__", {"data": (None,)})["data"][0])]
    keys = [None] * frame.shape[1]
    for block in frame._mgr.blocks:
        values = block.values
        interface = getattr(values, "__array_interface__", None)
        for row, position in enumerate(block.mgr_locs.as_array):
            address = None
            if interface is not None:
                address = interface["data"][0] + (row * values.strides[0] if values.ndim == 2 else 0)
            keys[position] = (block.refs, address)
    return keys


def _kale_frame_changed(fingerprint, frame, pickler=None):
    """Whether a DataFrame/Series differs from its shallow copy at load: axes, names,
    attrs and flags first, then only the columns whose block is not the shared one
    (compared exactly), and the hashed object columns."""
    shallow = fingerprint["shallow"]
    if type(frame) is not type(shallow) or frame.ndim != shallow.ndim:
        return True
    for axis, (original, names) in zip(frame.axes, fingerprint["axes"]):
        if list(axis.names) != names:
            return True
        if axis is not original and not (type(axis) is type(original) and axis.dtype == original.dtype and axis.equals(original)):
            return True
    if frame.ndim == 1 and not (frame.name is fingerprint["name"] or frame.name == fingerprint["name"]):
        return True
    if frame.flags.allows_duplicate_labels != fingerprint["flags"]:
        return True
    if (_kale_hash(frame.attrs, pickler) if frame.attrs else None) != fingerprint["attrs"]:
        return True
    layout = _kale_frame_layout(frame)
    same = len(layout) == len(fingerprint["layout"]) and all(
        a[0] is b[0] and a[1:] == b[1:] for a, b in zip(layout, fingerprint["layout"])
    )
    if not same:
        now, then = _kale_frame_columns(frame), _kale_frame_columns(shallow)
        for position, (key, old) in enumerate(zip(now, then)):
            if key[0] is old[0] and key[1] == old[1]:
                continue
            if frame.ndim == 1:
                changed = not frame.equals(shallow)
            else:
                changed = not frame.iloc[:, position].equals(shallow.iloc[:, position])
            if changed:
                return True
        # equal, though in new blocks (pandas consolidated them, or equal values were
        # written): share them from now on, so the next check is quick again
        fingerprint["shallow"] = shallow = frame.copy(deep=False)
        fingerprint["layout"] = _kale_frame_layout(shallow)
    for position, digest in fingerprint["objects"].items():
        column = frame if frame.ndim == 1 else frame.iloc[:, position]
        if _kale_hash(column._values, pickler) != digest:
            return True
    return False


def _kale_hash(value, pickler=None):
    """SHA-256 of ``value``'s pickle (protocol 5), every out-of-band buffer (numpy,
    pandas, Arrow) hashed where it lies, without a copy; torch tensors by their bytes,
    keras models by their weights, pandas objects column by column (so pandas'
    internal block layout does not count), functions, classes and modules by identity.
    SHA-256: hardware-accelerated on current CPUs (faster here than blake2b or md5),
    and a changed value hashing the same is practically impossible."""
    import hashlib
    import types

    digest = hashlib.sha256()
    digest.update(f"{type(value).__module__}.{type(value).__qualname__}\n".encode())

    def buffer(pickle_buffer):
        try:
            raw = pickle_buffer.raw()
        except BufferError:  # not contiguous
            raw = memoryview(bytes(memoryview(pickle_buffer)))
        digest.update(raw.nbytes.to_bytes(8, "little"))
        digest.update(raw)

    sink = types.SimpleNamespace(write=digest.update)
    (pickler or _kale_hash_pickler())(sink, protocol=5, buffer_callback=buffer).dump(value)
    return digest.hexdigest()


def _kale_hash_pickler():
    """The pickler class ``_kale_hash`` uses (built once per step: building it costs more
    than hashing a small value)."""
    import pickle
    import sys
    import types

    kinds = {}
    references = (types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                  types.BuiltinMethodType, types.ModuleType)

    def classify(cls):
        if issubclass(cls, type) or issubclass(cls, references):
            return "ref"
        pandas, torch = sys.modules.get("pandas"), sys.modules.get("torch")  # loaded if in use
        if pandas is not None and issubclass(cls, pandas.DataFrame):
            return "frame"
        if pandas is not None and issubclass(cls, pandas.Series):
            return "series"
        if torch is not None and issubclass(cls, torch.Tensor):
            return "tensor"
        for name in (f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__):
            module, _, qualname = name.rpartition(".")
            if qualname in ("Model", "Functional", "Sequential") and module.partition(".")[0] in ("keras", "tf_keras", "tensorflow"):
                return "keras"
        return ""

    def reducer_override(self, obj):
        cls = type(obj)
        kind = kinds.get(cls)
        if kind is None:
            kind = kinds[cls] = classify(cls)
        if not kind:
            return NotImplemented
        if kind == "ref":  # by identity: code and modules are not values a step changes
            if getattr(obj, "__module__", None) == "builtins":
                return NotImplemented  # by name (the token below is made of builtins)
            return str, (f"<{cls.__name__} {getattr(obj, '__qualname__', getattr(obj, '__name__', ''))} at {id(obj):#x}>",)
        if kind == "frame":
            columns = [obj.iloc[:, i]._values for i in range(obj.shape[1])]
            return tuple, ((cls, obj.columns, obj.index, columns, obj.attrs, obj.flags.allows_duplicate_labels),)
        if kind == "series":
            return tuple, ((cls, obj.name, obj.index, obj._values, obj.attrs),)
        if kind == "keras":
            return tuple, ((cls, obj.get_weights()),)
        import torch

        tensor = obj.detach()
        if tensor.layout != torch.strided or tensor.is_nested or tensor.is_quantized:
            return NotImplemented
        data = tensor.cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        return tuple, ((cls, str(obj.dtype), tuple(obj.shape), obj.stride(), obj.requires_grad,
                        str(obj.device), data),)

    return type("KaleHashPickler", (pickle.Pickler,), {"reducer_override": reducer_override})


RUNTIME_FUNCTIONS = (
    "_kale_run_step",
    "_kale_fail",
    "_kale_cell_filename",
    "_kale_exec_cell",
    "_kale_display_function",
    "_kale_report_failure",
    "_kale_save",
    "_kale_load",
    "_kale_marshal_registry",
    "_kale_marshal_type_name",
    "_kale_marshal_problem",
    "_kale_marshal_choose",
    "_kale_marshal_remove",
    "_kale_path_size",
    "_kale_marshal_save",
    "_kale_marshal_pickler",
    "_kale_marshal_reduce_strings",
    "_kale_marshal_oversized",
    "_kale_marshal_is_arrow_array",
    "_kale_marshal_write",
    "_kale_marshal_load",
    "_kale_snapshot",
    "_kale_log_metrics",
    "_kale_watch_start",
    "_kale_watch_cell",
    "_kale_watch_check",
    "_kale_watch_how",
    "_kale_watch_finish",
    "_kale_divergence_message",
    "_kale_check_limit",
    "_kale_fingerprint",
    "_kale_over_limit",
    "_kale_fingerprint_changed",
    "_kale_is_immutable",
    "_kale_mapped_file",
    "_kale_dirty_ranges",
    "_kale_mapped_changed",
    "_kale_frame_fingerprint",
    "_kale_frame_layout",
    "_kale_frame_columns",
    "_kale_frame_changed",
    "_kale_hash",
    "_kale_hash_pickler",
)
"""Functions shipped with each component (kfp ships functions only, not classes)."""
