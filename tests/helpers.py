"""Shared test helpers: build a notebook from (source, tags) pairs, convert it, run it."""

from __future__ import annotations

import ast
import importlib.util
import itertools
import os
import subprocess
import sys
from pathlib import Path

import nbformat

from kale_nbconvert.exporter import KaleExporter
from script_runner import NBCONVERT_PRELOAD, ScriptServer
from script_runner import PRELOAD as SCRIPT_PRELOAD


def make_notebook(cells, metadata=None) -> nbformat.NotebookNode:
    """``cells``: [(source, [tags])] or ("markdown", text) pairs -> a v4 notebook."""
    nb = nbformat.v4.new_notebook()
    for source, tags in cells:
        if source == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(tags))
            continue
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = list(tags)
        nb.cells.append(cell)
    if metadata:
        nb.metadata["kubeflow_notebook"] = metadata
    return nb


def convert(nb, name="notebook.ipynb", **config):
    """Convert in-process; returns (script_text, resources)."""
    from traitlets.config import Config

    c = Config()
    for key, value in config.items():
        section, _, trait = key.partition(".")
        c[section][trait] = value
    exporter = KaleExporter(config=c)
    return exporter.from_notebook_node(nb, resources={"metadata": {"name": Path(name).stem}})


def write_script(nb, folder: Path, name="notebook.ipynb") -> Path:
    """Write the notebook and its converted script into ``folder``; returns the script."""
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / name)
    script, _ = convert(nb, name)
    path = folder / (Path(name).stem + ".py")
    path.write_text(script, encoding="utf-8")
    return path


def yaml_documents(path: Path) -> list:
    """The documents of a compiled pipeline's YAML file: the pipeline spec, then the
    Kubernetes platform spec if there is one. Read with libyaml's loader where PyYAML
    has it: the pure-Python one takes about 2 s for an 18-step pipeline."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return list(yaml.load_all(Path(path).read_text(encoding="utf-8"), Loader=loader))


_imported_scripts = itertools.count()


def compile_script_in_process(script: Path) -> Path:
    """Import a generated script and compile the pipeline its import builds (what
    ``kfp dsl compile --py`` compiles; ``python script.py`` builds it the same way),
    without a new interpreter per notebook; returns the YAML it wrote beside the
    script."""
    from kfp import compiler

    output = Path(script).with_suffix(".yaml")
    compiler.Compiler().compile(_import_script(script).pipeline, str(output))
    return output


def _import_script(script: Path):
    """The generated script imported as a module of its own: its import builds the
    pipeline (``module.pipeline``), as ``kfp dsl compile --py`` imports it."""
    name = f"kale_generated_{next(_imported_scripts)}"
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compiled_documents(script: Path) -> list[dict]:
    """The documents of the YAML kfp compiles a generated script to: the pipeline
    spec, then the Kubernetes platform spec if there is one.

    The exhaustive profile has kfp write the YAML (``compile_script_in_process``) and
    reads it back. The default one takes the same documents from the specs kfp built
    when the script was imported, which are what kfp writes (``MessageToDict`` of
    each): kfp's pure-Python YAML writer takes 0.5-1 s per published 18-step
    notebook, and every script the suite runs still has kfp write its YAML."""
    from google.protobuf import json_format

    from conftest import EXHAUSTIVE

    if EXHAUSTIVE:
        return yaml_documents(compile_script_in_process(script))
    module = _import_script(script)
    documents = [json_format.MessageToDict(module.pipeline.pipeline_spec)]
    if module.pipeline.platform_spec.platforms:
        documents.append(json_format.MessageToDict(module.pipeline.platform_spec))
    return documents


def run_script(script: Path, *args, env=None, timeout=300) -> subprocess.CompletedProcess:
    """Run a generated script with this interpreter, as ``python script ARGS`` from its
    folder; returns the completed process. Through this worker's script server
    (``script_runner.py``: kfp imported once) unless ``env`` sets a ``PYTHON*``
    variable, which only a new interpreter reads."""
    full_env = {**os.environ, **(env or {})}
    server = None if any(key.startswith("PYTHON") for key in env or {}) else _server(SCRIPT_PRELOAD)
    if server is not None:
        return server.run([str(script), *args], script.parent, full_env, timeout)
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=script.parent,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


_SERVERS: dict = {}


def _server(preload):
    """This process's server that imports ``preload`` before forking, started on first
    use; None where there is none (no ``fork``, it failed to start, or, for generated
    scripts, ``KALE_TEST_SCRIPT_SERVER=0``: nbconvert runs always fork, as they did)."""
    if preload not in _SERVERS:
        server = None
        scripts_off = preload == SCRIPT_PRELOAD and os.environ.get("KALE_TEST_SCRIPT_SERVER") == "0"
        if not scripts_off and hasattr(os, "fork"):
            import atexit

            try:
                server = ScriptServer(preload)
                atexit.register(server.stop)
            except (OSError, RuntimeError) as error:
                print(f"script server unavailable, a new interpreter per run: {error}",
                      file=sys.stderr)
        _SERVERS[preload] = server
    return _SERVERS[preload]


def run_nbconvert(folder: Path, *args, stdin: str | None = None, env=None,
                  timeout=300) -> subprocess.CompletedProcess:
    """``python -m nbconvert ARGS`` (what ``jupyter nbconvert ARGS`` runs) in ``folder``,
    ``stdin`` as its input, through this worker's nbconvert server (nbconvert and the
    exporter imported once: a new interpreter spends 2-3 s importing them) where there
    is one."""
    full_env = {**os.environ, **(env or {})}
    server = _server(NBCONVERT_PRELOAD)
    if server is not None:
        return server.run(["-m", "nbconvert", *args], folder, full_env, timeout, stdin)
    return subprocess.run([sys.executable, "-m", "nbconvert", *args], cwd=folder, input=stdin,
                          capture_output=True, text=True, env=full_env, timeout=timeout)


def embedded_cells(tree: ast.Module) -> dict[int, list[str]]:
    """Every ``(cell_number, 'code')`` tuple literal in a generated script's AST, outside
    the machinery every script carries (its ``_kale_*`` functions, most of the script,
    hold no cell; ``_kale_shared_cells`` holds the shared ones)."""
    found: dict[int, list[str]] = {}
    notebook_part = [
        node for node in tree.body
        if not (isinstance(node, ast.FunctionDef) and node.name.startswith("_kale_")
                and node.name != "_kale_shared_cells")
    ]
    for node in (n for top in notebook_part for n in ast.walk(top)):
        if (
            isinstance(node, ast.Tuple)
            and len(node.elts) == 2
            and isinstance(node.elts[0], ast.Constant)
            and type(node.elts[0].value) is int
            and isinstance(node.elts[1], ast.Constant)
            and isinstance(node.elts[1].value, str)
        ):
            found.setdefault(node.elts[0].value, []).append(node.elts[1].value)
    return found
