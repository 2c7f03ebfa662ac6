"""Which value each step must receive: the notebook run top to bottom is the reference.

For every name a step reads before binding it, the value it must see is the one left by
the LAST step before it in notebook order that bound or may have changed that name.
That step must be an ancestor through ``prev:`` edges; otherwise the pipeline would
silently compute something else than the notebook, so conversion stops and says which
``prev:`` is missing. Modules are never shipped: a step using a module bound upstream
re-runs the import. Parameters travel by value. Shared ``imports``/``functions`` code
runs in every step.

Conditional bindings (inside ``if``/``for``/``try``, or ``global`` assignments in a
called function) may leave the older value in place. So when a later step takes a
name from a step whose binding was conditional, that step also receives the older
value from the writer before it (which must be its ancestor too) and hands it on.
Only names someone actually takes are passed through, so loop variables in parallel
branches cost nothing unless read downstream.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from .analysis import (
    BUILTIN_NAMES,
    DEFAULT_RULES,
    CallRules,
    Callable_,
    Change,
    CodeFacts,
    StarImportError,
    analyse_cells,
)
from . import syntax
from .errors import NotebookError
from .model import Artifact, Pipeline, Step

METRICS_STEP = "pipeline_metrics"


@dataclass
class _Writer:
    """The step that last changed a name, as of some point in notebook order."""

    step: Step
    change: Change
    previous: "_Writer | None" = None
    """The writer before this one: the value a conditional binding may leave in place."""


def _facts(
    pipeline: Pipeline, cells, step: str | None, known=None, rules: CallRules = DEFAULT_RULES,
    aliases=None,
) -> CodeFacts:
    try:
        return analyse_cells([(c.number, c.code) for c in cells], known, rules, aliases)
    except SyntaxError as error:
        raise NotebookError(
            f"syntax error: {error.msg}",
            notebook=pipeline.notebook,
            cell=getattr(error, "cell", None),
            step=step,
            line=error.lineno,
            fix="fix the cell so it runs in Jupyter",
        ) from None
    except StarImportError as error:
        raise NotebookError(
            str(error),
            notebook=pipeline.notebook,
            cell=getattr(error, "cell", None),
            step=step,
            line=error.line,
            fix=f"import the names you use explicitly: 'from {error.module} import a, b'",
        ) from None


def metric_names(pipeline: Pipeline) -> list[tuple[str, int, int]]:
    """``print(x)`` / ``x`` lines of the metrics cells -> [(name, cell, line)]."""
    found = []
    for cell in pipeline.metrics_cells:
        try:
            tree = syntax.parse(cell.code)
        except SyntaxError as error:
            raise NotebookError(
                f"syntax error: {error.msg}",
                notebook=pipeline.notebook,
                cell=cell.number,
                line=error.lineno,
                fix="fix the cell",
            ) from None
        for statement in tree.body:
            value = statement.value if isinstance(statement, ast.Expr) else None
            if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "print":
                arguments = value.args
            else:
                arguments = [value]
            if not arguments or not all(isinstance(a, ast.Name) for a in arguments):
                raise NotebookError(
                    "a pipeline-metrics cell may only hold 'print(variable)' or "
                    "'variable' lines",
                    notebook=pipeline.notebook,
                    cell=cell.number,
                    line=statement.lineno,
                    fix="compute the metric in a step and list only its variable here",
                )
            for argument in arguments:
                if argument.id not in {name for name, _, _ in found}:
                    found.append((argument.id, cell.number, statement.lineno))
    return found


class DataflowPlanner:
    """Resolves every step's inputs, outputs, parameters and upstream steps in place."""

    def __init__(self, pipeline: Pipeline, rules: CallRules = DEFAULT_RULES):
        self.pipeline = pipeline
        self.rules = rules
        self.shared = _facts(pipeline, pipeline.shared_cells, None, rules=rules)
        self.last: dict[str, _Writer] = {}
        self.callables: dict[str, Callable_] = dict(self.shared.callables)
        self.aliases: dict[str, str] = dict(self.shared.aliases)
        """Every import seen so far (shared cells, earlier steps: they are replayed)."""
        self.ancestors: dict[str, set[str]] = {}

    def plan(self) -> None:
        for step in self.pipeline.step_list():
            self._plan_step(step)
        self._plan_metrics()
        for step in self.pipeline.steps.values():
            # after all steps: a later consumer can add pass-through inputs upstream
            step.upstream = sorted(set(step.prev) | {a.producer for a in step.inputs})

    # -- one step --------------------------------------------------------------
    def _plan_step(self, step: Step) -> None:
        facts = _facts(self.pipeline, step.cells, step.name, self.callables, self.rules, self.aliases)
        self.aliases.update(facts.aliases)
        ancestors: set[str] = set()
        for parent in step.prev:
            ancestors |= {parent} | self.ancestors[parent]
        self.ancestors[step.name] = ancestors
        self._check_parameters(step, facts)
        for use in facts.uses:
            self._resolve(step, use.name, use.cell, use.line, use.optional, ancestors)
        for name, change in facts.changes.items():
            if name in self.pipeline.parameters:
                continue
            if change.kind == "mutate" and self._is_module(name):
                continue  # modules are re-imported, never shipped
            if change.kind == "mutate" and self._is_builtin(name):
                continue  # `dtype=float` passes a builtin, it does not make one
            if change.kind == "mutate":
                step.in_place_changes[name] = (
                    f"cell {change.cell}, line {change.line}: {change.reason or 'changed in place'}"
                )
            self.last[name] = _Writer(step, change, self.last.get(name))
            if change.kind == "callable":
                self.callables[name] = facts.callables[name]
            elif change.kind != "mutate":  # a mutated function keeps its body
                self.callables.pop(name, None)

    def _is_builtin(self, name: str) -> bool:
        """A builtin name the notebook never binds itself (so nobody can change it)."""
        return name in BUILTIN_NAMES and name not in self.last and name not in self.shared.changes

    def _is_module(self, name: str) -> bool:
        writer = self.last.get(name)
        if writer is not None:
            return writer.change.kind == "import"
        shared = self.shared.changes.get(name)
        return shared is not None and shared.kind == "import"

    def _check_parameters(self, step: Step, facts: CodeFacts) -> None:
        for name, change in facts.changes.items():
            parameter = self.pipeline.parameters.get(name)
            if parameter and change.kind == "mutate" and parameter.type_name not in ("list", "dict"):
                continue  # an int, float, str or bool cannot change in place
            if parameter:
                raise NotebookError(
                    f"step {step.name!r} changes pipeline parameter {name!r}; every step "
                    "gets the parameter's run-time value, so the steps would disagree",
                    notebook=self.pipeline.notebook,
                    cell=change.cell,
                    step=step.name,
                    line=change.line,
                    fix=f"assign to a new variable instead (e.g. '{name}_2 = ...')",
                )

    def _resolve(self, step: Step, name: str, cell: int, line: int, optional: bool, ancestors) -> None:
        """``step`` reads ``name`` (cell, line): connect it to the value it must see."""
        if name in self.pipeline.parameters:
            if name not in step.parameters:
                step.parameters.append(name)
            return
        self._connect(step, name, self.last.get(name), cell, line, optional, ancestors)

    def _connect(
        self, step: Step, name: str, writer: _Writer | None, cell: int, line: int, optional: bool, ancestors
    ) -> None:
        """Make ``step`` receive the value ``writer`` left in ``name``.

        A conditional binding may leave the older value in place, so the writer must
        itself receive that older value and hand it on (recursively).
        """
        pipeline = self.pipeline
        if writer is None:
            if optional or name in BUILTIN_NAMES or name in self.shared.changes:
                return
            raise self._undefined(step, name, cell, line)
        change = writer.change
        if change.kind == "import":
            if change.import_source not in step.replayed_imports:
                step.replayed_imports.append(change.import_source)
            return
        if change.kind == "delete":
            if optional:
                return
            raise NotebookError(
                f"step {step.name!r} reads {name!r}, which step {writer.step.name!r} "
                f"deleted (cell {change.cell}, line {change.line})",
                notebook=pipeline.notebook,
                cell=cell,
                step=step.name,
                line=line,
                fix=f"define {name!r} again before this step uses it, or do not delete it",
            )
        if writer.step.name not in ancestors:
            what = "last changed" if change.kind == "mutate" else "last set"
            raise NotebookError(
                f"step {step.name!r} reads {name!r}, {what} by step {writer.step.name!r} "
                f"in cell {change.cell} (line {change.line}), which is not an ancestor of "
                f"{step.name!r}: in the notebook {step.name!r} sees that value, in the "
                "pipeline it would not",
                notebook=pipeline.notebook,
                cell=cell,
                step=step.name,
                line=line,
                fix=f"add the tag 'prev:{writer.step.name}' to step {step.name!r}",
            )
        if not any(a.name == name for a in step.inputs):
            step.inputs.append(Artifact(name, writer.step.name))
        if name not in writer.step.outputs:
            writer.step.outputs.append(name)
            writer.step.output_cells[name] = change.cell
        if change.conditional and not any(a.name == name for a in writer.step.inputs):
            self._connect(
                writer.step, name, writer.previous, change.cell, change.line, True,
                self.ancestors[writer.step.name],
            )

    def _undefined(self, step: Step, name: str, cell: int, line: int) -> NotebookError:
        pipeline = self.pipeline
        where, fix = self._defined_elsewhere(name, cell, step)
        if step.is_metrics:  # not a step of the user's: speak of the cell they tagged
            reader, place = "the pipeline-metrics cell reports", {"section": "pipeline-metrics"}
            fix = fix or (
                f"compute {name!r} in a step; the metrics cell only names values steps computed"
            )
        else:
            reader, place = f"step {step.name!r} reads", {"step": step.name}
            fix = fix or f"define {name!r} in this step or in a step it follows (prev:)"
        return NotebookError(
            f"{reader} {name!r}, which {where}",
            notebook=pipeline.notebook, cell=cell, line=line, fix=fix, **place,
        )

    def _defined_elsewhere(self, name: str, reading_cell: int, step: Step) -> tuple[str, str | None]:
        """Where ``name`` is defined, and a fix that works when followed (None: the
        generic one). Steps are planned in the order they start, so a name nobody
        planned so far binds may still be set: later in the same step, or by a step that
        starts below this one. "Never defined" is said only when no cell binds it."""
        pipeline = self.pipeline
        for cell in pipeline.skipped_cells:
            if _binds(cell.code, name):
                return (
                    f"is defined in cell {cell.number}, which is tagged 'skip'",
                    f"remove the 'skip' tag from cell {cell.number}, or define {name!r} in "
                    "a step above",
                )
        steps = pipeline.step_list()
        for cell in step.cells:
            if cell.number >= reading_cell and _binds(cell.code, name):
                return (
                    f"is set only later in the same step, in cell {cell.number}",
                    f"move the code that sets {name!r} (cell {cell.number}) above where "
                    f"cell {reading_cell} reads it",
                )
        after = steps[steps.index(step) + 1 :] if step in steps else []
        below = [(cell.number, other) for other in after for cell in other.cells if _binds(cell.code, name)]
        if below and not step.is_metrics:
            number, other = min(below, key=lambda found: found[0])
            where = f"is defined in step {other.name!r}, cell {number}, which runs after {step.name!r}"
            if number < reading_cell:  # the steps interleave: the cell reads it from above
                from .tags import kfp_name

                taken = {kfp_name(existing) for existing in pipeline.steps}
                new, count = f"{step.name}_after_{other.name}", 2
                while kfp_name(new) in taken:
                    new, count = f"{step.name}_after_{other.name}_{count}", count + 1
                return where, (
                    f"make cell {reading_cell} a step of its own that follows {other.name!r}: "
                    f"tag it 'step:{new}' and 'prev:{other.name}'"
                )
            follows = other.name in self.ancestors.get(step.name, set())
            prev = "" if follows else f", and add the tag 'prev:{other.name}' to step {step.name!r}"
            return where, (
                f"move the cells of step {other.name!r} above cell {step.first_cell}, where "
                f"step {step.name!r} starts{prev}"
            )
        for cell in pipeline.parameters_cells + pipeline.metrics_cells:
            if _binds(cell.code, name):
                return f"is defined in cell {cell.number}, which is not a step", None
        return "is never defined in this notebook", None

    # -- metrics ---------------------------------------------------------------
    def _plan_metrics(self) -> None:
        """The metrics step: reads each listed variable from the step that last set it.
        A listed pipeline parameter is reported too (Kale's own test notebook lists
        one) with the run's value: the step receives it as a parameter, like any step.

        The step is named ``pipeline_metrics`` unless a step of the notebook already
        is (any name is a valid step name), then ``pipeline_metrics_2``, ..."""
        from .tags import kfp_name

        names = metric_names(self.pipeline)
        if not names:
            return
        taken = {kfp_name(name) for name in self.pipeline.steps}
        name, number = METRICS_STEP, 2
        while kfp_name(name) in taken:
            name, number = f"{METRICS_STEP}_{number}", number + 1
        step = Step(name=name, is_metrics=True)
        step.cells = []
        everything = set(self.ancestors) | set(self.pipeline.steps)
        for variable, cell, line in names:
            parameter = self.pipeline.parameters.get(variable)
            if parameter and parameter.type_name not in ("int", "float", "bool"):
                raise NotebookError(
                    f"metric {variable!r} is a {parameter.type_name} pipeline parameter; "
                    "KFP metrics are numbers",
                    notebook=self.pipeline.notebook,
                    cell=cell,
                    line=line,
                    section="pipeline-metrics",
                    fix=f"remove {variable!r} from the pipeline-metrics cell (its value is "
                    "shown with the run's parameters)",
                )
            self._resolve(step, variable, cell, line, False, everything)
        self.pipeline.steps[name] = step


