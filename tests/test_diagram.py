"""The pipeline's diagram: Mermaid text at the top of the script's docstring, as files
beside the script on request, and the examples' diagrams in the README."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import pytest

from helpers import make_notebook, run_nbconvert
from kale_nbconvert import plan
from kale_nbconvert.diagram import mermaid

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.ipynb"))


NODE_LABEL = r'\[\(?"([^"]+)"\)?\]|\[/"[^"]*"/\]'


def _node_labels(text: str) -> dict[str, str]:
    return dict(re.findall(r'(s\d+)\[\(?"([^"]+)"\)?\]', text))


def _edges_only(text: str) -> str:
    """The text with each node's label removed (a label is given at first use)."""
    return re.sub(NODE_LABEL, "", text)


@pytest.mark.parametrize("notebook", EXAMPLES, ids=lambda p: p.stem)
def test_the_mermaid_text_names_every_step_and_edge(notebook):
    pipeline = plan(notebook)
    text = mermaid(pipeline)
    labels = _node_labels(text)
    assert sorted(labels.values()) == sorted(pipeline.steps)
    ids = {name: node for node, name in labels.items()}
    text = _edges_only(text)
    for step in pipeline.step_list():
        for producer in {a.producer for a in step.inputs}:
            names = ", ".join(a.name for a in step.inputs if a.producer == producer)
            assert f'{ids[producer]} -- "{names}" --> {ids[step.name]}' in text
        for parameter in step.parameters:
            edge = re.search(rf'parameters -\. "([^"]*)" \.-> {ids[step.name]}$', text, re.M)
            assert edge and parameter in edge.group(1).split(", ")


def test_the_script_docstring_starts_with_the_diagram_before_the_data_flow_table(tmp_path):
    from kale_nbconvert import convert

    script = convert(EXAMPLES[0])
    docstring = script.split('"""', 2)[1]
    assert "    flowchart TD\n" in docstring
    assert docstring.index("flowchart TD") < docstring.index("Data flow")


def test_a_prev_edge_is_a_plain_arrow_and_keyword_step_names_are_safe():
    notebook = make_notebook([("x = 1", ["step:end"]), ("print('y')", ["step:graph", "prev:end"])])
    text = mermaid(plan(notebook))
    assert '    s1["end"] --> s2["graph"]' in text


def test_the_diagram_option_writes_the_mermaid_file_and_an_svg_where_dot_is_installed(tmp_path):
    shutil.copy(EXAMPLES[0], tmp_path / "example.ipynb")
    done = run_nbconvert(tmp_path, "--to", "kale", "example.ipynb", "--KaleExporter.diagram=True",
                         timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "example.mmd").read_text(encoding="utf-8") == mermaid(plan(EXAMPLES[0])) + "\n"
    if shutil.which("dot"):
        assert (tmp_path / "example.svg").read_bytes().lstrip().startswith((b"<?xml", b"<svg"))
    else:
        assert not (tmp_path / "example.svg").exists()
        assert "'dot' is not installed" in done.stderr


def test_the_readme_shows_each_example_diagram_as_generated():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = re.findall(r"```mermaid\n(.*?)\n```", readme, re.DOTALL)
    for notebook in EXAMPLES:
        assert mermaid(plan(notebook)) in shown, (
            f"README's diagram of {notebook.name} is out of date: run "
            "python -m kale_nbconvert.diagram examples/*.ipynb and paste it"
        )


def test_a_stage_cannot_be_switched_off(tmp_path):
    nbformat.write(
        make_notebook([("x = 1", ["step:a"]), ("print(x)", ["step:b", "prev:a"])]),
        tmp_path / "nb.ipynb",
    )
    done = run_nbconvert(tmp_path, "--to", "kale", "nb.ipynb",
                         "--NameAnalysisPreprocessor.enabled=False",
                         "--TagMergePreprocessor.enabled=False", timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Config option `enabled` not recognized by `NameAnalysisPreprocessor`" in done.stderr
    assert "inputs={'x': (x_in, 'a')}" in (tmp_path / "nb.py").read_text(encoding="utf-8")
