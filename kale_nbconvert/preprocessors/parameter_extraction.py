"""Stage 2: the ``pipeline-parameters`` cell -> typed pipeline parameters.

Runs before name analysis because analysis must know which names are parameters
(parameters are passed by value to the steps that read them, never as artifacts).
"""

from __future__ import annotations

import ast

from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

from .. import syntax
from ..errors import NotebookError
from ..model import RESOURCE_KEY, Parameter

TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}


MAX_INT = 2**53
"""KFP passes parameters as JSON numbers (doubles): larger integers lose digits."""


def parameter_type(value) -> str | None:
    """The KFP parameter type of a literal default, or None if it has none."""
    return TYPE_NAMES.get(type(value))


def json_problem(value, where: str = "") -> str | None:
    """Why ``value`` would not reach a step unchanged through KFP's JSON, or None."""
    if value is None or isinstance(value, (bool, str)):
        return None
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            return f"{where or 'the value'} is an integer too large for KFP (more than 2**53)"
        return None
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return f"{where or 'the value'} is {value!r}, which JSON cannot carry"
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            problem = json_problem(item, f"{where}[{index}]")
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where or 'the dict'} has the key {key!r}; JSON keys are text"
            problem = json_problem(item, f"{where}[{key!r}]")
            if problem:
                return problem
        return None
    return f"{where or 'the value'} is {type(value).__name__}, which JSON cannot carry"


def extract_parameters(code: str) -> list[tuple[str, object, int]]:
    """``name = literal`` lines of a parameters cell -> [(name, value, line)].

    Raises ``ValueError(message, line)`` for anything that is not such a line.
    """
    tree = syntax.parse(code)
    found = []
    for statement in tree.body:
        targets = statement.targets if isinstance(statement, ast.Assign) else None
        if isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets = [statement.target]
        if not targets or len(targets) != 1 or not isinstance(targets[0], ast.Name):
            raise ValueError(
                "a parameters cell may only hold 'name = literal' lines", statement.lineno
            )
        try:
            value = ast.literal_eval(statement.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise ValueError(
                f"the value of parameter {targets[0].id!r} is not a literal "
                "(numbers, strings, booleans, lists and dicts of them)",
                statement.lineno,
            ) from None
        found.append((targets[0].id, value, statement.lineno))
    return found


class ParameterExtractionPreprocessor(Preprocessor):
    """Turn ``name = literal`` lines of the parameters cell into pipeline parameters.

    Types come from the literal: ``int``, ``float``, ``str``, ``bool``, ``list``,
    ``dict``. ``None`` has no KFP type, so it is refused with a fix.
    """

    enabled = Bool(True).tag(config=True)

    def preprocess(self, nb, resources):
        pipeline = resources[RESOURCE_KEY]
        for cell in pipeline.parameters_cells:
            try:
                found = extract_parameters(cell.code)
            except SyntaxError as error:
                raise NotebookError(
                    f"syntax error in the parameters cell: {error.msg}",
                    notebook=pipeline.notebook,
                    cell=cell.number,
                    line=error.lineno,
                    fix="fix the Python syntax",
                    section="pipeline-parameters",
                ) from None
            except (ValueError, MemoryError, RecursionError) as error:
                message, line = (
                    error.args if isinstance(error, ValueError) and len(error.args) == 2
                    else ("the parameters cell is too deeply nested to read", None)
                )
                raise NotebookError(
                    message,
                    notebook=pipeline.notebook,
                    cell=cell.number,
                    line=line,
                    fix="compute derived values in a step; keep only literals here",
                    section="pipeline-parameters",
                ) from None
            for name, value, line in found:
                self._add(pipeline, cell, name, value, line)
        return nb, resources

    def _add(self, pipeline, cell, name, value, line) -> None:
        type_name = parameter_type(value)
        if type_name is None:
            raise NotebookError(
                f"parameter {name!r} has the value {value!r}, which has no pipeline "
                "parameter type",
                notebook=pipeline.notebook,
                cell=cell.number,
                line=line,
                fix="give it a default of type int, float, str, bool, list or dict",
                section="pipeline-parameters",
            )
        problem = json_problem(value)
        if problem:
            raise NotebookError(
                f"parameter {name!r}: {problem}",
                notebook=pipeline.notebook,
                cell=cell.number,
                line=line,
                fix="use a value JSON can hold (finite numbers, text keys); KFP passes "
                "parameters as JSON",
                section="pipeline-parameters",
            )
        if name in pipeline.parameters:
            first = pipeline.parameters[name]
            raise NotebookError(
                f"parameter {name!r} is defined twice (first in cell {first.cell}, "
                f"line {first.line})",
                notebook=pipeline.notebook,
                cell=cell.number,
                line=line,
                fix="keep one definition",
                section="pipeline-parameters",
            )
        if name.startswith("_"):
            raise NotebookError(
                f"parameter {name!r} starts with '_', which KFP does not allow",
                notebook=pipeline.notebook,
                cell=cell.number,
                line=line,
                fix="rename it without the leading underscore",
                section="pipeline-parameters",
            )
        pipeline.parameters[name] = Parameter(name, type_name, value, cell.number, line)