def _binds(code: str, name: str) -> bool:
    try:
        facts = analyse_cells([(0, code)])
    except (SyntaxError, StarImportError):
        return False
    change = facts.changes.get(name)
    return change is not None and change.kind not in ("mutate", "delete")


def plan_dataflow(pipeline: Pipeline, rules: CallRules = DEFAULT_RULES) -> None:
    """Fill ``inputs``, ``outputs`` (with ``output_cells``), ``parameters``,
    ``replayed_imports`` and ``upstream`` of every step; raise :class:`NotebookError`
    where the pipeline would not compute what the notebook computes."""
    DataflowPlanner(pipeline, rules).plan()
    watched_inputs(pipeline)


def watched_inputs(pipeline: Pipeline) -> None:
    """Fill each step's ``watched_inputs``: input name -> the later steps that read the
    same name from the same producer.

    Static analysis cannot see every in-place change (a third-party method, ``exec``,
    aliasing). If a step changed such an input unseen, the notebook's later readers would
    see the change while the pipeline's get the producer's artifact: the run would
    silently diverge. So each step checks at run time only the inputs where that can
    matter: those someone reads later from the same producer and that the step does not
    hand on itself (an output is an expected change). A reader counts as later if any of
    its cells comes after the step's first cell (steps can interleave). Inputs nobody
    reads later are not checked at all.
    """
    steps = pipeline.step_list()
    readers_of: dict[tuple[str, str], list[Step]] = {}  # (name, producer) -> readers, in order
    for other in steps:
        for artifact in other.inputs:
            readers_of.setdefault((artifact.name, artifact.producer), []).append(other)
    last_cell = {other.name: max((cell.number for cell in other.cells), default=0) for other in steps}
    for step in steps:
        step.watched_inputs = {}
        if step.is_metrics:
            continue  # it only reports values; nothing runs after it
        for artifact in step.inputs:
            if artifact.name in step.outputs:
                continue
            readers = [
                other.name
                for other in readers_of[(artifact.name, artifact.producer)]
                if other is not step and (other.is_metrics or last_cell[other.name] > step.first_cell)
            ]
            if readers:
                step.watched_inputs[artifact.name] = readers


def dataflow_table(pipeline: Pipeline) -> str:
    """The plan as a plain-text table: per step, inputs (name <- step), outputs,
    parameters; then what each step may change in place and the line that does it."""
    rows = [("step", "runs after", "inputs (name <- step)", "outputs", "parameters")]
    for step in pipeline.step_list():
        rows.append(
            (
                step.name,
                ", ".join(step.upstream) or "-",
                ", ".join(f"{a.name} <- {a.producer}" for a in step.inputs) or "-",
                ", ".join(step.outputs) or "-",
                ", ".join(step.parameters) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append(" | ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            lines.append("-+-".join("-" * width for width in widths))
    changes = [
        f"  {step.name}: {name} ({why})"
        for step in pipeline.step_list()
        for name, why in sorted(step.in_place_changes.items())
    ]
    if changes:
        lines += ["", "What steps may change in place, and why:"] + changes
    return "\n".join(lines)
