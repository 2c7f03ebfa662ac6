"""The pipeline's shape as a picture: a Mermaid flowchart, and the same graph for
Graphviz.

Runs at conversion, on the finished model. Steps are nodes; an edge carries the names
of the variables that cross it (a ``prev:`` edge that carries nothing is a plain
arrow); the pipeline parameters are one node, with a dotted edge to each step that
reads some, labelled with the names it reads. The script's docstring starts with the Mermaid
text (GitHub, GitLab and most Markdown viewers draw it); ``KaleExporter.diagram``
writes it beside the script as ``.mmd``, and as ``.svg`` where Graphviz's ``dot`` is
installed.
"""

from __future__ import annotations

import shutil
import subprocess

from .model import Pipeline

PARAMETERS_NODE = "parameters"


def _edges(pipeline: Pipeline) -> list[tuple[str, str, list[str], bool]]:
    """``(source, step, names, from the parameters)`` in step order: the parameters
    each step reads, data edges with the names they carry, then ``prev:`` edges that
    carry none. ``source`` is a step name or ``PARAMETERS_NODE``."""
    edges = [
        (PARAMETERS_NODE, step.name, step.parameters, True)
        for step in pipeline.step_list()
        if step.parameters
    ]
    for step in pipeline.step_list():
        carried: dict[str, list[str]] = {}
        for artifact in step.inputs:
            carried.setdefault(artifact.producer, []).append(artifact.name)
        edges += [(producer, step.name, names, False) for producer, names in carried.items()]
        edges += [(name, step.name, [], False) for name in step.prev if name not in carried]
    return edges


def _node_ids(pipeline: Pipeline) -> dict[str, str]:
    """Step name -> node id. Numbered ids, because a step may be called ``end`` or
    ``graph``, which Mermaid reads as keywords."""
    ids = {step.name: f"s{index}" for index, step in enumerate(pipeline.step_list(), 1)}
    return {**ids, PARAMETERS_NODE: PARAMETERS_NODE}


def _mermaid_label(text: str) -> str:
    return '"' + text.replace('"', "#quot;") + '"'


def mermaid(pipeline: Pipeline) -> str:
    """The pipeline as a Mermaid ``flowchart`` (text, no trailing newline). A node's
    label is given where the node first appears, so the text is one line per edge."""
    ids = _node_ids(pipeline)
    nodes = {PARAMETERS_NODE: '[/"pipeline parameters"/]'}
    for step in pipeline.step_list():
        shape = ("[(", ")]") if step.is_metrics else ("[", "]")
        nodes[ids[step.name]] = f"{shape[0]}{_mermaid_label(step.name)}{shape[1]}"
    seen: set[str] = set()

    def node(node_id: str) -> str:
        if node_id in seen:
            return node_id
        seen.add(node_id)
        return node_id + nodes[node_id]

    lines = ["flowchart TD"]
    for source, target, names, dotted in _edges(pipeline):
        label = _mermaid_label(", ".join(names))
        arrow = f" -. {label} .->" if dotted else f" -- {label} -->" if names else " -->"
        lines.append(f"    {node(ids[source])}{arrow} {node(ids[target])}")
    lines += [f"    {node(ids[step.name])}" for step in pipeline.step_list() if ids[step.name] not in seen]
    return "\n".join(lines)


def _dot_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def graphviz(pipeline: Pipeline) -> str:
    """The same graph in Graphviz's DOT language (for ``dot -Tsvg``)."""
    ids = _node_ids(pipeline)
    lines = [
        f"digraph {_dot_text(pipeline.name)} {{",
        '    node [shape=box, style="rounded", fontname="sans-serif"];',
        '    edge [fontname="sans-serif", fontsize=10];',
    ]
    if pipeline.parameters:
        lines.append(f'    {PARAMETERS_NODE} [shape=parallelogram, label="pipeline parameters"];')
    for step in pipeline.step_list():
        shape = ", shape=cylinder" if step.is_metrics else ""
        lines.append(f"    {ids[step.name]} [label={_dot_text(step.name)}{shape}];")
    for source, target, names, dashed in _edges(pipeline):
        style = ["style=dashed"] * dashed + [f"label={_dot_text(', '.join(names))}"] * bool(names)
        attributes = f" [{', '.join(style)}]" if style else ""
        lines.append(f"    {ids[source]} -> {ids[target]}{attributes};")
    lines.append("}")
    return "\n".join(lines)


def svg(pipeline: Pipeline, timeout: float = 30) -> bytes | None:
    """The diagram drawn by Graphviz's ``dot``, or None where it is not installed."""
    dot = shutil.which("dot")
    if dot is None:
        return None
    done = subprocess.run(
        [dot, "-Tsvg"], input=graphviz(pipeline).encode("utf-8"), capture_output=True,
        timeout=timeout, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"dot failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


if __name__ == "__main__":  # python -m kale_nbconvert.diagram NOTEBOOK... (README blocks)
    import sys

    from .api import plan

    for path in sys.argv[1:]:
        print(f"{path}:\n\n```mermaid\n{mermaid(plan(path))}\n```\n")
