"""Marshalling: how a variable crosses a step boundary. Runs INSIDE a pipeline step
(in-step part of the script); ``kale_nbconvert.local_runs`` also imports it to load a
finished run's values back into a notebook.

Each variable is one KFP artifact
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
"""


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
