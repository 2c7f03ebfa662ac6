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
    cells[0] = (sources[0], ["step:s0", "label:team:ml", f"annotation:note:a:b:{TRIPLE_SINGLE}{run}"])
    hostile_default = f"{TRIPLE_SINGLE} {run} {TRIPLE_DOUBLE} {{{{ x }}}} {{% if %}}"
    cells.insert(0, (f"p = {hostile_default!r}", ["pipeline-parameters"]))
    metadata = {
        "pipeline_name": f"x{TRIPLE_SINGLE}{run}",
        "pipeline_description": f"{TRIPLE_DOUBLE}\n{run}\n\\",
        "docker_image": f"python:3.11'{run}",
        "experiment_name": "{{ 7*7 }}",
        "kfp_host": f"http://x/{TRIPLE_DOUBLE}{run}",
        "steps_defaults": [f"annotation:why:{TRIPLE_DOUBLE}\\{run}"],
        "volumes": [
            {
                "name": f"v'{run}",
                "mount_point": f"/data{TRIPLE_SINGLE}{run}",
                "type": "new_pvc",
                "size": 1,
                "size_type": f"Gi'{run}",
                "storage_class_name": f"{TRIPLE_DOUBLE}{run}",
            }
        ],
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
        if isinstance(node, ast.FunctionDef) and node.name.endswith("_step") and node.name.startswith("s"):
            step = node.name[: -len("_step")]  # step 's0' is the function 's0_step'
            call = node.body[1].value
            for keyword in call.keywords:
                if keyword.arg == "cells":
                    embedded[step] = ast.literal_eval(keyword.value)
                if keyword.arg == "step":
                    assert ast.literal_eval(keyword.value) == step
    for index, source in enumerate(sources):
        assert embedded[f"s{index}"][0][1] == source, f"cell of step s{index} changed"
    namespace = {}
    exec(compile(ast.Module([n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "PARAMETERS"], []), "x", "exec"), namespace)
    assert namespace["PARAMETERS"]["p"] == ("str", hostile_default)


def test_a_hostile_notebook_file_name_stays_data(tmp_path):
    canary = tmp_path / "odd" / "canary"
    run = "__import__('pathlib').Path('canary').write_text('pwned')"  # no '/' in a file name
    name = f"it's {TRIPLE_SINGLE}{TRIPLE_DOUBLE} {{{{x}}}} ) ; {run} #.ipynb"
    nb = make_notebook([("x = 1", ["step:a"]), ("y = x", ["step:b", "prev:a"])])
    script = write_script(nb, tmp_path / "odd", name)
    ast.parse(script.read_text(encoding="utf-8"))
    compiled = run_script(script)
    assert compiled.returncode == 0, compiled.stderr
    assert not canary.exists()


def test_importing_the_script_runs_no_notebook_code(tmp_path):
    """Importing (as kfp's compiler and `kfp dsl compile` do) defines functions only."""
    import importlib.util

    canary = tmp_path / "canary"
    run = _attack(canary)
    nb = make_notebook(
        [
            (run, ["imports"]),
            (run, ["functions"]),
            (f"x = 1\n{run}", ["step:a"]),
            (f"{run}\ny = x", ["step:b", "prev:a"]),
        ]
    )
    script = write_script(nb, tmp_path, "imp.ipynb")
    spec = importlib.util.spec_from_file_location("kale_hostile_import", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from kfp import compiler

    compiler.Compiler().compile(module.build_pipeline(), str(tmp_path / "imp.yaml"))
    assert not canary.exists()
    assert (tmp_path / "imp.yaml").exists()


def test_each_cell_runs_byte_exact_in_its_step(tmp_path):
    """Run the pipeline: each step reads the text of the code it is running (from the
    traceback line cache) and writes it out; it must equal the notebook cell."""
    out = tmp_path / "seen"
    out.mkdir()
    probe = (
        "import sys as _s, linecache as _l, pathlib as _p\n"
        "_f = _s._getframe().f_code.co_filename\n"
        f"_p.Path({str(out)!r}, _f.rsplit(' ', 1)[-1]).write_bytes(''.join(_l.getlines(_f)).encode('utf-8', 'surrogatepass'))\n"
    )
    sources = {
        "a": probe + f"x = {TRIPLE_SINGLE}\\\\ {TRIPLE_DOUBLE} {{{{ x }}}} {{% y %}}{TRIPLE_SINGLE}  # '\n",
        "b": probe + "y = x + 'ünï ✓ \\t \\r'\r\n# trailing \\\n",
        "c": probe + "z = [y,\n\tx]\n\n\n",
    }
    nb = make_notebook(
        [
            (sources["a"], ["step:a"]),
            (sources["b"], ["step:b", "prev:a"]),
            (sources["c"], ["step:c", "prev:b"]),
        ]
    )
    script = write_script(nb, tmp_path, "exact.ipynb")
    result = run_script(script, "--local")
    assert result.returncode == 0, result.stderr
    for step, source in sources.items():
        # linecache keeps the lines as splitlines(True) gave them: \r\n survives
        assert (out / step).read_bytes() == source.encode("utf-8"), step


def test_line_breaks_and_control_characters_in_defaults_keep_the_yaml_readable(tmp_path):
    """kfp heads the YAML with comments showing the description and each default as it
    is: a default with a line break would end its comment and put the rest in the YAML
    as data, and U+0084 made PyYAML (kfp's loader) refuse the file. The script writes
    those characters as escapes there; the documents keep the exact values, from the
    notebook and from --param alike."""
    from helpers import yaml_documents

    values = {"query": "select *\nfrom t\nwhere: 1", "ret": "a\rb", "c1": "x\x84y\x00z",
              "sep": "p\u2028q", "plain": "café"}
    cell = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    nb = make_notebook(
        [(cell, ["pipeline-parameters"]), ("n = len(query + ret + c1 + sep + plain)", ["step:count"])],
        metadata={"pipeline_description": "Counts.\nSecond line \x84 here."},
    )
    script = write_script(nb, tmp_path, "defaults.ipynb")
    for args in ((), ("--param", "ret=line one\nline two", "--output", "override.yaml")):
        result = run_script(script, *args)
        assert result.returncode == 0, result.stderr
        output = tmp_path / (args[-1] if args else "defaults.yaml")
        documents = yaml_documents(output)  # raises if a reader refuses the file
        assert len(documents) == 1
        parameters = documents[0]["root"]["inputDefinitions"]["parameters"]
        expected = dict(values, ret="line one\nline two") if args else values
        assert {name: parameters[name]["defaultValue"] for name in values} == expected
        header = output.read_text(encoding="utf-8").split("components:")[0]
        assert all(line.startswith("#") for line in header.splitlines()), header
        assert "#    query: str [Default: 'select *\\nfrom t\\nwhere: 1']" in header
        assert "x\\x84y\\x00z" in header and "p\\u2028q" in header and "café" in header
        assert "# Description: Counts.\n#              Second line \\x84 here." in header
