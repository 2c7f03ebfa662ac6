"""What a user's notebook, as tools and habits leave it, converts to: the pipeline name
option, a notebook papermill has run, and tags copied from cell to cell.

Each test converts through the real CLI (``jupyter nbconvert --to kale``) and compiles
the script with KFP (``python script.py`` writes the YAML next to it).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import nbformat

from helpers import convert, make_notebook, run_nbconvert, run_script, yaml_documents


def _convert_cli(nb, folder: Path, name: str, *args, env=None) -> subprocess.CompletedProcess:
    """``jupyter nbconvert --to kale ARGS NAME`` in ``folder``; ``env`` adds to the environment."""
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / name)
    return run_nbconvert(folder, "--to", "kale", *args, name, env=env, timeout=300)


def _compiled(script: Path) -> dict:
    """``python script.py``: the pipeline spec it writes."""
    result = run_script(script)
    assert result.returncode == 0, result.stderr
    return yaml_documents(script.with_suffix(".yaml"))[0]


def _defaults(spec: dict) -> dict:
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    return {name: entry.get("defaultValue") for name, entry in parameters.items()}


# -- --TagMergePreprocessor.pipeline_name -------------------------------------------------

NAMED = make_notebook([("x = 1", ["step:a"]), ("print(x)", ["step:b", "prev:a"])])


def test_the_pipeline_name_option_is_made_a_name_kfp_compiles(tmp_path):
    """As given on the command line: "My Pipeline" would make KFP refuse to compile; it
    becomes my-pipeline, with a warning saying so and what to write instead."""
    result = _convert_cli(NAMED, tmp_path, "named.ipynb", "--TagMergePreprocessor.pipeline_name=My Pipeline")
    assert result.returncode == 0, result.stderr
    assert "TagMergePreprocessor.pipeline_name is 'My Pipeline'" in result.stderr
    assert "so the pipeline is named 'my-pipeline'" in result.stderr
    assert "Fix: set TagMergePreprocessor.pipeline_name to 'my-pipeline'" in result.stderr
    assert _compiled(tmp_path / "named.py")["pipelineInfo"]["name"] == "my-pipeline"


def test_the_pipeline_name_from_a_config_file_is_made_a_name_kfp_compiles(tmp_path):
    """The same option in jupyter_nbconvert_config.py; a name too long for KFP is cut to
    128 characters, as the name from the notebook metadata is."""
    config = tmp_path / "config"
    config.mkdir()
    long_name = "Nightly Training Run " * 10
    (config / "jupyter_nbconvert_config.py").write_text(f"c.TagMergePreprocessor.pipeline_name = {long_name!r}\n")
    result = _convert_cli(NAMED, tmp_path / "nb", "named.ipynb", env={"JUPYTER_CONFIG_DIR": str(config)})
    assert result.returncode == 0, result.stderr
    assert "which Kubeflow does not accept as a pipeline name" in result.stderr
    name = _compiled(tmp_path / "nb" / "named.py")["pipelineInfo"]["name"]
    assert name.startswith("nightly-training-run-nightly-training-run-")
    assert len(name) <= 128 and not name.endswith("-")


def test_a_pipeline_name_option_kfp_accepts_is_used_as_given_without_a_warning():
    script, resources = convert(NAMED, **{"TagMergePreprocessor.pipeline_name": "nightly-2"})
    assert resources["kale_pipeline"].name == "nightly-2"
    assert resources["kale_pipeline"].warnings == []


# -- a notebook papermill has run -----------------------------------------------------------


def _papermill_output(cells, injected_at: int, parameters: dict) -> nbformat.NotebookNode:
    """A notebook as papermill writes it: its cell tagged exactly ['injected-parameters']
    inserted at ``injected_at``, papermill's metadata on the notebook and its cells."""
    nb = make_notebook(cells)
    source = "# Parameters\n" + "".join(f"{name} = {value!r}\n" for name, value in parameters.items())
    injected = nbformat.v4.new_code_cell(source)
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(injected_at, injected)
    nb.metadata["papermill"] = {
        "parameters": parameters,
        "input_path": "train.ipynb",
        "output_path": "train-out.ipynb",
        "environment_variables": {},
        "version": "2.6.0",
    }
    for cell in nb.cells:
        cell.metadata["papermill"] = {"status": "completed", "exception": False, "duration": 0.01}
    return nb


