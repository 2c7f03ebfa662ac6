"""Stage 1: cells + tags -> steps, ``prev:`` edges, shared code, parameter/metrics cells."""

from __future__ import annotations

import keyword
import os

from nbconvert.preprocessors import Preprocessor
from traitlets import Bool, Unicode

from ..errors import NotebookError
from ..magics import ipython_to_python
from ..model import RESOURCE_KEY, Cell, Pipeline, Step, StepSettings
from ..notebook_metadata import apply_notebook_metadata
from ..tags import TagError, parse_tags

RESERVED_STEP_NAMES = frozenset(
    {
        "dsl",
        "kfp",
        "kubernetes",
        "main",
        "build_pipeline",
        "pipeline_metrics",
        "argparse",
        "sys",
        "os",
        "Input",
        "Output",
        "Artifact",
        "Metrics",
    }
)
"""Identifiers the generated script defines itself; a step may not shadow them."""

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


class TagMergePreprocessor(Preprocessor):
    """Group code cells into steps and shared sections by their Kale tags.

    Untagged code cells join the most recent step or section. Code cells before the
    first tag belong to nothing: Kale drops them silently; we drop them too (a notebook
    tagged for Kale must convert unchanged) but warn, naming the cells, unless
    ``strict_untagged`` is set, which makes them an error.
    """

    enabled = Bool(True).tag(config=True)
    strict_untagged = Bool(
        False,
        help="Fail instead of warning when code cells come before the first tag.",
    ).tag(config=True)
    pipeline_name = Unicode(
        "",
        help="Pipeline name; overrides metadata.kubeflow_notebook.pipeline_name.",
    ).tag(config=True)

    def preprocess(self, nb, resources):
        name = notebook_name(resources)
        pipeline = Pipeline(notebook=name)
        apply_notebook_metadata(
            pipeline, nb.get("metadata", {}), os.path.splitext(name)[0]
        )
        if self.pipeline_name:
            pipeline.name = self.pipeline_name
        self._merge_cells(nb, pipeline)
        for message in pipeline.warnings:
            self.log.warning(message)
        resources[RESOURCE_KEY] = pipeline
        return nb, resources

    def _merge_cells(self, nb, pipeline: Pipeline) -> None:
        current: Step | str | None = None  # a Step, a section name, or nothing yet
        untagged_before_first: list[int] = []
        seen_metrics = False
        for index, nb_cell in enumerate(nb.cells):
            number = index + 1
            if nb_cell.get("cell_type") != "code":
                continue
            source = nb_cell.get("source", "")
            if isinstance(source, list):  # tolerate un-normalised notebooks
                source = "".join(source)
            tags_raw = nb_cell.get("metadata", {}).get("tags", [])
            step_hint = current.name if isinstance(current, Step) else None
            try:
                tags = parse_tags(tags_raw)
            except TagError as error:
                raise NotebookError(
                    error.message,
                    notebook=pipeline.notebook,
                    cell=number,
                    step=step_hint,
                    fix=error.fix,
                ) from None
            if tags.section == "skip":
                pipeline.skipped_cells.append(Cell(number, source, source))
                continue
            if not source.strip() and not tags.is_tagged:
                continue
            cell = Cell(number=number, source=source, code=self._code(source, pipeline, number, step_hint))
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
                if tags.prev or tags.limits or tags.labels or tags.annotations:
                    raise NotebookError(
                        f"step settings on a cell of the {current!r} section",
                        notebook=pipeline.notebook,
                        cell=number,
                        fix="move prev:/limit:/label:/annotation: tags to a step cell",
                    )
                getattr(pipeline, SECTIONS[current]).append(cell)
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

    def _code(self, source: str, pipeline: Pipeline, number: int, step: str | None) -> str:
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
            ) from None

    def _step(self, pipeline: Pipeline, name: str, number: int) -> Step:
        if keyword.iskeyword(name) or keyword.issoftkeyword(name) or name in RESERVED_STEP_NAMES or name.startswith("_kale"):
            raise NotebookError(
                f"step name {name!r} is reserved (a Python keyword or a name the "
                f"generated script uses)",
                notebook=pipeline.notebook,
                cell=number,
                step=name,
                fix=f"rename the step, e.g. 'step:{name}_step'",
            )
        step = pipeline.steps.get(name)
        if step is None:
            step = pipeline.steps[name] = Step(name=name)
        return step

    def _add_to_step(self, pipeline: Pipeline, step: Step, cell: Cell, tags) -> None:
        step.cells.append(cell)
        for target in tags.prev:
            if target == step.name:
                raise NotebookError(
                    f"step {step.name!r} lists itself in 'prev:'",
                    notebook=pipeline.notebook,
                    cell=cell.number,
                    step=step.name,
                    fix=f"remove 'prev:{target}'",
                )
            if target not in step.prev:
                step.prev.append(target)
                step.prev_cells[target] = cell.number
        own = StepSettings(tags.limits, tags.labels, tags.annotations)
        step.settings = own.merged_over(step.settings)

    def _check_edges(self, pipeline: Pipeline) -> None:
        order = {name: position for position, name in enumerate(pipeline.steps)}
        for step in pipeline.steps.values():
            step.settings = step.settings.merged_over(pipeline.defaults)
            for target in step.prev:
                cell = step.prev_cells[target]
                if target not in pipeline.steps:
                    import difflib

                    close = difflib.get_close_matches(target, list(pipeline.steps), n=1)
                    fix = f"did you mean 'prev:{close[0]}'?" if close else (
                        "name a step defined above: " + ", ".join(pipeline.steps)
                    )
                    raise NotebookError(
                        f"'prev:{target}' names no step",
                        notebook=pipeline.notebook,
                        cell=cell,
                        step=step.name,
                        fix=fix,
                    )
                if order[target] > order[step.name]:
                    raise NotebookError(
                        f"'prev:{target}' names a step that starts later in the notebook",
                        notebook=pipeline.notebook,
                        cell=cell,
                        step=step.name,
                        fix="a step can only follow steps above it; reorder the cells or remove the tag",
                    )
