"""Stage 2: the ``pipeline-parameters`` cell -> typed pipeline parameters.

Runs before name analysis because analysis must know which names are parameters
(parameters are passed by value to the steps that read them, never as artifacts).
"""

from __future__ import annotations

import ast

from .stage import Stage

from .. import syntax
from ..errors import NotebookError
from ..model import RESOURCE_KEY, Parameter
from ..grouping import INJECTED_PARAMETERS, is_injected

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


def _injected_cells(nb, cells: list) -> set[int]:
    """The numbers of the ``cells`` that are papermill's injected-parameters cell."""
    notebook_cells = nb.get("cells") or []
    numbers = set()
    for cell in cells:
        nb_cell = notebook_cells[cell.number - 1] if 0 < cell.number <= len(notebook_cells) else {}
        metadata = nb_cell.get("metadata") if isinstance(nb_cell, dict) else None
        if isinstance(metadata, dict) and is_injected(metadata.get("tags") or []):
            numbers.add(cell.number)
    return numbers


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class ParameterExtractionPreprocessor(Stage):
    """Turn ``name = literal`` lines of the parameters cell into pipeline parameters.

    Types come from the literal: ``int``, ``float``, ``str``, ``bool``, ``list``,
    ``dict``. ``None`` has no KFP type, so it is refused with a fix.

    papermill's ``injected-parameters`` cell is read last, wherever it is: as when
    papermill runs the notebook, its values override the defaults of the parameters
    cell (a name the parameters cell lacks becomes a parameter too), and a warning
    lists what changed. An ``int`` given for a ``float`` parameter keeps it a float
    (``papermill -p lr 1`` gives ``lr = 1``).
    """


    def preprocess(self, nb, resources):
        pipeline = resources[RESOURCE_KEY]
        injected = _injected_cells(nb, pipeline.parameters_cells)
        cells = [c for c in pipeline.parameters_cells if c.number not in injected] + [
            c for c in pipeline.parameters_cells if c.number in injected
        ]
        overridden: set[str] = set()
        for cell in cells:
            found = self._read(pipeline, cell)
            changes = []
            for name, value, line in found:
                change = self._add(pipeline, cell, name, value, line, cell.number in injected, overridden)
                if change:
                    changes.append(change)
            if changes:
                message = (
                    f"{pipeline.notebook}, cell {cell.number} ({INJECTED_PARAMETERS}): as "
                    "when papermill runs the notebook, the values it injected override the "
                    "parameters cell, so they are the pipeline's defaults: "
                    + "; ".join(changes)
                    + f". Fix: delete the {INJECTED_PARAMETERS!r} cell to keep the "
                    "parameters cell's defaults (the script's --param NAME=VALUE sets a "
                    "run's values)"
                )
                pipeline.warnings.append(message)
                self.log.warning(message)
        return nb, resources

    @staticmethod
    def _read(pipeline, cell) -> list[tuple[str, object, int]]:
        """The ``name = literal`` lines of one parameters cell; a NotebookError for
        anything else."""
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
        return found

    @staticmethod
    def _add(pipeline, cell, name, value, line, injected=False, overridden=None) -> str | None:
        """Add one parameter; for an injected cell, override a default and return what
        changed (None if nothing did)."""
        type_name = parameter_type(value)
        give = (
            f"run papermill with a value of type int, float, str, bool, list or dict for "
            f"{name!r}, or delete the {INJECTED_PARAMETERS!r} cell"
            if injected else "give it a default of type int, float, str, bool, list or dict"
        )
        if type_name is None:
            raise NotebookError(
                f"parameter {name!r} has the value {value!r}, which has no pipeline "
                "parameter type",
                notebook=pipeline.notebook,
                cell=cell.number,
                line=line,
                fix=give,
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
        if injected and name in pipeline.parameters and name not in overridden:
            first = pipeline.parameters[name]
            overridden.add(name)
            if first.type_name == "float" and type_name == "int":
                value, type_name = float(value), "float"
            pipeline.parameters[name] = Parameter(name, type_name, value, first.cell, first.line)
            if (value, type_name) == (first.default, first.type_name):
                return None
            retyped = f", a {first.type_name}; now a {type_name}" if type_name != first.type_name else ""
            return f"{name} = {_short(value)} (was {_short(first.default)} in cell {first.cell}{retyped})"
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
        if injected:
            overridden.add(name)
            return f"{name} = {_short(value)} (a new parameter: the parameters cell has no {name!r})"
        return None
