"""Stage 1: cells + tags -> steps, ``prev:`` edges, shared code, parameter/metrics cells."""

from __future__ import annotations

import difflib
import os

from .stage import Stage
from traitlets import Bool, Unicode

from ..errors import NotebookError
from ..magics import ipython_to_python
from ..model import RESOURCE_KEY, Cell, Pipeline, Step
from ..notebook_metadata import apply_notebook_metadata
from ..grouping import INJECTED_PARAMETERS, PlacedCell, own_step, placed_cells
from ..tags import STEP_NAME, STEP_NAME_RULE, CellTags, TagError, kfp_name, shown

SECTIONS = {
    "imports": "imports_cells",
    "functions": "functions_cells",
    "pipeline-parameters": "parameters_cells",
    "pipeline-metrics": "metrics_cells",
}


def notebook_name(resources: dict) -> str:
    """The notebook's file name as nbconvert knows it (for messages)."""
    metadata = resources.get("metadata") or {}
    name = metadata.get("name") or "notebook"
    return name if name.endswith(".ipynb") else f"{name}.ipynb"


class TagMergePreprocessor(Stage):
    """Group code cells into steps and shared sections by their Kale tags.

    Untagged code cells join the most recent step or section. Code cells before the
    first tag belong to nothing: Kale drops them silently; we drop them too (a notebook
    tagged for Kale must convert unchanged) but warn, naming the cells, unless
    ``strict_untagged`` is set, which makes them an error.

    papermill's ``injected-parameters`` cell, wherever it is, is a parameters cell whose
    values override the defaults of the others (``ParameterExtractionPreprocessor``); the
    cells after it join what they joined before papermill added it.
    """

    strict_untagged = Bool(
        False,
        help="Fail instead of warning when code cells come before the first tag.",
    ).tag(config=True)
    pipeline_name = Unicode(
        "",
        help="Pipeline name; overrides metadata.kubeflow_notebook.pipeline_name. Made "
        "Kubeflow-friendly like that one (lowercase, '-' between words, at most 128 "
        "characters), with a warning if that changes it.",
    ).tag(config=True)

    def preprocess(self, nb, resources):
        name = notebook_name(resources)
        pipeline = Pipeline(notebook=name)
        apply_notebook_metadata(
            pipeline, nb.get("metadata", {}), os.path.splitext(name)[0], self.pipeline_name
        )
        self._merge_cells(nb, pipeline)
        for message in pipeline.warnings:
            self.log.warning(message)
        resources[RESOURCE_KEY] = pipeline
        return nb, resources

    def _merge_cells(self, nb, pipeline: Pipeline) -> None:
        self._by_kfp_name: dict[str, Step] = {}  # one Kubeflow name per step
        current: Step | str | None = None  # a Step, a section name, or nothing yet
        untagged_before_first: list[int] = []
        empty_tags: dict[tuple, list[int]] = {}  # (ignored tags, joined) -> cells
        seen_metrics = False
        cells = nb.get("cells")
        if not isinstance(cells, list):
            raise NotebookError(
                "the notebook has no list of cells",
                notebook=pipeline.notebook,
                fix="the file is damaged: restore it from version control or re-save it "
                "in Jupyter",
            )
        for placed in placed_cells(cells):
            number, source, tags = placed.number, placed.source, placed.tags
            injected = placed.injected
            step_hint, section_hint = placed.above
            if placed.problem is not None:
                raise self._problem_error(pipeline, placed)
            self._warn_about_tags(pipeline, number, tags, current, empty_tags, injected)
            if tags.section == "skip":
                pipeline.skipped_cells.append(Cell(number, source, source))
                continue
            if not source.strip() and not tags.is_tagged:
                continue
            step_name = tags.step or step_hint
            section = tags.section or (None if tags.step else section_hint)
            cell = Cell(
                number=number,
                source=source,
                code=self._code(source, pipeline, number, step_name, section),
            )
            if injected:  # `current` stays: the next cells join what they joined before
                pipeline.parameters_cells.append(cell)
                continue
            if tags.step:
                if seen_metrics:
                    raise NotebookError(
                        f"step {tags.step!r} comes after the pipeline-metrics cell",
                        notebook=pipeline.notebook,
                        cell=number,
                        step=tags.step,
                        fix="move the pipeline-metrics cell to the end of the notebook",
                    )
                current = self._step(pipeline, tags.step, number)
            elif tags.section:
                if tags.section == "pipeline-metrics":
                    seen_metrics = True
                current = tags.section
            elif current is None:
                untagged_before_first.append(number)
                continue
            if isinstance(current, Step):
                self._add_to_step(pipeline, current, cell, tags)
            else:
                if tags.has_settings:
                    raise NotebookError(
                        f"step settings on a cell of the {current!r} section",
                        notebook=pipeline.notebook,
                        cell=number,
                        fix="move prev:, limit:, label:, env:... tags to a step cell",
                        section=current,
                    )
                getattr(pipeline, SECTIONS[current]).append(cell)
        for (ignored, joined), numbers in empty_tags.items():
            one = len(numbers) == 1
            cells = ("cell " if one else "cells ") + ", ".join(map(str, numbers))
            if joined:
                what = f"the {'cell joins' if one else 'cells join'} {joined} above"
            else:
                what = f"the {'cell is' if one else 'cells are'} before the first tag, so not part of the pipeline"
            settings = ", ".join(shown(tag) for tag in ignored[1:])
            also = f" and so are its step settings {settings}" if settings else ""
            pipeline.warnings.append(
                f"{pipeline.notebook}, {cells}: the tag {shown(ignored[0])} names no step, so "
                f"it is ignored as in Kale{also}: {what}. Fix: remove the tag, or write "
                "'step:NAME' to start a step there"
            )
        if untagged_before_first:
            cells = ", ".join(str(n) for n in untagged_before_first)
            message = (
                f"{pipeline.notebook}: code cells before the first Kale tag are not "
                f"part of the pipeline (cells {cells}); tag them 'imports', "
                f"'functions' or 'step:NAME' to include them, or 'skip' to silence this"
            )
            if self.strict_untagged:
                raise NotebookError(
                    "code cells before the first Kale tag",
                    notebook=pipeline.notebook,
                    cell=untagged_before_first[0],
                    fix="tag them 'imports', 'functions', 'step:NAME' or 'skip'",
                )
            pipeline.warnings.append(message)
        if not pipeline.steps:
            raise NotebookError(
                "no pipeline steps: no cell is tagged 'step:NAME' (or 'block:NAME')",
                notebook=pipeline.notebook,
                fix="tag the first cell of each step with 'step:NAME'",
            )
        self._check_edges(pipeline)

    def _problem_error(self, pipeline: Pipeline, placed: PlacedCell) -> NotebookError:
        """The user's error for a cell whose JSON or tags cannot be read: named by its
        cell, and the step its own tag starts if it has one (the step or section above
        is not where a broken tag belongs)."""
        problem, step_hint = placed.problem, placed.above[0]
        if not isinstance(problem, TagError):  # the cell's JSON or text
            return NotebookError.from_problem(
                problem, pipeline.notebook, cell=placed.number, step=step_hint
            )
        fix = problem.fix
        if problem.name is not None:
            fix = self._name_fix(pipeline, problem, own_step(placed.tags_raw, step_hint))
        own = own_step(placed.tags_raw, None)
        return NotebookError.from_problem(
            problem,
            pipeline.notebook,
            cell=placed.number,
            step=own if own and STEP_NAME.match(own) else None,
            fix=fix,
        )

    @staticmethod
    def _name_fix(pipeline: Pipeline, error: TagError, current: str | None) -> str:
        """The fix for an invalid step name, pointing at an existing step it resembles
        (``train-model`` when ``train_model`` exists). A ``prev:`` can only name a step
        that starts above (not ``current``, the step the cell is in), so only those are
        suggested: a suggestion must work when followed."""
        kind = error.kind or "step"
        for step in pipeline.steps.values():
            if kfp_name(step.name) == kfp_name(error.name) or step.name == error.name.lower():
                if kind == "prev" and step.name != current:
                    return f"write 'prev:{step.name}'"
                if kind != "prev":
                    return (
                        f"write '{kind}:{step.name}' to continue the step of cell "
                        f"{step.first_cell}, or choose another name ({STEP_NAME_RULE})"
                    )
        if kind != "prev":
            return error.fix or ""
        above = [name for name in pipeline.steps if name != current]
        if not above:
            return "remove the tag: no step starts above this cell"
        close = difflib.get_close_matches(error.name.lower(), above, n=1)
        if close:
            return f"did you mean 'prev:{close[0]}'?"
        listed = "name a step that starts above it: " + ", ".join(f"'prev:{n}'" for n in above)
        return listed if error.name else "remove the tag, or " + listed

    def _code(self, source, pipeline: Pipeline, number: int, step, section) -> str:
        try:
            return ipython_to_python(source)
        except SyntaxError as error:  # IPython raises it for malformed magics
            raise NotebookError(
                f"cannot read the cell's IPython syntax: {error.msg}",
                notebook=pipeline.notebook,
                cell=number,
                step=step,
                line=error.lineno,
                fix="fix the magic or shell line",
                section=section,
            ) from None

    def _step(self, pipeline: Pipeline, name: str, number: int) -> Step:
        """The step ``name`` (created on first use). Any name of the tag grammar is valid,
        Python keywords and builtins included: the script's identifiers are derived
        from it without collisions (``script_context.generated_names``). Only what
        Kubeflow cannot tell apart is refused."""
        step = pipeline.steps.get(name)
        if step is not None:
            return step

        def refuse(why: str, fix: str) -> NotebookError:
            return NotebookError(
                f"step name {name!r} {why}",
                notebook=pipeline.notebook,
                cell=number,
                step=name,
                fix=fix,
            )

        if not kfp_name(name):
            raise refuse(
                "has no letter or digit, so Kubeflow cannot name its task",
                fix="give the step a name with letters, e.g. 'step:train'",
            )
        other = self._by_kfp_name.get(kfp_name(name))
        if other is not None:
            raise refuse(
                f"and step {other.name!r} (cell {other.first_cell}) both become "
                f"{kfp_name(name)!r} in Kubeflow, which cannot tell them apart",
                fix=f"write 'step:{other.name}' to continue that step, or choose a "
                "clearly different name",
            )
        step = pipeline.steps[name] = self._by_kfp_name[kfp_name(name)] = Step(name=name)
        return step

    @staticmethod
    def _warn_about_tags(
        pipeline: Pipeline, number: int, tags: CellTags, current, empty_tags: dict,
        injected: bool = False,
    ) -> None:
        """Tags Kale tolerates but that do nothing: say what was done instead, naming
        the cell, so a tag left behind by Kale's editor is visible, not an error. Empty
        step tags come in runs (Kale's extension leaves one per cell), so they are
        collected in ``empty_tags`` and reported once per step they join."""
        if tags.overridden:
            ignored = ", ".join(shown(tag) for tag in tags.overridden)
            what = "the cell is left out" if tags.section == "skip" else (
                f"the cell is {tags.section!r} code"
            )
            winner = INJECTED_PARAMETERS if injected and tags.section != "skip" else tags.section
            pipeline.warnings.append(
                f"{pipeline.notebook}, cell {number}: the tag {winner!r} wins over the "
                f"cell's other tags (Kale's rule), so {ignored} "
                f"{'is' if len(tags.overridden) == 1 else 'are'} ignored and {what}. Fix: "
                "remove the ignored tags, or split the cell"
            )
        if tags.empty_step_tags:
            if isinstance(current, Step):
                joined = f"step {current.name!r}"
            else:
                joined = f"the {current!r} cells" if current else ""
            empty_tags.setdefault((tuple(tags.empty_step_tags), joined), []).append(number)

    def _add_to_step(self, pipeline: Pipeline, step: Step, cell: Cell, tags) -> None:
        step.cells.append(cell)
        for target in tags.prev:
            if target == step.name and step.cells[0] is cell:
                raise NotebookError(
                    f"step {step.name!r} lists itself in 'prev:'",
                    notebook=pipeline.notebook,
                    cell=cell.number,
                    step=step.name,
                    fix=f"remove 'prev:{target}'",
                )
            if target == step.name:
                # A cell further down the step (tags copied from another cell): the
                # step cannot wait for itself, and the tag asks nothing else.
                pipeline.warnings.append(
                    f"{pipeline.notebook}, cell {cell.number}, step {step.name}: the tag "
                    f"'prev:{target}' names the step this cell is part of (it starts at "
                    f"cell {step.first_cell}), so it is ignored. Fix: remove 'prev:{target}' "
                    "from the cell"
                )
                continue
            if target not in step.prev:
                step.prev.append(target)
                step.prev_cells[target] = cell.number
        own = tags.step_settings()
        step.settings = own.merged_over(step.settings)

    def _check_edges(self, pipeline: Pipeline) -> None:
        order = {name: position for position, name in enumerate(pipeline.steps)}
        for step in pipeline.steps.values():
            step.settings = step.settings.merged_over(pipeline.defaults)
            for target in step.prev:
                cell = step.prev_cells[target]
                if target not in pipeline.steps:
                    raise NotebookError(
                        f"'prev:{target}' names no step",
                        notebook=pipeline.notebook,
                        cell=cell,
                        step=step.name,
                        fix=_unknown_prev_fix(pipeline, step, target, order),
                    )
                if order[target] > order[step.name]:
                    cycle = _path(pipeline, target, step.name)
                    if cycle:
                        raise NotebookError(
                            f"'prev:{target}' makes a cycle: "
                            + ", which waits for ".join(repr(n) for n in [step.name] + cycle),
                            notebook=pipeline.notebook,
                            cell=cell,
                            step=step.name,
                            fix=f"remove 'prev:{target}' from step {step.name!r}; a step "
                            "can only follow steps above it",
                        )
                    raise NotebookError(
                        f"'prev:{target}' names step {target!r}, which starts later in "
                        f"the notebook (cell {pipeline.steps[target].first_cell})",
                        notebook=pipeline.notebook,
                        cell=cell,
                        step=step.name,
                        fix="a step can only follow steps above it: move the cells of "
                        f"{target!r} above, or remove the tag",
                    )


def _path(pipeline: Pipeline, start: str, goal: str) -> list[str]:
    """Steps from ``start`` to ``goal`` along ``prev:`` edges ([] if none)."""
    seen = set()
    stack = [[start]]
    while stack:
        path = stack.pop()
        if path[-1] == goal:
            return path
        if path[-1] in seen:
            continue
        seen.add(path[-1])
        for previous in pipeline.steps[path[-1]].prev:
            if previous in pipeline.steps:
                stack.append(path + [previous])
    return []


def _unknown_prev_fix(pipeline: Pipeline, step: Step, target: str, order: dict) -> str:
    """The fix for ``prev:`` naming no step. Only steps that start above ``step`` can be
    followed, so only they are suggested (never ``step`` itself, never a later step:
    either suggestion would fail again when followed)."""
    above = [name for name in pipeline.steps if order[name] < order[step.name]]
    if not above:
        return f"step {step.name!r} is the first step, so it cannot follow another: remove 'prev:{target}'"
    close = difflib.get_close_matches(target, above, n=1)
    if close:
        return f"did you mean 'prev:{close[0]}'?"
    return "name a step that starts above it: " + ", ".join(f"'prev:{name}'" for name in above)
