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

Steps can interleave: a later cell may carry ``step:a`` again, so a step's cells need
not be contiguous. The notebook runs those pieces where they stand; the pipeline runs
all of a step's cells at once, in the order steps start. So once every step is planned,
the notebook is replayed piece by piece, by cell, and each name a piece reads must get
in the pipeline the value the notebook holds at that cell. Where it would not (the
producing step changes the name again below the reading cell; the name is set only
below it; another step's piece changes it in between) conversion stops and says which
piece to make a step of its own (or, for a name set only below, which code to move up).
A step reading a name it changes itself further down is ordinary sequential code and
is left alone.
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
    Use,
    analyse_cells,
)
from . import syntax
from .errors import NotebookError
from .model import Artifact, Cell, Pipeline, Step

METRICS_STEP = "pipeline_metrics"


@dataclass
class _Writer:
    """The step that last changed a name, as of some point in notebook order."""

    step: Step
    change: Change
    previous: "_Writer | None" = None
    """The writer before this one: the value a conditional binding may leave in place."""


@dataclass(frozen=True)
class _Value:
    """What a name holds after a cell changed it (``step`` None: a shared cell)."""

    step: str | None
    cell: int
    line: int
    kind: str
    import_source: str = ""
    reason: str = ""

    @classmethod
    def of(cls, step: str | None, change: Change) -> "_Value":
        return cls(step, change.cell, change.line, change.kind, change.import_source, change.reason)

    def same(self, other: "_Value | None") -> bool:
        """Modules are re-imported, never shipped: two imports of one statement give
        one value wherever they stand."""
        if other is None:
            return False
        if self.kind == other.kind == "import":
            return self.import_source == other.import_source
        return (self.step, self.cell) == (other.step, other.cell)


@dataclass
class _Run:
    """Cells of one step with no other step's cell between them: the notebook runs
    them together where they stand, the pipeline with the rest of their step."""

    step: Step
    cells: list[Cell]
    reads: list[Use]
    """Names read before this piece binds them."""
    writes: dict[str, Change]
    """What this piece last does to each name that travels between steps."""
    start: int = 0

    def __post_init__(self):
        self.start = self.cells[0].number if self.cells else self.start

    @property
    def end(self) -> int:
        return self.cells[-1].number if self.cells else self.start


def _pieces(pipeline: Pipeline) -> dict[str, list[list[Cell]]]:
    """Each step's cells, cut wherever a cell of another step comes between them."""
    owned = sorted(
        ((cell, step.name) for step in pipeline.steps.values() if not step.is_metrics for cell in step.cells),
        key=lambda pair: pair[0].number,
    )
    pieces: dict[str, list[list[Cell]]] = {}
    previous = None
    for cell, name in owned:
        if name != previous:
            pieces.setdefault(name, []).append([])
        pieces[name][-1].append(cell)
        previous = name
    return pieces


def _same(got: _Value | None, want: _Value | None) -> bool:
    return got is want is None or (got is not None and got.same(want))


