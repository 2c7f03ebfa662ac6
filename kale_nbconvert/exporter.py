"""``jupyter nbconvert --to kale``: the exporter that wires the preprocessor chain."""

from __future__ import annotations

import ast
import json
import logging
import os
import sys
from pathlib import Path

import nbformat
from nbconvert.exporters import TemplateExporter
from traitlets import default, validate

from . import syntax
from .errors import KaleError, NotebookError
from .literals import docstring_text, py_literal
from .model import RESOURCE_KEY
from .preprocessors import CHAIN
from .preprocessors.tag_merge import notebook_name
from .tags import TagError, parse_tags
from .script_context import script_context

TEMPLATE_NAME = "kale"

DAMAGED_FIX = (
    "the file is damaged or is not a notebook: restore it from version control, or "
    "open and re-save it in Jupyter"
)


def templates_directory() -> str:
    """Folder holding ``kale/``: the source tree (editable install) or the data files
    a wheel installs under ``share/jupyter/nbconvert/templates``."""
    candidates = [
        Path(__file__).resolve().parent.parent / "templates",
        Path(sys.prefix) / "share" / "jupyter" / "nbconvert" / "templates",
    ]
    for candidate in candidates:
        if (candidate / TEMPLATE_NAME / "conf.json").exists():
            return str(candidate)
    return str(candidates[0])


class KaleExporter(TemplateExporter):
    """Export a Kale-tagged notebook as a Kubeflow Pipelines v2 Python script.

    Runs, in order: :class:`TagMergePreprocessor`, :class:`ParameterExtractionPreprocessor`,
    :class:`NameAnalysisPreprocessor`, :class:`MarshalInjectionPreprocessor`; each is
    configurable the traitlets way (``--NameAnalysisPreprocessor.explain=True``).
    """

    export_from_notebook = "Kale"
    output_mimetype = "text/x-python"

    @default("file_extension")
    def _file_extension_default(self):
        return ".py"

    @default("template_name")
    def _template_name_default(self):
        return TEMPLATE_NAME

    @default("template_file")
    def _template_file_default(self):
        return "index.py.j2"

    @default("default_preprocessors")
    def _default_preprocessors_default(self):
        return [f"{cls.__module__}.{cls.__name__}" for cls in CHAIN]

    @default("extra_template_basedirs")
    def _default_extra_template_basedirs(self):
        return [os.getcwd(), templates_directory()]

    @validate("extra_template_basedirs")
    def _always_find_our_template(self, proposal):
        # A user's --TemplateExporter.extra_template_basedirs replaces the default list;
        # keep ours in it, or the exporter would silently vanish.
        directories = list(proposal["value"])
        ours = templates_directory()
        if ours not in directories:
            directories.append(ours)
        return directories

    def default_filters(self):
        yield from super().default_filters()
        yield ("py", py_literal)
        yield ("docstring", docstring_text)

    def _preprocess(self, nb, resources):
        try:
            nb, resources = super()._preprocess(nb, resources)
            # Decisions about the script's text are made in Python, not in the template.
            resources["kale_script"] = script_context(resources[RESOURCE_KEY])
        except NotebookError as error:
            raise _locate(error, nb, resources) from None
        except nbformat.ValidationError as error:
            # nbconvert validates the notebook against the nbformat schema after each
            # preprocessor (e.g. an empty tag, or a tag with a comma, is invalid).
            raise _invalid(error, nb, resources) from None
        except (MemoryError, RecursionError) as error:
            # Python's parser gives up on absurdly nested code (e.g. 100,000 nested
            # parentheses) with these instead of a SyntaxError; find the cell.
            raise _too_deep(error, nb, resources) from None
        return nb, resources

    # -- reading ---------------------------------------------------------------------
    # nbconvert reads the file with nbformat before any preprocessor runs, so a file
    # that is not a (v4) notebook would fail with nbformat's own traceback. Read it
    # here instead and say which file, what is wrong and how to fix it.

    def from_filename(self, filename, resources=None, **kw):
        _quiet_tracebacks(self.log)
        try:
            with open(filename, "rb"):
                pass
        except OSError as error:
            raise NotebookError(
                f"cannot read the file: {error.strerror or error}",
                notebook=os.path.basename(filename),
                fix="check the path and its permissions",
            ) from None
        return super().from_filename(filename, resources, **kw)

    def from_file(self, file_stream, resources=None, **kw):
        _quiet_tracebacks(self.log)
        name = notebook_name(resources or {})
        try:
            text = file_stream.read()
        except UnicodeDecodeError as error:
            raise _not_utf8(error, name) from None
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as error:
                raise _not_utf8(error, name) from None
        return self.from_notebook_node(read_notebook(text, name), resources=resources, **kw)

    def from_notebook_node(self, nb, resources=None, **kw):
        _quiet_tracebacks(self.log)
        try:
            output, resources = super().from_notebook_node(nb, resources, **kw)
        finally:
            syntax.forget()  # the cells' trees are needed only during one conversion
        try:
            output.encode("utf-8")
        except UnicodeEncodeError as error:  # never written: FilesWriter would fail midway
            raise NotebookError(
                f"internal error: the script would contain text that is not UTF-8 "
                f"({error.reason})",
                notebook=notebook_name(resources),
                fix="please report this notebook to kale_nbconvert",
            ) from None
        return output, resources


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


