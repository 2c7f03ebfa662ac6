"""``jupyter nbconvert --to kale``: the exporter that wires the preprocessor chain."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from nbconvert.exporters import TemplateExporter
from traitlets import default, validate

from .literals import docstring_text, py_literal
from .model import RESOURCE_KEY
from .preprocessors import CHAIN
from .script_context import script_context

TEMPLATE_NAME = "kale"


def templates_directory() -> str:
    """Folder holding ``kale/``: the source tree (editable install) or the data files
    a wheel installs under ``share/jupyter/nbconvert/templates``."""
    candidates = [
        Path(__file__).resolve().parent.parent / "templates",
        Path(sys.prefix) / "share" / "jupyter" / "nbconvert" / "templates",
    ]
    for candidate in candidates:
        if (candidate / TEMPLATE_NAME / "conf.json").exists():
            return str(candidate)
    return str(candidates[0])


class KaleExporter(TemplateExporter):
    """Export a Kale-tagged notebook as a Kubeflow Pipelines v2 Python script.

    Runs, in order: :class:`TagMergePreprocessor`, :class:`ParameterExtractionPreprocessor`,
    :class:`NameAnalysisPreprocessor`, :class:`MarshalInjectionPreprocessor`; each is
    configurable the traitlets way (``--NameAnalysisPreprocessor.explain=True``).
    """

    export_from_notebook = "Kale"
    output_mimetype = "text/x-python"

    @default("file_extension")
    def _file_extension_default(self):
        return ".py"

    @default("template_name")
    def _template_name_default(self):
        return TEMPLATE_NAME

    @default("template_file")
    def _template_file_default(self):
        return "index.py.j2"

    @default("default_preprocessors")
    def _default_preprocessors_default(self):
        return [f"{cls.__module__}.{cls.__name__}" for cls in CHAIN]

    @default("extra_template_basedirs")
    def _default_extra_template_basedirs(self):
        return [os.getcwd(), templates_directory()]

    @validate("extra_template_basedirs")
    def _always_find_our_template(self, proposal):
        # A user's --TemplateExporter.extra_template_basedirs replaces the default list;
        # keep ours in it, or the exporter would silently vanish.
        directories = list(proposal["value"])
        ours = templates_directory()
        if ours not in directories:
            directories.append(ours)
        return directories

    def default_filters(self):
        yield from super().default_filters()
        yield ("py", py_literal)
        yield ("docstring", docstring_text)

    def _preprocess(self, nb, resources):
        nb, resources = super()._preprocess(nb, resources)
        # Decisions about the script's text are made in Python, not in the template.
        resources["kale_script"] = script_context(resources[RESOURCE_KEY])
        return nb, resources
