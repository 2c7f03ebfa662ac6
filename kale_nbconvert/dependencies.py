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


def imported_modules(code: str) -> set[str]:
    """Top-level names of the modules ``code`` imports (anywhere, not relative)."""
    found = set()
    for node in syntax.nodes_if(code, "import"):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@functools.lru_cache(maxsize=1)
def _distributions_by_module() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def distribution_pin(distribution: str) -> str:
    """``name==version`` of an installed distribution."""
    return f"{distribution}=={metadata.version(distribution)}"


def resolve_packages(modules) -> tuple[list[str], list[str]]:
    """Modules -> (sorted pinned requirements, sorted modules nobody provides)."""
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
    return sorted(pins, key=str.lower), sorted(unknown)