def _not_utf8(error: UnicodeDecodeError, name: str) -> NotebookError:
    data = error.object if isinstance(error.object, bytes) else b""
    line = data[: error.start].count(b"\n") + 1
    return NotebookError(
        f"the file is not UTF-8 text (byte 0x{data[error.start]:02x} at offset "
        f"{error.start}, line {line})" if data else "the file is not UTF-8 text",
        notebook=name,
        fix="notebooks are UTF-8: re-save it in Jupyter, or convert it, e.g. "
        "'iconv -f latin1 -t utf-8'",
    )


def _cell_places(nb, resources=None) -> dict[int, tuple[str | None, str | None]]:
    """cell number -> (step, section) as the tags group the cells (nbconvert's chain
    works on copies, so this is worked out again from the notebook, tolerantly)."""
    places: dict[int, tuple[str | None, str | None]] = {}
    current: tuple[str | None, str | None] = (None, None)
    cells = nb.get("cells") if hasattr(nb, "get") else None
    for index, cell in enumerate(cells if isinstance(cells, list) else []):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        metadata = cell.get("metadata")
        try:
            tags = parse_tags(metadata.get("tags", []) if isinstance(metadata, dict) else [])
        except TagError:
            tags = None
        if tags is None:  # a broken tag: the step above is not where it belongs
            places[index + 1] = (None, None)
            continue
        if tags.section == "skip":
            places[index + 1] = (None, "skip")
            continue
        if tags is not None and tags.step:
            current = (tags.step, None)
        elif tags is not None and tags.section:
            current = (None, tags.section)
        places[index + 1] = current
    return places


def _locate(error: NotebookError, nb, resources) -> NotebookError:
    """Add the notebook, and the step or section of the cell, where the raiser did not."""
    fields = {}
    if not error.notebook:
        fields["notebook"] = notebook_name(resources or {})
    if error.cell is not None and not error.step and not error.section:
        step, section = _cell_places(nb, resources).get(error.cell, (None, None))
        if step:
            fields["step"] = step
        elif section:
            fields["section"] = section
    return error.update(**fields) if fields else error


def _invalid(error, nb, resources) -> NotebookError:
    path = list(getattr(error, "absolute_path", None) or getattr(error, "path", None) or [])
    cell = path[1] + 1 if len(path) > 1 and path[0] == "cells" and isinstance(path[1], int) else None
    where = "/".join(str(part) for part in (path[2:] if cell else path)) or "the notebook"
    message = str(getattr(error, "message", "") or error).splitlines()[0]
    if len(message) > 160:
        message = message[:157] + "..."
    step, section = _cell_places(nb).get(cell, (None, None)) if cell else (None, None)
    return NotebookError(
        f"the notebook breaks the Jupyter notebook format at {where}: {message}",
        notebook=notebook_name(resources or {}),
        cell=cell,
        step=step,
        section=section,
        fix="fix it in Jupyter (tags must be non-empty and contain no comma)"
        if "tags" in path
        else DAMAGED_FIX,
    )


def _too_deep(error, nb, resources) -> NotebookError:
    name = notebook_name(resources or {})
    places = _cell_places(nb, resources)
    for index, cell in enumerate(nb.get("cells", [])):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        try:
            ast.parse(source)
        except (MemoryError, RecursionError):
            step, section = places.get(index + 1, (None, None))
            return NotebookError(
                "the cell is nested too deeply for Python's parser",
                notebook=name,
                cell=index + 1,
                step=step,
                section=section,
                fix="simplify the expression (split it into several statements)",
            )
        except (SyntaxError, ValueError):
            continue
    return NotebookError(
        f"the notebook is too large or too deeply nested to analyse ({type(error).__name__})",
        notebook=name,
        fix="split very large or deeply nested cells",
    )


class _ShortKaleErrors(logging.Filter):
    """``jupyter nbconvert`` logs a failed conversion with its full traceback. For our
    errors the traceback is noise (the message says where and what): log the message
    alone, unless the log level is DEBUG (``--debug``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        # traitlets apps keep the logger at DEBUG and set the level on the handler
        handlers = logging.getLogger(record.name).handlers
        debug = any(0 < handler.level <= logging.DEBUG for handler in handlers)
        if isinstance(error, KaleError) and not debug:
            record.msg, record.args = "%s", (str(error),)
            record.exc_info = record.exc_text = None
        return True


def _quiet_tracebacks(log: logging.Logger | logging.LoggerAdapter) -> None:
    logger = getattr(log, "logger", log)
    if not any(isinstance(f, _ShortKaleErrors) for f in logger.filters):
        logger.addFilter(_ShortKaleErrors())
