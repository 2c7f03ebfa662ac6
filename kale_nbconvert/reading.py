"""Reading a notebook file before nbconvert does: a file that is not a (v4) notebook
would otherwise fail with nbformat's own traceback. Here it gets a
:class:`~kale_nbconvert.errors.NotebookError` that says which file, what is wrong and
how to fix it. Runs at conversion (``KaleExporter.from_file``).
"""

from __future__ import annotations

import json

import nbformat

from .errors import NotebookError

DAMAGED_FIX = (
    "the file is damaged or is not a notebook: restore it from version control, or "
    "open and re-save it in Jupyter"
)


def read_notebook(text: str, name: str) -> nbformat.NotebookNode:
    """The text of an ``.ipynb`` file -> a v4 notebook, or a :class:`NotebookError` that
    says what is wrong with the file and how to fix it."""
    text = text[1:] if text.startswith("\ufeff") else text  # a BOM is harmless
    if not text.strip():
        raise NotebookError(
            "the file is empty", notebook=name, fix="restore it, or save it again in Jupyter"
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        conflict = any(
            line.startswith(("<<<<<<< ", ">>>>>>> ")) for line in text.splitlines()
        )
        raise NotebookError(
            f"not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}",
            notebook=name,
            fix="resolve the git merge conflict (the <<<<<<< ======= >>>>>>> lines); "
            "'nbdime' merges notebooks"
            if conflict
            else DAMAGED_FIX,
        ) from None
    except RecursionError:
        raise NotebookError(
            "not a notebook: the JSON is nested too deeply", notebook=name, fix=DAMAGED_FIX
        ) from None
    if not isinstance(data, dict):
        raise NotebookError(
            f"not a notebook: the JSON is {type(data).__name__}, not an object",
            notebook=name,
            fix=DAMAGED_FIX,
        )
    if "cells" in data and not isinstance(data["cells"], list):
        raise NotebookError(
            f"not a notebook: 'cells' is {type(data['cells']).__name__}, not a list",
            notebook=name,
            fix=DAMAGED_FIX,
        )
    for index, cell in enumerate(data.get("cells") or []):
        if not isinstance(cell, dict):
            what = f"it is {type(cell).__name__}, not an object"
        elif not isinstance(cell.get("metadata", {}), dict):
            what = f"'metadata' is {type(cell['metadata']).__name__}, not an object"
        else:
            continue
        raise NotebookError(
            f"the cell's JSON is damaged: {what}",
            notebook=name,
            cell=index + 1,
            fix="delete and re-create the cell in Jupyter, or restore the file from "
            "version control",
        )
    version = data.get("nbformat")
    if type(version) is not int:
        raise NotebookError(
            "not a notebook: no integer 'nbformat' version",
            notebook=name,
            fix=DAMAGED_FIX,
        )
    if version < 4:
        raise NotebookError(
            f"the notebook is in the old nbformat {version}; Kale tags need nbformat 4 "
            "(cell tags did not exist before)",
            notebook=name,
            fix=f"upgrade it: 'jupyter nbconvert --to notebook --inplace {name}' (or open "
            "and save it in Jupyter), then tag its cells",
        )
    if version > 4:
        raise NotebookError(
            f"the notebook is in nbformat {version}, newer than this nbformat "
            f"{nbformat.__version__} can read",
            notebook=name,
            fix="upgrade nbformat ('pip install -U nbformat'), or save the notebook as "
            "nbformat 4",
        )
    try:
        return nbformat.reads(text, as_version=4)
    except Exception as error:  # noqa: BLE001 - nbformat's many ways to refuse a file
        raise NotebookError(
            f"nbformat cannot read the notebook: {type(error).__name__}: "
            + str(error).splitlines()[0][:200],
            notebook=name,
            fix=DAMAGED_FIX,
        ) from None


def not_utf8(error: UnicodeDecodeError, name: str) -> NotebookError:
    data = error.object if isinstance(error.object, bytes) else b""
    line = data[: error.start].count(b"\n") + 1
    return NotebookError(
        f"the file is not UTF-8 text (byte 0x{data[error.start]:02x} at offset "
        f"{error.start}, line {line})" if data else "the file is not UTF-8 text",
        notebook=name,
        fix="notebooks are UTF-8: re-save it in Jupyter, or convert it, e.g. "
        "'iconv -f latin1 -t utf-8'",
    )
