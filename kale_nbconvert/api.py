"""The library API: each stage of the conversion, callable from Python.

``plan(notebook)`` gives the filled pipeline model (steps and their cells, inputs with
the step each comes from, outputs, parameters, settings, warnings) and ``convert``
the script text, exactly as ``jupyter nbconvert --to kale`` would write it. Both take
a path to an ``.ipynb`` file or an ``nbformat`` notebook node, and the same options
as the command line, by their traitlets names::

    from kale_nbconvert import convert, plan

    pipeline = plan("train.ipynb")
    for step in pipeline.step_list():
        print(step.name, [(a.name, a.producer) for a in step.inputs], step.outputs)
    script = convert("train.ipynb", {"NameAnalysisPreprocessor.mutating_functions": ["fill"]})

Both raise :class:`~kale_nbconvert.errors.NotebookError` for a notebook that cannot
become a pipeline (the message names the cell, the step and the fix) and never write
anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Union

import nbformat

from .model import RESOURCE_KEY, Pipeline

Notebook = Union[str, "os.PathLike[str]", nbformat.NotebookNode]


def convert(notebook: Notebook, options: Mapping[str, object] | None = None) -> str:
    """The generated script for ``notebook`` (a path or a notebook node).

    ``options`` maps ``"Class.trait"`` to a value, as on the command line
    (``{"TagMergePreprocessor.pipeline_name": "nightly"}``). Raises ``NotebookError``.
    """
    return _export(notebook, options)[0]


def plan(notebook: Notebook, options: Mapping[str, object] | None = None) -> Pipeline:
    """The pipeline model for ``notebook``: what the template lays out.

    ``pipeline.step_list()`` are the steps in notebook order (the metrics step last);
    each :class:`~kale_nbconvert.model.Step` has its ``cells``, ``inputs`` (name and
    producing step), ``outputs``, ``parameters``, ``upstream``, ``settings``,
    ``packages`` and ``in_place_changes``; ``pipeline.parameters`` the typed pipeline
    parameters and ``pipeline.warnings`` what conversion warned about. Raises
    ``NotebookError``.
    """
    return _export(notebook, options)[1][RESOURCE_KEY]


def _export(notebook: Notebook, options):
    from traitlets.config import Config

    from .exporter import KaleExporter

    config = Config()
    for key, value in (options or {}).items():
        section, dot, trait = key.rpartition(".")
        if not dot:
            raise ValueError(f"option {key!r}: write it as 'Class.trait', e.g. 'NameAnalysisPreprocessor.explain'")
        config[section][trait] = value
    exporter = KaleExporter(config=config)
    if isinstance(notebook, nbformat.NotebookNode):
        return exporter.from_notebook_node(notebook, resources={"metadata": {"name": "notebook"}})
    path = Path(notebook)
    resources = {"metadata": {"name": path.stem, "path": str(path.parent)}}
    return exporter.from_filename(str(path), resources=resources)
