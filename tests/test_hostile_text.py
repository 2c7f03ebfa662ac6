"""Notebook text is data: it reaches the script byte for byte and never runs early."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import make_notebook, run_script, write_script

TRIPLE_SINGLE = "'" * 3
TRIPLE_DOUBLE = '"' * 3


def _attack(canary: Path) -> str:
    return f"__import__('pathlib').Path({str(canary)!r}).write_text('pwned')"


def _payloads(run: str) -> list[str]:
    return [
        f"x = 1\n{TRIPLE_SINGLE}\n{run}\n{TRIPLE_SINGLE}",
        f"y = 2\n{TRIPLE_DOUBLE}\n{run}\n{TRIPLE_DOUBLE}",
        "z = 'back\\\\slash \\' quote'",
        "t = '{{ resources }} {% raw %} {# c #} %s %(k)s {0} {k!r}'",
        f"u = f'{{1+1}}'\n# {TRIPLE_SINGLE} {TRIPLE_DOUBLE} {run}",
        "v = 'tab\there'",
        "r = 1  # trailing quote '",
        "q = 'ünïcödé ✓'",
        "w = 1\r\nw2 = 2",
    ]


def test_hostile_cells_and_metadata_stay_data(tmp_path):
    canary = tmp_path / "canary"
    run = _attack(canary)
    sources = _payloads(run)
    cells = [(source, [f"step:s{index}"]) for index, source in enumerate(sources)]
    cells[0] = (sources[0], ["step:s0", f"label:team:{run}", f"annotation:note:a:b:{TRIPLE_SINGLE}{run}"])
    hostile_default = f"{TRIPLE_SINGLE} {run} {TRIPLE_DOUBLE} {{{{ x }}}} {{% if %}}"
    cells.insert(0, (f"p = {hostile_default!r}", ["pipeline-parameters"]))
    metadata = {
        "pipeline_name": f"x{TRIPLE_SINGLE}{run}",
        "pipeline_description": f"{TRIPLE_DOUBLE}\n{run}\n\\",
        "docker_image": f"python:3.11'{run}",
        "experiment_name": "{{ 7*7 }}",
    }
    nb = make_notebook(cells, metadata)
    script = write_script(nb, tmp_path, "hostile.ipynb")
    text = script.read_text()
    tree = ast.parse(text)
    compiled = run_script(script)  # imports the module and compiles the pipeline
    assert compiled.returncode == 0, compiled.stderr
    assert not canary.exists()
    embedded = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("s"):
            call = node.body[1].value
            for keyword in call.keywords:
                if keyword.arg == "cells":
                    embedded[node.name] = ast.literal_eval(keyword.value)
                if keyword.arg == "step":
                    assert ast.literal_eval(keyword.value) == node.name
    for index, source in enumerate(sources):
        assert embedded[f"s{index}"][0][1] == source, f"cell of step s{index} changed"
    namespace = {}
    exec(compile(ast.Module([n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "PARAMETERS"], []), "x", "exec"), namespace)
    assert namespace["PARAMETERS"]["p"] == ("str", hostile_default)
