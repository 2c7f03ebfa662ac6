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

A format may add fields: ``pickle_module`` (torch), ``custom_objects`` (keras),
``text_columns`` (pickle: the positions of a pandas object's object columns that hold
only str, None and NaN, so the divergence check of a step that loads it need not scan
them). A single number (int, float, bool, numpy scalar, one-element array) also gets
``number`` and ``shown`` (its ``str``): the metrics step reads a metric from there, so
its container needs no library to unpickle it.

``_kale_marshal_save(obj, path)`` / ``_kale_marshal_load(path)`` are the only entry
points; anything that reads a finished run's artifacts should call them. The formats
are one table, ``_kale_marshal_formats`` (each with its save and load function,
``_kale_format_<name>_save`` / ``_load``, side by side below), and one function
decides which a value gets and what is refused, ``_kale_marshal_choose``, by the
object's type (every class of its MRO, matched by ``module.QualName`` so nothing is
imported until the object is known to need it):

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
        stop = getattr(error, "kale_stop", None)
        if stop is not None and stop[0] == "refused":
            _, what, hint = stop
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
    path = getattr(artifact, "path", artifact)
    try:
        return _kale_marshal_load(path, _kale_marshal_registry())
    except Exception as error:  # noqa: BLE001 - every failure becomes one clear message
        about = _kale_marshal_about(path)
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


def _kale_marshal_about(path):
    """The ``kale.json`` of the artifact folder ``path`` (a dict), or ``{}`` when there
    is none to read (a bare dill file of earlier versions, a broken artifact)."""
    import json
    import os

    try:
        with open(os.path.join(path, "kale.json"), encoding="utf-8") as handle:
            about = json.load(handle)
    except (OSError, ValueError):
        return {}
    return about if isinstance(about, dict) else {}


def _kale_marshal_registry():
    """The notebook's own serializers: ``KALE_SERIALIZERS`` of the running step."""
    import sys

    main = sys.modules.get("__main__")
    registry = getattr(main, "KALE_SERIALIZERS", None)
    return registry if isinstance(registry, dict) else None


def _kale_marshal_type_name(obj):
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _kale_marshal_formats():
    """The formats, one row each, in the order ``_kale_marshal_choose`` tries them:
    ``name -> (recognise, save, load)``. Adding a format is adding its row here and its
    two functions; nothing else names a format.

    ``recognise(obj, names)``: the KFP artifact kind (``"Dataset"``, ``"Model"``) when
    ``obj``, whose classes are ``names`` (``module.QualName``, its MRO), gets this
    format, else None; None for a format chosen otherwise (``custom:``: the notebook's
    ``KALE_SERIALIZERS``; ``dill``: what pickle cannot carry).
    ``save(obj, folder, registry)``: writes ``obj`` into ``folder``, returns
    ``(serializer, file, extra kale.json fields)``; the serializer is this format's name
    unless the format hands the value on to another (pickle and joblib to dill, when
    the value holds code defined in the notebook).
    ``load(data, meta, registry)``: the value back from the file ``data`` that kale.json
    (``meta``) names.
    """
    def keras(obj, names):
        for name in names:
            module, _, qualname = name.rpartition(".")
            if qualname in ("Model", "Functional", "Sequential") and module.partition(".")[0] in ("keras", "tf_keras", "tensorflow"):
                return "Model"
        return None

    def torch(obj, names):
        if "torch.nn.modules.module.Module" in names:
            return "Model"
        return "Dataset" if "torch.Tensor" in names or "torch._tensor.Tensor" in names else None

    def joblib(obj, names):
        models = ("sklearn.base.BaseEstimator", "xgboost.core.Booster", "lightgbm.basic.Booster")
        return "Model" if any(name in names for name in models) else None

    return {
        "custom:": (None, _kale_format_custom_save, _kale_format_custom_load),  # custom:KEY
        "npy": (lambda obj, names: "Dataset" if names[0] == "numpy.ndarray" and not obj.dtype.hasobject else None,
                _kale_format_npy_save, _kale_format_npy_load),
        "pickle": (lambda obj, names: "Dataset" if {name.partition(".")[0] for name in names} & {"numpy", "pandas"} else None,
                   _kale_format_pickle_save, _kale_format_pickle_load),
        "arrow": (lambda obj, names: "Dataset" if "pyarrow.lib.Table" in names else None,
                  _kale_format_arrow_save, _kale_format_arrow_load),
        "polars": (lambda obj, names: "Dataset" if "polars.dataframe.frame.DataFrame" in names else None,
                   _kale_format_polars_save, _kale_format_polars_load),
        "xgboost-dmatrix": (lambda obj, names: "Dataset" if names[0] == "xgboost.core.DMatrix" else None,
                            _kale_format_xgboost_dmatrix_save, _kale_format_xgboost_dmatrix_load),
        # before torch: a keras model on the torch backend is a torch Module too
        "keras": (keras, _kale_format_keras_save, _kale_format_keras_load),
        "torch": (torch, _kale_format_torch_save, _kale_format_torch_load),
        "joblib": (joblib, _kale_format_joblib_save, _kale_format_joblib_load),
        "dill": (None, _kale_format_dill_save, _kale_format_dill_load),
    }


