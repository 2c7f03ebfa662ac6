"""One parse of each cell per conversion.

Several stages read the same cell's syntax tree: name analysis, the metrics cell,
parameter extraction, the package list, the artifact-type and untravelling checks.
Parsing a cell is the costliest thing conversion does (a 3 MB cell takes seconds), so
they share one tree per distinct source here. The trees are shared: treat them as
read-only (copy before changing one). ``KaleExporter`` calls :func:`forget` when a
conversion ends, so a long-lived server does not keep a notebook's trees alive.
"""

from __future__ import annotations

import ast
import functools


@functools.lru_cache(maxsize=512)
def parse(code: str) -> ast.Module:
    """The module tree of ``code`` (raises ``SyntaxError``, which is not cached)."""
    return ast.parse(code)


@functools.lru_cache(maxsize=512)
def nodes(code: str) -> tuple[ast.AST, ...]:
    """Every node of ``code``'s tree, in ``ast.walk`` order; ``()`` if it does not parse."""
    try:
        return tuple(ast.walk(parse(code)))
    except SyntaxError:
        return ()


def nodes_if(code: str, keyword: str) -> tuple[ast.AST, ...]:
    """:func:`nodes`, or ``()`` without walking when ``keyword`` (``"import"``,
    ``"class"``) is nowhere in the text, so the tree cannot hold such a statement."""
    return nodes(code) if keyword in code else ()


def forget() -> None:
    """Drop every cached tree (the end of a conversion)."""
    parse.cache_clear()
    nodes.cache_clear()
