"""``packages_to_install`` from the notebook's imports, resolved in THIS environment.

A module is mapped to the distribution that provides it here (``sklearn`` ->
``scikit-learn``) and pinned to the version installed here, so the step container runs
what the notebook ran. The standard library is left out; modules no installed
distribution provides (local files, typos) are reported, never guessed.
"""

from __future__ import annotations

import ast
import functools
import sys
from importlib import metadata

from . import syntax

NEVER_INSTALL = frozenset({"kfp", "__future__"})
"""kfp comes with the component (``install_kfp_package``)."""


def _dotted_imports(code: str, members: bool = False):
    """The dotted modules ``code`` imports (anywhere, not relative); with ``members``,
    ``from a.b import c`` also gives ``a.b.c`` (``c`` may be a submodule)."""
    for node in syntax.nodes_if(code, "import"):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            if members:
                yield from (f"{node.module}.{a.name}" for a in node.names if a.name != "*")


def imported_modules(code: str) -> set[str]:
    """Top-level names of the modules ``code`` imports (anywhere, not relative)."""
    return {name.split(".")[0] for name in _dotted_imports(code)}


@functools.lru_cache(maxsize=1)
def _distributions_by_module() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def distribution_pin(distribution: str) -> str:
    """``name==version`` of an installed distribution."""
    return f"{distribution}=={metadata.version(distribution)}"


BEHAVIOUR_EXTRAS = {"pandas": ("pyarrow",)}
"""Optional libraries that change what a library computes when they are importable, so
a step with the library gets them too where they are installed here: pandas 3 stores
strings with pyarrow when it can import it, else as Python objects, and a step without
pyarrow would hand on ``StringDtype(storage='python')`` columns where the notebook had
``'pyarrow'`` ones (found by running the compiled YAML in clean environments:
tests/test_container_equivalent.py)."""


def resolve_packages(modules) -> tuple[list[str], list[str]]:
    """Modules -> (sorted pinned requirements, sorted modules nobody provides); each
    distribution brings its :data:`BEHAVIOUR_EXTRAS` that are installed here."""
    pins, unknown = set(), set()
    stdlib = set(sys.stdlib_module_names) | set(sys.builtin_module_names)
    for module in modules:
        if module in stdlib or module in NEVER_INSTALL:
            continue
        distributions = _distributions_by_module().get(module)
        if not distributions:
            unknown.add(module)
            continue
        distribution = sorted(distributions)[0]
        if distribution.lower() == "kfp":
            continue
        pins.add(distribution_pin(distribution))
        for extra in BEHAVIOUR_EXTRAS.get(distribution.lower(), ()):
            try:
                pins.add(distribution_pin(extra))
            except metadata.PackageNotFoundError:  # not here: the notebook ran without it
                pass
    return sorted(pins, key=str.lower), sorted(unknown)


FORK_UNSAFE = frozenset(
    """tensorflow keras jax jaxlib polars grpc ray pyspark torch_xla cupy mxnet""".split()
)
"""Libraries a ``--local`` run's warm worker never imports before forking its steps,
because they start threads or hold native state at import that a forked child
inherits broken: JAX warns that ``os.fork()`` after its import can deadlock; polars'
documentation says its thread pool deadlocks a forked child; TensorFlow (and keras
on it) and gRPC document fork as unsupported after initialisation; Ray, Spark (a JVM)
and GPU runtimes likewise. A step importing one still works: it imports it itself,
after the fork."""


def preload_modules(codes) -> list[str]:
    """Modules a local run may import once, before forking its steps: every module
    the code imports that is the standard library's or an installed distribution's
    (never the notebook's own files, whose import runs user code), minus
    :data:`FORK_UNSAFE`. ``from a.b import c`` gives ``a.b`` and ``a.b.c`` (``c``
    may be a submodule; the worker skips what does not import)."""
    stdlib = set(sys.stdlib_module_names)
    found: dict[str, None] = {}
    for code in codes:
        for name in _dotted_imports(code, members=True):
            root = name.split(".")[0]
            if root in FORK_UNSAFE or root in NEVER_INSTALL:
                continue
            if root in stdlib or root in _distributions_by_module():
                found[name] = None
    return list(found)