def _kale_marshal_choose(obj, registry=None, pickling=False):
    """The type policy, the one place that decides what becomes of a value:
    ``(serializer, KFP artifact kind, refusal)``, from the classes of its MRO (matched
    by ``module.QualName``: nothing is imported before the value needs it). In order:

    1. refused, ``(None, None, (what, fix))``: what cannot travel between steps
       (generators, modules, open files, handles on something outside this process:
       locks, sockets, connections, sessions); ``fix`` may be None
    2. a class the notebook registered (``registry``, its ``KALE_SERIALIZERS``):
       ``("custom:module.QualName", "Artifact", None)``
    3. the first format of ``_kale_marshal_formats`` that recognises it
    4. anything else: ``("pickle", "Artifact", None)``

    ``pickling``: ``obj`` is met by the pickler (the value saved or anything in it), so
    only what the pickler must do with it matters: refused as above (``what`` then says
    the value contains it), ``("dill", None, None)`` for code defined in the notebook,
    which travels by value, and for modules (dill pickles them by reference), else
    ``(None, None, None)``. Functions and classes of the imports/functions cells
    (``__kale_shared__``) go by reference: every step defines them, and the consumer's
    own class must be used.
    """
    import sys
    import types

    if pickling and (type(obj) is types.FunctionType or isinstance(obj, type)):
        if not (obj.__module__ in ("__main__", None) or "<" in obj.__qualname__):
            return None, None, None
        main, name = sys.modules.get("__main__"), obj.__qualname__
        if getattr(main, "__kale_shared__", {}).get(name) is obj and getattr(main, name, None) is obj:
            return None, None, None  # from the functions cell: every step defines it
        return "dill", None, None
    names = [f"{c.__module__}.{c.__qualname__}" for c in type(obj).__mro__]
    first = names[0]
    handles = {
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
    handle = next((handles[name] for name in names if name in handles), None)
    if first in ("builtins.generator", "builtins.async_generator", "builtins.coroutine"):
        refusal = (f"is a {first.split('.')[1].replace('_', ' ')}, which runs only once",
                   "turn it into a list (list(...)) if the data is small")
    elif first == "builtins.module":
        if pickling:
            return "dill", None, None
        refusal = ("is a module", "import it in the step that uses it")
    elif "_io._IOBase" in names and first not in ("_io.BytesIO", "_io.StringIO"):
        refusal = ("is an open file", "hand on its path and open it where it is read")
    elif handle is not None:
        refusal = (f"is {handle}, a handle on something outside this process", None)
    else:
        refusal = None
    if refusal is not None:
        if pickling:
            refusal = (f"contains an object that {refusal[0]} ({first})", None)
        return None, None, refusal
    if pickling:
        return None, None, None
    custom = _kale_marshal_custom(obj, registry)
    if custom is not None:
        return "custom:" + custom[0], "Artifact", None
    for name, (recognise, _, _) in _kale_marshal_formats().items():
        kind = recognise(obj, names) if recognise is not None else None
        if kind:
            return name, kind, None
    return "pickle", "Artifact", None


def _kale_marshal_format(serializer):
    """The row of ``_kale_marshal_formats`` for a serializer as kale.json names it
    (``custom:KEY``: the ``custom:`` row)."""
    formats = _kale_marshal_formats()
    name = serializer if serializer in formats else serializer.partition(":")[0] + ":"
    if name not in formats:
        raise ValueError(f"unknown serializer {serializer!r} (written by a newer kale_nbconvert?)")
    return formats[name]


def _kale_marshal_stop(reason, what=None, fix=None):
    """The exception that stops a save for ``reason``, which it carries as state
    (``error.kale_stop``): what catches it never reads its message.

    ``"refused"``: the value, or something in it, cannot travel (``_kale_marshal_choose``
    says ``what`` and the ``fix``): a TypeError saying ``what``, which ``_kale_save``
    turns into the step's error. ``"by value"``: the pickler met what only dill carries
    (code defined in the notebook, a module inside the value): a LookupError; the
    format that pickled falls back to dill (``_kale_marshal_needs_dill``).
    """
    error = TypeError(what) if reason == "refused" else LookupError(reason)
    error.kale_stop = (reason, what, fix)
    return error


def _kale_marshal_save(obj, path, registry=None, info=None):
    """Write ``obj`` as the artifact folder ``path`` (see the module docstring), once
    and atomically; returns what it wrote into ``kale.json``."""
    import json
    import os

    serializer, kind, refusal = _kale_marshal_choose(obj, registry)
    if refusal is not None:
        raise _kale_marshal_stop("refused", *refusal)
    save = _kale_marshal_format(serializer)[1]
    partial = f"{path}.partial"
    _kale_marshal_remove(partial)
    os.makedirs(partial)
    try:
        serializer, file, extra = save(obj, partial, registry)
        size = _kale_path_size(partial)  # every data file; kale.json is not written yet
        meta = {
            "format": "kale-marshal/1",
            "serializer": serializer,
            "file": file,
            "python_type": _kale_marshal_type_name(obj),
            "kind": kind,
            "size_bytes": size,
            **_kale_marshal_number(obj),
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


def _kale_marshal_number(obj):
    """``{"number": ..., "shown": str(obj)}`` when ``obj`` is a single number (an int,
    float, bool, a numpy scalar, a one-element array or tensor), else ``{}``.

    The metrics step reads a metric from there, without unpickling it: it then needs
    no library in its container (numpy for an ``np.float64`` accuracy), and prints the
    value as the notebook's ``print`` does (``32``, ``0.95``)."""
    import math
    import numbers
    import warnings

    if isinstance(obj, (str, bytes, complex)):
        return {}
    try:
        if not isinstance(obj, numbers.Real):
            shape = getattr(obj, "shape", None)
            if not hasattr(type(obj), "__float__") or shape is None or tuple(shape) not in ((), (1,)):
                return {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            number = float(obj)
            shown = str(obj)
    except Exception:  # noqa: BLE001 - not a number after all: the metrics step loads it
        return {}
    if isinstance(obj, numbers.Integral):
        number = int(obj)
    elif not math.isfinite(number):
        number = str(number)  # JSON has no nan/inf; float("nan") reads it back
    return {"number": number, "shown": shown}


def _kale_marshal_load(path, registry=None):
    """Read back what ``_kale_marshal_save`` wrote at ``path`` (a bare dill file, the
    format of earlier versions, is read too)."""
    import json
    import os

    if os.path.isfile(path):
        return _kale_format_dill_load(path, {}, registry)
    with open(os.path.join(path, "kale.json"), encoding="utf-8") as handle:
        meta = json.load(handle)
    serializer = meta["serializer"]
    data = os.path.join(path, meta["file"])
    return _kale_marshal_format(serializer)[2](data, meta, registry)


def _kale_path_size(path):
    """Bytes in a file, or in all the files of a folder (0 if it does not exist)."""
    import os

    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(root, name))
                   for root, _, names in os.walk(path) for name in names)
    return os.path.getsize(path) if os.path.exists(path) else 0


def _kale_marshal_remove(path):
    import os
    import shutil

    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def _kale_format_npy_save(obj, folder, registry):
    """numpy's .npy (``np.save``), for an ndarray of a non-object dtype."""
    import os

    import numpy

    with open(os.path.join(folder, "data.npy"), "wb") as handle:
        numpy.save(handle, obj, allow_pickle=False)
    return "npy", "data.npy", {}


def _kale_format_npy_load(data, meta, registry):
    import os

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


def _kale_format_pickle_save(obj, folder, registry):
    """stdlib pickle, protocol 5, through ``_kale_marshal_pickler``; dill when the value
    holds what only dill carries. ``text_columns``: see ``_kale_marshal_text_columns``."""
    import os
    import pickle

    def write():
        pickler = _kale_marshal_pickler(pickle.Pickler, False)
        with open(os.path.join(folder, "data.pkl"), "wb") as handle:
            pickler(handle, protocol=5).dump(obj)
        texts = _kale_marshal_text_columns(obj, pickler.kale_texts)
        return "pickle", "data.pkl", {"text_columns": texts} if texts else {}

    return _kale_marshal_or_dill(write, obj, folder, "data.pkl")


def _kale_format_pickle_load(data, meta, registry):
    import pickle

    with open(data, "rb") as handle:
        return pickle.load(handle)


def _kale_format_dill_save(obj, folder, registry):
    """dill, for what the stdlib pickle cannot carry (code defined in the notebook goes
    by value); chosen by the formats that fall back to it, never by type."""
    import os

    import dill

    with open(os.path.join(folder, "data.dill"), "wb") as handle:
        _kale_marshal_pickler(dill.Pickler, True)(handle, protocol=dill.HIGHEST_PROTOCOL).dump(obj)
    return "dill", "data.dill", {}


def _kale_format_dill_load(data, meta, registry):
    import dill

    with open(data, "rb") as handle:
        return dill.load(handle)


def _kale_format_joblib_save(obj, folder, registry):
    """joblib's pickler (large numpy buffers written apart), for fitted models; plain
    pickle where joblib is not installed."""
    import os

    try:
        from joblib.numpy_pickle import NumpyPickler
    except ImportError:
        return _kale_format_pickle_save(obj, folder, registry)

    def write():
        with open(os.path.join(folder, "data.joblib"), "wb") as handle:
            _kale_marshal_pickler(NumpyPickler, False)(handle, protocol=5).dump(obj)
        return "joblib", "data.joblib", {}

    return _kale_marshal_or_dill(write, obj, folder, "data.joblib")


def _kale_format_joblib_load(data, meta, registry):
    import joblib

    return joblib.load(data)


def _kale_format_torch_save(obj, folder, registry):
    """``torch.save``, pickling with ``_kale_marshal_pickler``, or dill when the value
    holds code defined in the notebook (kale.json's ``pickle_module`` says which)."""
    import os
    import pickle
    import types

    import torch

    if isinstance(obj, torch.Tensor) and obj.layout == torch.strided and not obj.is_nested:
        # torch.save writes a view's whole storage: a 10-element slice of a 1 GB
        # tensor would carry 1 GB. Such a view goes as a copy of itself.
        if _kale_marshal_oversized(obj.numel() * obj.element_size(), obj.untyped_storage().nbytes()):
            obj = obj.detach().clone().requires_grad_(obj.requires_grad)
    try:
        module = types.SimpleNamespace(Pickler=_kale_marshal_pickler(pickle.Pickler, False), __name__="pickle")
        with open(os.path.join(folder, "data.pt"), "wb") as handle:
            torch.save(obj, handle, pickle_module=module)
        return "torch", "data.pt", {"pickle_module": "pickle"}
    except Exception as error:  # noqa: BLE001 - only what dill carries goes on to dill
        if not _kale_marshal_needs_dill(error, type_errors=False):
            raise
    import dill

    with open(os.path.join(folder, "data.pt"), "wb") as handle:
        torch.save(obj, handle, pickle_module=dill)
    return "torch", "data.pt", {"pickle_module": "dill"}


def _kale_format_torch_load(data, meta, registry):
    import torch

    if meta.get("pickle_module") == "dill":
        import dill

        return torch.load(data, pickle_module=dill, weights_only=False)
    return torch.load(data, weights_only=False)


def _kale_format_keras_save(obj, folder, registry):
    """A .keras file (``model.save``); classes defined in the notebook (a subclassed
    model, custom layers) travel beside it by value, for load_model's custom_objects."""
    import os

    obj.save(os.path.join(folder, "model.keras"))
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


def _kale_format_keras_load(data, meta, registry):
    import os

    import keras

    custom = {}
    if meta.get("custom_objects"):
        import sys

        import dill

        with open(os.path.join(os.path.dirname(data), meta["custom_objects"]), "rb") as handle:
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


def _kale_format_xgboost_dmatrix_save(obj, folder, registry):
    """xgboost's binary buffer format: a DMatrix holds a C handle that pickle refuses;
    this keeps data, labels, weights, base margins, groups and feature names and types."""
    import os

    obj.save_binary(os.path.join(folder, "data.dmatrix"), silent=True)
    return "xgboost-dmatrix", "data.dmatrix", {}


def _kale_format_xgboost_dmatrix_load(data, meta, registry):
    import xgboost

    return xgboost.DMatrix(data, silent=True)


def _kale_format_arrow_save(obj, folder, registry):
    """An Arrow IPC file, for a pyarrow Table."""
    import os

    import pyarrow
    import pyarrow.ipc

    with pyarrow.OSFile(os.path.join(folder, "data.arrow"), "wb") as sink:
        with pyarrow.ipc.new_file(sink, obj.schema) as writer:
            writer.write_table(obj)
    return "arrow", "data.arrow", {}


def _kale_format_arrow_load(data, meta, registry):
    import pyarrow.ipc

    with pyarrow.OSFile(data, "rb") as source:
        return pyarrow.ipc.open_file(source).read_all()


def _kale_format_polars_save(obj, folder, registry):
    """An Arrow IPC file, for a polars DataFrame."""
    import os

    obj.write_ipc(os.path.join(folder, "data.arrow"))
    return "polars", "data.arrow", {}


def _kale_format_polars_load(data, meta, registry):
    import polars

    with open(data, "rb") as handle:
        return polars.read_ipc(handle)


def _kale_format_custom_save(obj, folder, registry):
    """The notebook's own ``save(obj, path)`` (``KALE_SERIALIZERS``), writing ``data``."""
    import os

    key, entry = _kale_marshal_custom(obj, registry) or (None, None)
    if not entry:
        raise LookupError(f"no serializer registered for {key}")
    entry[0](obj, os.path.join(folder, "data"))
    return "custom:" + key, "data", {}


def _kale_format_custom_load(data, meta, registry):
    key = meta["serializer"][len("custom:"):]
    for candidate, entry in (registry or {}).items():
        name = candidate if isinstance(candidate, str) else f"{candidate.__module__}.{candidate.__qualname__}"
        if name == key:
            return entry[1](data)
    raise LookupError(
        f"{key} was saved with a serializer from KALE_SERIALIZERS, which is not "
        "defined here (define it in a 'functions' cell)"
    )


def _kale_marshal_custom(obj, registry):
    """``(module.QualName, (save, load))`` of the first class of ``obj``'s MRO that the
    notebook's ``registry`` lists (by class or by name), else None."""
    for klass in type(obj).__mro__ if registry else ():
        name = f"{klass.__module__}.{klass.__qualname__}"
        if klass in registry or name in registry:
            return name, registry.get(klass) or registry.get(name)
    return None


def _kale_marshal_pickler(base, by_value_ok):
    """A pickler class that stops at what cannot travel, nested anywhere in the object,
    and (unless ``by_value_ok``) at what only dill carries (``_kale_marshal_choose``
    with ``pickling``): it raises ``_kale_marshal_stop`` (``"refused"``, or ``"by
    value"`` so the format falls back to dill). ``kale_texts``: what its string reduce
    learned (``_kale_marshal_reduce_strings``)."""
    import copyreg
    import types

    verdicts = {}
    arrow_arrays = {}
    texts = {}  # what _kale_marshal_reduce_strings learned, for _kale_marshal_text_columns

    class Call:
        """A value rebuilt on load by calling ``function(*args)``, then
        ``result[key] = value`` for each of ``items`` (pickle's reduce protocol)."""

        def __init__(self, function, args, items=()):
            self.reduced = (function, args, None, None, iter(items) if items else None)

    def judge(obj):
        """The policy's verdict on what the pickler meets; () when it has nothing to say."""
        verdict = _kale_marshal_choose(obj, None, True)
        return verdict if verdict[0] or verdict[2] else ()

    def reducer_override(self, obj):
        cls = type(obj)
        if cls is Call:
            return obj.reduced
        if cls is types.FunctionType or isinstance(obj, type):
            if by_value_ok:
                return NotImplemented
            verdict = judge(obj)  # per object: is it the notebook's?
        else:
            if cls.__name__ == "ndarray" and cls.__module__ == "numpy":
                if obj.dtype.kind in "mM":
                    # numpy copies datetime arrays to pickle them; their int64 view it does not
                    return cls.view, (obj.view("i8"), obj.dtype)
                if obj.dtype.kind == "O" and obj.size >= 256:
                    reduced = _kale_marshal_reduce_strings(obj, Call, learned=texts)
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
                verdict = verdicts[cls] = judge(obj)
        if verdict:  # refused, or only dill carries it
            if verdict[2] is not None:
                raise _kale_marshal_stop("refused", *verdict[2])
            if not by_value_ok:
                raise _kale_marshal_stop("by value")
        return NotImplemented

    return type("KalePickler", (base,), {"reducer_override": reducer_override, "kale_texts": texts})


def _kale_marshal_or_dill(write, obj, folder, file):
    """``write()``, or, when pickling stopped at what only dill carries, ``obj`` with
    dill instead (``file``, half written, removed)."""
    import os

    try:
        return write()
    except Exception as error:  # noqa: BLE001 - only what dill carries goes on to dill
        if not _kale_marshal_needs_dill(error):
            raise
    _kale_marshal_remove(os.path.join(folder, file))
    return _kale_format_dill_save(obj, folder, None)


def _kale_marshal_needs_dill(error, type_errors=True):
    """Whether a failed pickling should be retried with dill: the pickler stopped "by
    value" (never a refusal), or pickle could not carry something (PicklingError,
    AttributeError, and TypeError unless ``type_errors`` is false: torch's); not the
    value's own KeyError or IndexError."""
    import pickle

    stop = getattr(error, "kale_stop", None)
    if stop is not None:
        return stop[0] == "by value"
    if isinstance(error, LookupError):
        return False
    return isinstance(error, (pickle.PicklingError, AttributeError) + ((TypeError,) if type_errors else ()))


def _kale_marshal_reduce_strings(array, Call, chunk=65536, learned=None):
    """A compact reduce for an object array that holds mostly ``str``: the strings
    joined with a separator no element contains, ``chunk`` elements at a time, split
    again on load; the other elements are put back by index (missing values, None or
    NaN, all at once by an index array). Pickling each string instead memoises it
    (about 58 bytes per element at the peak, more than the strings themselves); here
    the peak is the joined text plus one chunk's list.
    Returns None when the array is not like that. ``learned`` (a dict) gets
    ``id(array) -> (array, order, flat indices of the elements that are not str, None
    or NaN)``: what the scan saw, for ``_kale_marshal_text_columns``."""
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
    if learned is not None:
        learned[id(array)] = (array, order, [index for index, _ in others])
    others += [(numpy.frombuffer(where, dtype=numpy.int64), value) for value, where in missing.values()]
    if len(texts) == 1:
        whole = Call(numpy.array, (texts[0], object), others)
    else:
        whole = Call(numpy.concatenate, ([Call(numpy.array, (text, object)) for text in texts],), others)
    if array.ndim == 1:
        return whole.reduced
    return numpy.reshape, (whole, array.shape, order)


def _kale_marshal_text_columns(obj, learned):
    """Positions of the object columns of a pandas DataFrame or Series that hold only
    str, None and NaN, as the pickler's string reduce found them while saving it
    (``learned``): kale.json's ``text_columns``, so the divergence check of a step that
    loads it needs not scan them again. Empty for anything else."""
    import sys

    pandas = sys.modules.get("pandas")
    if not learned or pandas is None or not isinstance(obj, (pandas.DataFrame, pandas.Series)):
        return []
    import numpy

    positions = []
    for block in getattr(getattr(obj, "_mgr", None), "blocks", ()):
        array, order, others = learned.get(id(block.values), (None, None, None))
        if array is not block.values:
            continue
        places = [0] if obj.ndim == 1 else block.mgr_locs.as_array.tolist()
        if array.ndim == 1:  # a Series: one column
            mixed = {0} if others else set()
        else:  # a frame's block holds its columns along its first axis
            flat = numpy.array(others, dtype=numpy.int64)
            mixed = set(numpy.unravel_index(flat, array.shape, order=order)[0].tolist())
        positions += [place for row, place in enumerate(places) if row not in mixed]
    return sorted(positions)


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
