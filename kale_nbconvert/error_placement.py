"""Where a conversion error belongs, and how it is logged.

The stages raise :class:`~kale_nbconvert.errors.NotebookError` with what they know;
``KaleExporter`` passes every error through here once: the notebook's name and the
cell's step or section are added where the raiser did not know them, and the two
failures that do not come from our code get a cell of their own: nbformat's schema
check (``invalid``) and Python's parser giving up on deeply nested code (``too_deep``).
"""

from __future__ import annotations

import ast
import logging

from .errors import KaleError, NotebookError
from .preprocessors.tag_merge import notebook_name
from .reading import DAMAGED_FIX
from .grouping import cell_places


def _cell_places(nb) -> dict[int, tuple[str | None, str | None]]:
    """cell number -> (step, section), as the tags group the cells: the same walk as
    ``TagMergePreprocessor``'s (nbconvert's chain works on copies, so it is walked
    again over the notebook the error came from)."""
    cells = nb.get("cells") if hasattr(nb, "get") else None
    return cell_places(cells if isinstance(cells, list) else [])


def locate(error: NotebookError, nb, resources) -> NotebookError:
    """Add the notebook, and the step or section of the cell, where the raiser did not."""
    fields = {}
    if not error.notebook:
        fields["notebook"] = notebook_name(resources or {})
    if error.cell is not None and not error.step and not error.section:
        step, section = _cell_places(nb).get(error.cell, (None, None))
        if step:
            fields["step"] = step
        elif section:
            fields["section"] = section
    return error.update(**fields) if fields else error


def invalid(error, nb, resources) -> NotebookError:
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


def too_deep(error, nb, resources) -> NotebookError:
    name = notebook_name(resources or {})
    places = _cell_places(nb)
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


def quiet_tracebacks(log: logging.Logger | logging.LoggerAdapter) -> None:
    logger = getattr(log, "logger", log)
    if not any(isinstance(f, _ShortKaleErrors) for f in logger.filters):
        logger.addFilter(_ShortKaleErrors())
