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
    Jupyter, markdown included), the step (or, for a cell outside any step, its
    ``section``: ``imports``, ``functions``, ``pipeline-parameters``,
    ``pipeline-metrics``), the line within the cell, what is wrong and how to fix it.
    ``str()`` puts all of that on one line.
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
        section: str | None = None,
    ):
        self.message = message
        self.section = section
        self.notebook = notebook
        self.cell = cell
        self.step = step
        self.line = line
        self.fix = fix
        super().__init__(str(self))

    @property
    def location(self) -> str:
        parts = [_one_line(self.notebook) or "notebook"]
        if self.cell is not None:
            parts.append(f"cell {self.cell}")
            if self.section and not self.step:
                parts[-1] += f" ({self.section})"
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

    @classmethod
    def from_problem(
        cls, problem, notebook: str, *, message: str | None = None, fix: str | None = None,
        **place,
    ) -> "NotebookError":
        """The user's error for a pure module's :class:`~kale_nbconvert.problems.Problem`:
        its message, fix, cell and line, with the notebook and the ``place`` (``step``,
        ``section``, or a ``cell`` the module did not know) the caller adds."""
        fields = {"cell": problem.cell, "line": problem.line, **place}
        return cls(
            problem.message if message is None else message,
            notebook=notebook,
            fix=problem.fix if fix is None else fix,
            **fields,
        )

    def update(self, **fields) -> "NotebookError":
        """Fill in location fields the raiser did not know (the exporter adds the step
        or section of a cell); keeps ``args`` in step with ``str()``."""
        for key, value in fields.items():
            setattr(self, key, value)
        self.args = (str(self),)
        return self

    def __reduce__(self):
        return (
            _rebuild_notebook_error,
            (
                self.message,
                self.notebook,
                self.cell,
                self.step,
                self.line,
                self.fix,
                self.section,
            ),
        )


def _one_line(text: str) -> str:
    """``text`` with line breaks and control characters escaped (a file may be named
    ``a\nb.ipynb``; the message must stay one line)."""
    if all(char.isprintable() for char in text):
        return text
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


def _rebuild_notebook_error(message, notebook, cell, step, line, fix, section=None):
    return NotebookError(
        message,
        notebook=notebook,
        cell=cell,
        step=step,
        line=line,
        fix=fix,
        section=section,
    )
