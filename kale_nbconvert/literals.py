"""Text from the notebook -> Python literals that cannot break out of themselves.

Everything a notebook author controls (cell sources, metadata strings, parameter
defaults, tag values) reaches the generated script only through these functions, so a
cell containing ``'''``, ``{{ }}`` or ``__import__('os')`` stays data.
"""

from __future__ import annotations


def _plain(text: str) -> bool:
    return all(char.isprintable() or char in "\n\t" for char in text)


def py_literal(value) -> str:
    """A Python literal of ``value`` (str, int, float, bool, None, list, dict, tuple).

    Multi-line strings become readable triple-quoted literals when that is exact;
    anything else falls back to ``repr``, which is always exact.
    """
    if isinstance(value, str):
        if (
            "\n" in value
            and _plain(value)
            and "\\" not in value
            and "'''" not in value
            and not value.endswith("'")
        ):
            return "'''\\\n" + value + "'''"
        return repr(value)
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return f"float({str(value)!r})"
    if isinstance(value, (bool, int, float)) or value is None:
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(py_literal(item) for item in value) + "]"
    if isinstance(value, tuple):
        items = [py_literal(item) for item in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py_literal(k)}: {py_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no literal for {type(value).__name__}")


def docstring_text(text: str) -> str:
    """``text`` made safe to sit inside a triple-double-quoted docstring."""
    escaped = []
    for char in text:
        if char == "\\":
            escaped.append("\\\\")
        elif char in "\n\t" or char.isprintable():
            escaped.append(char)
        else:
            escaped.append(char.encode("unicode_escape").decode("ascii"))
    safe = "".join(escaped).replace('"""', '\\"\\"\\"')
    if safe.endswith('"'):
        safe = safe[:-1] + '\\"'
    return safe
