"""The pure layer's one error type.

The modules that know nothing of notebooks (``tags``, ``analysis``) report what is wrong
as a :class:`Problem`: the message, the fix, and what they know of the place (the cell,
the line within it, the name involved). The stage that called them knows the notebook
and the step, and turns it into the user's
:class:`~kale_nbconvert.errors.NotebookError` in one place,
``NotebookError.from_problem``. This module imports nothing, so the pure modules stay
free of nbconvert.
"""

from __future__ import annotations


class Problem(ValueError):
    """Something a pure module refuses; the caller adds the notebook, step or section."""

    def __init__(
        self,
        message: str,
        fix: str | None = None,
        *,
        cell: int | None = None,
        line: int | None = None,
        name: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.cell = cell
        """The 1-based notebook cell, where the module was given cells."""
        self.line = line
        """The line within the cell."""
        self.name = name
        """The name involved (a step name as written, a variable), for a refined fix."""
