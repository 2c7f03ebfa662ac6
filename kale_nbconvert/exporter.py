"""``jupyter nbconvert --to kale``: the exporter that wires the preprocessor chain.

Wiring only: the stages are ``preprocessors/`` (over the pure modules), the script's
strings come from ``script_context.py`` (the template's ``kale_script`` filter), reading
a file is ``reading.py``, placing an error is ``error_placement.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import jinja2
import nbformat
from nbconvert.exporters import TemplateExporter
from traitlets import Bool, default, validate

from . import syntax
from .diagram import mermaid, svg
from .error_placement import invalid, locate, quiet_tracebacks, too_deep
from .errors import NotebookError
from .literals import docstring_text, py_literal
from .model import RESOURCE_KEY
from .preprocessors import CHAIN
from .preprocessors.tag_merge import notebook_name
from .reading import read_notebook, not_utf8
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


class _CompiledTemplates(jinja2.BytecodeCache):
    """Jinja's compiled templates, kept in memory for the process.

    nbconvert makes a new Jinja environment for every exporter, so each conversion
    parsed and compiled the template again: about 15 of a small notebook's 22 ms, paid
    by every export a Jupyter server serves and every in-process conversion. Jinja
    keys this cache by template and by a checksum of its source, so an edited
    template is compiled again."""

    def __init__(self):
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket):
        if bucket.key in self._code:
            bucket.bytecode_from_string(self._code[bucket.key])

    def dump_bytecode(self, bucket):
        self._code[bucket.key] = bucket.bytecode_to_string()


_COMPILED_TEMPLATES = _CompiledTemplates()


class KaleExporter(TemplateExporter):
    """Export a Kale-tagged notebook as a Kubeflow Pipelines v2 Python script.

    Runs, in order: :class:`TagMergePreprocessor`, :class:`ParameterExtractionPreprocessor`,
    :class:`NameAnalysisPreprocessor`, :class:`MarshalInjectionPreprocessor`; each is
    configurable the traitlets way (``--NameAnalysisPreprocessor.explain=True``).
    """

    export_from_notebook = "Kale"
    output_mimetype = "text/x-python"

    diagram = Bool(
        False,
        help="Also write the pipeline's diagram beside the script: NAME.mmd (Mermaid, "
        "the flowchart the script's docstring starts with) and NAME.svg where Graphviz's "
        "'dot' is installed.",
    ).tag(config=True)

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

    def _create_environment(self):
        environment = super()._create_environment()
        environment.bytecode_cache = _COMPILED_TEMPLATES
        return environment

    def default_filters(self):
        yield from super().default_filters()
        yield ("py", py_literal)
        yield ("docstring", docstring_text)
        # The template's one call into Python: the finished model -> the script's
        # strings, every decision about the text made in script_context.py.
        yield ("kale_script", script_context)

    def _write_diagram(self, resources) -> None:
        """``diagram=True``: the Mermaid text (and an SVG where Graphviz is installed)
        beside the script, as nbconvert writes a notebook's images beside its HTML."""
        if not self.diagram:
            return
        pipeline = resources[RESOURCE_KEY]
        stem = resources.get("unique_key") or resources["metadata"].get("name") or pipeline.name
        # "./": nbconvert's writer makes the folder of each file, and "" is none
        stem = os.path.join(".", stem)
        outputs = resources.setdefault("outputs", {})
        outputs[f"{stem}.mmd"] = (mermaid(pipeline) + "\n").encode("utf-8")
        drawn = svg(pipeline)
        if drawn is None:
            self.log.info("kale: Graphviz's 'dot' is not installed: .mmd only, no .svg")
        else:
            outputs[f"{stem}.svg"] = drawn

    # -- reading: nbconvert would read the file with nbformat before any stage runs,
    # so a file that is not a (v4) notebook would fail with nbformat's traceback.

    def from_filename(self, filename, resources=None, **kw):
        quiet_tracebacks(self.log)
        try:
            with open(filename, "rb"):
                pass
        except OSError as error:
            raise NotebookError(
                f"cannot read the file: {error.strerror or error}",
                notebook=os.path.basename(filename),
                fix="check the path and its permissions",
            ) from None
        return super().from_filename(filename, resources, **kw)

    def from_file(self, file_stream, resources=None, **kw):
        quiet_tracebacks(self.log)
        name = notebook_name(resources or {})
        try:
            text = file_stream.read()
        except UnicodeDecodeError as error:
            raise not_utf8(error, name) from None
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as error:
                raise not_utf8(error, name) from None
        return self.from_notebook_node(read_notebook(text, name), resources=resources, **kw)

    def from_notebook_node(self, nb, resources=None, **kw):
        """The chain, then the template; every error leaves here placed (cell, step or
        section, notebook: ``error_placement``), and nothing is written."""
        quiet_tracebacks(self.log)
        try:
            output, resources = super().from_notebook_node(nb, resources, **kw)
        except NotebookError as error:
            raise locate(error, nb, resources) from None
        except nbformat.ValidationError as error:
            # nbconvert validates the notebook against the nbformat schema after each
            # stage (e.g. an empty tag, or a tag with a comma, is invalid).
            raise invalid(error, nb, resources) from None
        except (MemoryError, RecursionError) as error:
            # Python's parser gives up on absurdly nested code (e.g. 100,000 nested
            # parentheses) with these instead of a SyntaxError; find the cell.
            raise too_deep(error, nb, resources) from None
        finally:
            syntax.forget()  # the cells' trees are needed only during one conversion
        self._write_diagram(resources)
        try:
            output.encode("utf-8")
        except UnicodeEncodeError as error:  # never written: FilesWriter would fail midway
            raise NotebookError(
                f"internal error: the script would contain text that is not UTF-8 "
                f"({error.reason})",
                notebook=notebook_name(resources),
                fix="please report this notebook to kale_nbconvert",
            ) from None
        return output, resources
