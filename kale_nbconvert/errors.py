"""The project's errors: each one tells the user where in THEIR notebook it went wrong."""

from __future__ import annotations

from nbconvert.utils.exceptions import ConversionException


class KaleError(ConversionException):
    """Base class of every error this project raises at conversion time.

    It derives from nbconvert's ``ConversionException`` so ``jupyter nbconvert`` reports
    it as a failed conversion (exit code 1) and writes no output file.
    """


class NotebookError(KaleError):
    """Something in the notebook cannot become a correct pipeline.

    Carries the notebook name, the 1-based cell number (as a person counts cells in
    Jupyter, markdown included), the step, the line within the cell, what is wrong and
    how to fix it. ``str()`` puts all of that on one line.
    """

    def __init__(
        self,
        message: str,
        *,
        notebook: str = "",
        cell: int | None = None,
        step: str | None = None,
        line: int | None = None,
        fix: str | None = None,
    ):
        self.message = message
        self.notebook = notebook
        self.cell = cell
        self.step = step
        self.line = line
        self.fix = fix
        super().__init__(str(self))

    @property
    def location(self) -> str:
        parts = [self.notebook or "notebook"]
        if self.cell is not None:
            parts.append(f"cell {self.cell}")
        if self.step:
            parts.append(f"step {self.step}")
        if self.line is not None:
            parts.append(f"line {self.line}")
        return ", ".join(parts)

    def __str__(self) -> str:
        text = f"{self.location}: {self.message}"
        if self.fix:
            text += ("" if text.endswith((".", "?", "!")) else ".") + f" Fix: {self.fix}"
        return text

    def __reduce__(self):
        return (
            _rebuild_notebook_error,
            (self.message, self.notebook, self.cell, self.step, self.line, self.fix),
        )


def _rebuild_notebook_error(message, notebook, cell, step, line, fix):
    return NotebookError(
        message, notebook=notebook, cell=cell, step=step, line=line, fix=fix
    )