def test_a_notebook_papermill_ran_converts_with_the_injected_values_as_defaults(tmp_path):
    """papermill puts its cell right after the 'parameters' cell; in the notebook its
    values win, so they are the pipeline's defaults (a float stays a float when
    papermill passes a whole number), and the script compiles."""
    nb = _papermill_output(
        [
            ("seed = 42\nrate = 0.5\nlabel = 'base'", ["parameters"]),
            ("import random\nrandom.seed(seed)\nsample = [random.random() * rate for _ in range(3)]", ["step:draw"]),
            ("print(label, sample)", ["step:show", "prev:draw"]),
        ],
        injected_at=1,
        parameters={"seed": 7, "rate": 1},
    )
    assert nb.cells[1].source == "# Parameters\nseed = 7\nrate = 1\n"
    result = _convert_cli(nb, tmp_path, "train-out.ipynb")
    assert result.returncode == 0, result.stderr
    assert "defined twice" not in result.stderr
    assert "cell 2 (injected-parameters)" in result.stderr
    assert "seed = 7 (was 42 in cell 1)" in result.stderr and "rate = 1.0 (was 0.5 in cell 1)" in result.stderr
    spec = _compiled(tmp_path / "train-out.py")
    assert _defaults(spec) == {"seed": 7, "rate": 1.0, "label": "base"}
    parameter_types = {name: entry["parameterType"] for name, entry in spec["root"]["inputDefinitions"]["parameters"].items()}
    assert parameter_types == {"seed": "NUMBER_INTEGER", "rate": "NUMBER_DOUBLE", "label": "STRING"}


def test_papermill_s_cell_at_the_top_overrides_a_pipeline_parameters_cell():
    """papermill looks only for the tag 'parameters': with Kale's 'pipeline-parameters'
    it puts its cell first in the notebook. Its values still override, a name the
    parameters cell lacks becomes a parameter, and the cells below join what they
    joined before (the untagged cell after the imports is still an import)."""
    nb = _papermill_output(
        [
            ("import math", ["imports"]),
            ("import os", []),
            ("epochs = 3", ["pipeline-parameters"]),
            ("total = math.sqrt(epochs) + len(os.sep) + len(run_name)", ["step:train"]),
        ],
        injected_at=0,
        parameters={"epochs": 10, "run_name": "nightly"},
    )
    script, resources = convert(nb, "out.ipynb")
    pipeline = resources["kale_pipeline"]
    assert {name: p.default for name, p in pipeline.parameters.items()} == {"epochs": 10, "run_name": "nightly"}
    assert [cell.number for cell in pipeline.imports_cells] == [2, 3]
    assert [cell.number for cell in pipeline.parameters_cells] == [1, 4]
    assert "epochs: int = 10, run_name: str = 'nightly'" in script
    (warning,) = pipeline.warnings
    assert warning.startswith("out.ipynb, cell 1 (injected-parameters): ")
    assert "run_name = 'nightly' (a new parameter" in warning and " Fix: delete the 'injected-parameters' cell" in warning


def test_papermill_s_cell_repeating_the_defaults_converts_quietly():
    nb = _papermill_output(
        [("seed = 42", ["parameters"]), ("print(seed)", ["step:show"])],
        injected_at=1,
        parameters={"seed": 42},
    )
    _, resources = convert(nb)
    assert resources["kale_pipeline"].parameters["seed"].default == 42
    assert resources["kale_pipeline"].warnings == []


# -- prev: naming the cell's own step ----------------------------------------------------


def test_prev_naming_the_step_a_continuation_cell_belongs_to_is_ignored_with_a_warning(tmp_path):
    """The tags of a step's first cell copied onto the next cell, minus 'step:'."""
    nb = make_notebook(
        [
            ("data = [3, 1, 2]", ["step:load"]),
            ("data = sorted(data)", ["step:clean", "prev:load"]),
            ("data = data + [4]", ["prev:clean"]),  # continues clean
            ("again = data * 2", ["step:clean", "prev:clean"]),  # continues clean by name
            ("print(again)", ["step:show", "prev:clean"]),
        ]
    )
    result = _convert_cli(nb, tmp_path, "copied.ipynb")
    assert result.returncode == 0, result.stderr
    for cell in (3, 4):
        assert (
            f"copied.ipynb, cell {cell}, step clean: the tag 'prev:clean' names the step this "
            "cell is part of (it starts at cell 2), so it is ignored. Fix: remove "
            "'prev:clean' from the cell"
        ) in " ".join(result.stderr.split())
    spec = _compiled(tmp_path / "copied.py")
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"load", "clean", "show"}
    assert tasks["clean"].get("dependentTasks") == ["load"]
    assert tasks["show"].get("dependentTasks") == ["clean"]