def _new_step_name(pipeline: Pipeline, step: str, other: str) -> str:
    """``<step>_after_<other>``, numbered if that (or its KFP name) is taken."""
    from .tags import kfp_name

    taken = {kfp_name(existing) for existing in pipeline.steps}
    new, count = f"{step}_after_{other}", 2
    while kfp_name(new) in taken:
        new, count = f"{step}_after_{other}_{count}", count + 1
    return new


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
        raise NotebookError.from_problem(error, pipeline.notebook, step=step) from None


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
        self.pieces = _pieces(pipeline)
        self.runs: list[_Run] = []
        """Every step's pieces with what they read and change, for the replay by cell."""
        self.received: dict[tuple[str, str], _Writer | None] = {}
        """(step, name) -> the writer whose value the step receives for that name."""

    def plan(self) -> None:
        for step in self.pipeline.step_list():
            self._plan_step(step)
        self._plan_metrics()
        self._check_cell_order()
        for step in self.pipeline.steps.values():
            # after all steps: a later consumer can add pass-through inputs upstream
            step.upstream = sorted(set(step.prev) | {a.producer for a in step.inputs})

    # -- one step --------------------------------------------------------------
    def _plan_step(self, step: Step) -> None:
        facts = _facts(self.pipeline, step.cells, step.name, self.callables, self.rules, self.aliases)
        self.runs += self._step_runs(step, facts)
        self.aliases.update(facts.aliases)
        ancestors: set[str] = set()
        for parent in step.prev:
            ancestors |= {parent} | self.ancestors[parent]
        self.ancestors[step.name] = ancestors
        self._check_parameters(step, facts)
        for use in facts.uses:
            self._resolve(step, use.name, use.cell, use.line, use.optional, ancestors)
        for name, change in facts.changes.items():
            if not self._travels(name, change):
                continue
            if change.kind == "mutate":
                step.in_place_changes[name] = (
                    f"cell {change.cell}, line {change.line}: {change.reason or 'changed in place'}"
                )
            self.last[name] = _Writer(step, change, self.last.get(name))
            if change.kind == "callable":
                self.callables[name] = facts.callables[name]
            elif change.kind != "mutate":  # a mutated function keeps its body
                self.callables.pop(name, None)

    def _travels(self, name: str, change: Change, imported=frozenset()) -> bool:
        """Whether a change of ``name`` is one a later step must see through an artifact:
        parameters never change, and modules (``imported``: by earlier pieces of the
        same step) and builtins changed in place are not shipped."""
        if name in self.pipeline.parameters:
            return False
        if change.kind == "mutate" and (name in imported or self._is_module(name)):
            return False  # modules are re-imported, never shipped
        if change.kind == "mutate" and self._is_builtin(name):
            return False  # `dtype=float` passes a builtin, it does not make one
        return True

    def _step_runs(self, step: Step, facts: CodeFacts) -> list[_Run]:
        """The step's pieces with what each reads and changes. A step in one piece
        reuses the step's facts; a step in several has each piece analysed in turn,
        knowing the functions and imports the pieces above it made, as the notebook
        runs them (only interleaved steps pay for this)."""
        pieces = self.pieces.get(step.name, [])
        if len(pieces) <= 1:
            writes = {n: c for n, c in facts.changes.items() if self._travels(n, c)}
            return [_Run(step, step.cells, list(facts.uses), writes)]
        runs, imported = [], set()
        known, aliases = dict(self.callables), dict(self.aliases)  # as the step starts
        for cells in pieces:
            part = _facts(self.pipeline, cells, step.name, known, self.rules, aliases)
            writes = {n: c for n, c in part.changes.items() if self._travels(n, c, imported)}
            runs.append(_Run(step, cells, list(part.uses), writes))
            for name, change in part.changes.items():
                if change.kind == "mutate":
                    continue
                aliases.pop(name, None)
                known.pop(name, None)
                imported.discard(name)
                if change.kind == "callable":
                    known[name] = part.callables[name]
                elif change.kind == "import":
                    imported.add(name)
            aliases.update(part.aliases)
        return runs

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
        self.received[(step.name, name)] = self.last.get(name)
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
                new = _new_step_name(pipeline, step.name, other.name)
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

    # -- the notebook's order ---------------------------------------------------
    def _check_cell_order(self) -> None:
        """Replay the notebook piece by piece, top to bottom: each name a piece reads
        must get in the pipeline the value the notebook holds at that cell. In the
        pipeline a piece sees what its own step's pieces above it left, else what the
        step received, which is the producer's LAST value, wherever that was set."""
        final: dict[str, dict[str, _Value]] = {}
        for run in self.runs:
            for name, change in run.writes.items():
                final.setdefault(run.step.name, {})[name] = _Value.of(run.step.name, change)
        latest = {name: _Value.of(None, change) for name, change in self.shared.changes.items()}
        own: dict[str, dict[str, _Value]] = {}
        for run in sorted(self.runs, key=lambda run: run.start):
            mine = own.setdefault(run.step.name, {})
            for use in run.reads:
                if use.name in self.pipeline.parameters:
                    continue
                got = mine.get(use.name) or self._received_value(run.step, use.name, final)
                want = latest.get(use.name)
                if not _same(got, want):
                    raise self._out_of_order(run, use, got, want)
            for name, change in run.writes.items():
                latest[name] = mine[name] = _Value.of(run.step.name, change)

    def _received_value(self, step: Step, name: str, final) -> _Value | None:
        """The value ``step`` gets for ``name`` from upstream: its producer's last one,
        or the shared cells' (None: a builtin, or nothing)."""
        writer = self.received.get((step.name, name))
        if writer is None:
            shared = self.shared.changes.get(name)
            return _Value.of(None, shared) if shared else None
        return final.get(writer.step.name, {}).get(name) or _Value.of(writer.step.name, writer.change)

    def _out_of_order(self, run: _Run, use: Use, got: _Value | None, want: _Value | None) -> NotebookError:
        """``got``: what the pipeline would hand the read; ``want``: what the notebook holds."""
        if got is not None and got.step is not None and got.cell > use.cell:
            return self._changed_later(run, use, got, want)
        return self._changed_between(run, use, got, want)

    def _changed_later(self, run: _Run, use: Use, got: _Value, want: _Value | None) -> NotebookError:
        """The producer changes the name again below the reading cell; the pipeline
        hands over that later value. If nothing set it above, the notebook fails."""
        step, name, writer = run.step, use.name, got.step
        if want is None and name not in BUILTIN_NAMES:
            message = (
                f"step {step.name!r} reads {name!r}, which is set only later, in cell "
                f"{got.cell} of step {writer!r}: run top to bottom, the notebook fails at "
                f"cell {use.cell} with a NameError, while the pipeline runs all of step "
                f"{writer!r} first and would hand {step.name!r} the value from cell {got.cell}"
            )
            fix = (
                f"move the code that sets {name!r} (cell {got.cell}) into step {writer!r} "
                f"above cell {use.cell}, where step {step.name!r} reads it"
            )
        else:
            message = (
                f"step {step.name!r} reads {name!r} in cell {use.cell}, where the notebook "
                f"holds {self._describe(want, name)}, but step {writer!r} "
                f"{self._what(got, name)} again later, in {self._where(got)}; "
                f"the pipeline runs all of step {writer!r} before {step.name!r}, so "
                f"{step.name!r} would get the value from cell {got.cell}"
            )
            fix = self._split_fix(writer, got.cell, step.name)
            if got.kind != "mutate":
                fix += f", or use another name than {name!r} in cell {got.cell}"
        return NotebookError(
            message, notebook=self.pipeline.notebook, cell=use.cell, step=step.name,
            line=use.line, fix=fix,
        )

    def _changed_between(self, run: _Run, use: Use, got: _Value | None, want: _Value | None) -> NotebookError:
        """Another step's piece changes the name between the value the pipeline hands
        over and the reading cell: either the reading piece runs too early in the
        pipeline (it belongs to a step that starts above that change), or the changing
        piece does (it belongs to a step that starts above the producer)."""
        step, name = run.step, use.name
        changer = self.pipeline.steps.get(want.step) if want is not None and want.step else None
        if step.is_metrics:
            reader, place = f"the pipeline-metrics cell reports {name!r}", {"section": "pipeline-metrics"}
        else:
            reader, place = f"step {step.name!r} reads {name!r} in cell {use.cell}", {"step": step.name}
        reader_early = changer is not None and (
            (got is not None and got.step == step.name) or changer.first_cell > step.first_cell
        )
        if changer is not None and not reader_early and got is not None and got.step is not None:
            message = (
                f"{reader}, where the notebook holds the value step {changer.name!r} left in "
                f"{self._where(want)}; but the pipeline runs all of step {changer.name!r} "
                f"before step {got.step!r}, which {self._what(got, name)} in cell {got.cell}, "
                f"so the value from cell {got.cell} would be used"
            )
            fix = self._split_fix(changer.name, want.cell, got.step)
            if not step.is_metrics:
                new = _new_step_name(self.pipeline, changer.name, got.step)
                fix += f", and add the tag 'prev:{new}' to step {step.name!r}"
        elif changer is not None and not step.is_metrics:
            message = (
                f"{reader}, after step {changer.name!r} {self._what(want, name)} in "
                f"{self._where(want)}; the pipeline runs all of step "
                f"{step.name!r} before {changer.name!r}, so cell {use.cell} would see "
                f"{self._describe(got, name)} instead"
            )
            fix = self._split_fix(step.name, use.cell, changer.name)
        else:  # not expected: say what differs
            message = (
                f"{reader}, where the notebook holds {self._describe(want, name)}, but the "
                f"pipeline would give {self._describe(got, name)}"
            )
            fix = f"give {name!r} one value that each step sets above the cells reading it"
        return NotebookError(
            message, notebook=self.pipeline.notebook, cell=use.cell, line=use.line, fix=fix, **place,
        )

    @staticmethod
    def _what(value: _Value, name: str) -> str:
        if value.kind == "mutate":
            return f"changes {name!r} in place"
        return f"deletes {name!r}" if value.kind == "delete" else f"sets {name!r}"

    @staticmethod
    def _where(value: _Value) -> str:
        """``cell 3 (line 1)``, with the code for an in-place change (``y.append(2)``)."""
        why = f": {value.reason}" if value.kind == "mutate" and value.reason else ""
        return f"cell {value.cell} (line {value.line}{why})"

    @staticmethod
    def _describe(value: _Value | None, name: str) -> str:
        if value is None:
            return f"Python's builtin {name!r}" if name in BUILTIN_NAMES else "no value"
        if value.step is None:
            return f"the value from cell {value.cell}, which every step runs"
        return f"the value from cell {value.cell} (step {value.step!r})"

    def _split_fix(self, owner: str, cell: int, after: str) -> str:
        """Make the piece of step ``owner`` holding ``cell`` a step of its own that
        follows ``after``: step order then is the notebook's order. Such a piece never
        is the step's first, so its first cell carries the step tag (an untagged cell
        joins the step above it); the untagged cells below it go along."""
        runs = [r for r in self.runs if r.step.name == owner and r.start <= cell <= r.end]
        start, end = (runs[0].start, runs[0].end) if runs else (cell, cell)
        new = _new_step_name(self.pipeline, owner, after)
        prevs = [after] + ([owner] if owner != after and owner not in self.ancestors.get(after, ()) else [])
        tags = " and ".join(f"'prev:{prev}'" for prev in prevs)
        cells = f"cell {start}" if start == end else f"cells {start} to {end}"
        own = "a step of its own" if start == end else "a step of their own"
        return (
            f"give {cells} {own} that follows {after!r}: replace the tag 'step:{owner}' of "
            f"cell {start} with 'step:{new}' and add {tags}"
        )

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
            self.runs.append(_Run(step, [], [Use(variable, cell, line)], {}, start=cell))
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
