"""Which step or section each code cell belongs to, from the tags alone.

A cell with ``step:NAME`` starts (or continues) that step; a section tag (``imports``,
``functions``, ``pipeline-parameters``, ``pipeline-metrics``) starts that section; an
untagged cell continues whatever is above it; ``skip`` leaves the cell out without
changing what is above; papermill's ``injected-parameters`` cell is a parameters cell
that changes nothing for the cells after it. Pure, and tolerant: a cell whose JSON or
tags cannot be read is yielded with its :class:`~kale_nbconvert.problems.Problem`, and
the walk goes on. ``TagMergePreprocessor`` builds the pipeline from this walk (raising
the first problem); ``error_placement`` uses the same walk to say where a cell is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from .problems import Problem
from .tags import CellTags, TagError, parse_tags

INJECTED_PARAMETERS = "injected-parameters"
"""papermill's tag for the cell it adds with the values it was given (``-p NAME VALUE``):
right after the cell tagged ``parameters``, or first in the notebook when none is (a
``pipeline-parameters`` cell is not one papermill looks for)."""


@dataclass
class PlacedCell:
    """One code cell and where the tags put it."""

    number: int
    """1-based position in the notebook, markdown cells included."""
    source: str
    tags_raw: list
    tags: CellTags | None
    """None when ``problem`` is set."""
    problem: Problem | None
    injected: bool
    above: tuple[str | None, str | None]
    """(step, section) of the cells above: what an untagged cell continues."""
    step: str | None
    section: str | None
    """The section, ``skip`` for a skipped cell; None for a step cell."""


def is_injected(tags_raw) -> bool:
    """Whether a cell's raw ``metadata.tags`` mark it as papermill's injected cell."""
    return isinstance(tags_raw, (list, tuple)) and any(
        isinstance(tag, str) and tag.strip() == INJECTED_PARAMETERS for tag in tags_raw
    )


def own_step(tags_raw, step_hint: str | None) -> str | None:
    """The step a cell belongs to, read from its raw tags when they could not all be
    parsed: its own ``step:``/``block:`` tag, else the step above (``step_hint``)."""
    for tag in tags_raw if isinstance(tags_raw, (list, tuple)) else ():
        kind, colon, name = tag.strip().partition(":") if isinstance(tag, str) else ("", "", "")
        if kind in ("step", "block") and colon and name:
            return name
    return step_hint


def _damaged(what: str) -> Problem:
    return Problem(
        f"the cell's JSON is damaged: {what}",
        "delete and re-create the cell in Jupyter, or restore the file from version control",
    )


def _parts(nb_cell) -> tuple[str | None, list, Problem | None]:
    """(source, raw tags, problem) of a code cell; source None for other cells."""
    if not isinstance(nb_cell, dict):
        return "", [], _damaged(f"it is {type(nb_cell).__name__}, not an object")
    if nb_cell.get("cell_type") != "code":
        return None, [], None
    source = nb_cell.get("source", "")
    if isinstance(source, list):  # tolerate un-normalised notebooks
        if not all(isinstance(line, str) for line in source):
            return "", [], _damaged("'source' holds something other than text")
        source = "".join(source)
    if not isinstance(source, str):
        return "", [], _damaged(f"'source' is {type(source).__name__}, not text")
    try:
        source.encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate, e.g. from a "\ud800" escape
        line = source.count("\n", 0, error.start) + 1
        return "", [], Problem(
            f"line {line} holds {source[error.start]!r}, half of a UTF-16 pair, "
            "which is not a character Python can compile",
            "delete it (the file was damaged, or written by a buggy tool)",
        )
    metadata = nb_cell.get("metadata", {})
    if not isinstance(metadata, dict):
        return "", [], _damaged(f"'metadata' is {type(metadata).__name__}, not an object")
    tags = metadata.get("tags", [])
    return source, [] if tags is None else tags, None


def _parsed(tags_raw, injected: bool) -> CellTags:
    """The cell's tags; an injected cell reads as a parameters cell (under Kale's
    precedence rule like any section tag), its messages naming the tag as written."""
    if not injected:
        return parse_tags(tags_raw)
    as_parameters = [
        tag for tag in tags_raw
        if not (isinstance(tag, str) and tag.strip() == INJECTED_PARAMETERS)
    ] + ["pipeline-parameters"]
    try:
        tags = parse_tags(as_parameters)
    except TagError as error:
        error.message = error.message.replace("'pipeline-parameters'", repr(INJECTED_PARAMETERS))
        raise
    tags.overridden = [
        INJECTED_PARAMETERS if tag == "pipeline-parameters" else tag for tag in tags.overridden
    ]
    return tags


def placed_cells(cells) -> Iterator[PlacedCell]:
    """Every code cell of ``cells`` (a notebook's cell list), in order, placed."""
    current: tuple[str | None, str | None] = (None, None)
    for index, nb_cell in enumerate(cells):
        source, tags_raw, problem = _parts(nb_cell)
        if source is None:
            continue
        injected = is_injected(tags_raw)
        tags = None
        if problem is None:
            try:
                tags = _parsed(tags_raw, injected)
            except TagError as error:
                problem = error
        above = current
        if problem is not None:
            place = (None, None)  # a broken cell: the step above is not where it belongs
        elif tags.section == "skip":
            place = (None, "skip")
        elif injected:
            place = (None, tags.section)
        elif tags.step:
            place = current = (tags.step, None)
        elif tags.section:
            place = current = (None, tags.section)
        else:
            place = current
        yield PlacedCell(
            number=index + 1, source=source, tags_raw=tags_raw, tags=tags, problem=problem,
            injected=injected, above=above, step=place[0], section=place[1],
        )


def cell_places(cells) -> dict[int, tuple[str | None, str | None]]:
    """Cell number -> (step, section), for any list (a broken cell is (None, None))."""
    return {cell.number: (cell.step, cell.section) for cell in placed_cells(cells)}
