"""The exporter as users reach it: nbconvert's entry point, CLI options, installs."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import venv
from pathlib import Path

import nbformat
import pytest
from nbconvert.exporters import get_export_names, get_exporter

import kale_nbconvert
from helpers import convert, make_notebook, run_nbconvert

REPO = Path(__file__).resolve().parent.parent

SIMPLE = make_notebook(
    [
        ("import math", ["imports"]),
        ("n = 4", ["pipeline-parameters"]),
        ("squares = [i * i for i in range(n)]", ["step:make"]),
        ("total = math.fsum(squares)\nprint(total)", ["step:add", "prev:make"]),
    ]
)


def test_entry_point_registers_the_kale_exporter():
    assert "kale" in get_export_names()
    assert get_exporter("kale") is kale_nbconvert.KaleExporter


def test_the_script_is_valid_python_with_one_function_per_step():
    script, resources = convert(SIMPLE)
    tree = ast.parse(script)
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert {"make_step", "add_step", "build_pipeline"} <= functions  # step NAME: NAME_step
    assert resources["output_extension"] == ".py"


def test_conversion_is_deterministic():
    assert convert(SIMPLE)[0] == convert(SIMPLE)[0]


def _cli(tmp_path, *args):
    nbformat.write(SIMPLE, tmp_path / "simple.ipynb")
    return run_nbconvert(tmp_path, "--to", "kale", *args)


def test_cli_writes_the_script_next_to_the_notebook(tmp_path):
    result = _cli(tmp_path, "simple.ipynb")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "simple.py").read_text().startswith("#!/usr/bin/env python3")


def test_cli_stdout_output_and_output_dir(tmp_path):
    result = _cli(tmp_path, "simple.ipynb", "--stdout")
    assert result.returncode == 0, result.stderr
    assert "def build_pipeline" in result.stdout
    assert not (tmp_path / "simple.py").exists()
    result = _cli(tmp_path, "simple.ipynb", "--output-dir", "out", "--output", "pipe")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "pipe.py").exists()


def test_user_template_dirs_do_not_hide_the_exporter(tmp_path):
    result = _cli(tmp_path, "simple.ipynb", f"--TemplateExporter.extra_template_basedirs={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "simple.py").exists()


def test_a_bad_notebook_fails_with_the_cell_and_writes_nothing(tmp_path):
    nb = make_notebook([("x = 1", ["step:first"]), ("y = x +", ["step:second", "prev:first"])])
    nbformat.write(nb, tmp_path / "bad.ipynb")
    before = (tmp_path / "bad.ipynb").read_bytes()
    result = run_nbconvert(tmp_path, "--to", "kale", "bad.ipynb")
    assert result.returncode != 0
    assert "bad.ipynb, cell 2, step second, line 1: syntax error" in result.stderr
    assert not (tmp_path / "bad.py").exists()
    assert (tmp_path / "bad.ipynb").read_bytes() == before


def test_editable_install_serves_the_source_tree():
    assert Path(kale_nbconvert.__file__).resolve().parent == REPO / "kale_nbconvert"


def _venv_seeing_this_environment(env_dir: Path) -> Path:
    """A new venv whose own site-packages comes first, then this interpreter's.

    ``system_site_packages=True`` would give the BASE interpreter's packages, which
    from inside a virtual environment lacks nbconvert; a ``.pth`` line naming this
    interpreter's site-packages works from a venv and from the system interpreter
    alike. Plain path lines do not run that folder's own ``.pth`` files, so this
    project's editable install stays out of the way of the wheel's copy.
    """
    import sysconfig

    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    own = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    parents = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (Path(own) / "_kale_test_parent_environment.pth").write_text("\n".join(parents) + "\n")
    return python


@pytest.mark.slow
def test_wheel_install_registers_the_exporter_and_its_template(tmp_path):
    """Build a wheel, install it in a fresh venv, convert with that install."""
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    wheel = next(dist.glob("kale_nbconvert-*.whl"))
    env_dir = tmp_path / "venv"
    python = _venv_seeing_this_environment(env_dir)
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", str(wheel)],
        capture_output=True,
        text=True,
    )
    if install.returncode != 0:  # older pip without --python
        install = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-deps", "--prefix", str(env_dir), str(wheel)],
            capture_output=True,
            text=True,
        )
    assert install.returncode == 0, install.stderr
    nbformat.write(SIMPLE, tmp_path / "simple.ipynb")
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only the wheel's copy
    # One process (nbconvert's import is seconds): where the package and its template
    # come from, then nbconvert's command line, which finds "kale" by its entry point.
    probe = (
        "import sys, kale_nbconvert, kale_nbconvert.exporter as e\n"
        "print(kale_nbconvert.__file__); print(e.templates_directory(), flush=True)\n"
        "from nbconvert.nbconvertapp import main\n"
        "sys.argv = ['jupyter-nbconvert', '--to', 'kale', 'simple.ipynb']\n"
        "main()\n"
    )
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=clean)
    assert result.returncode == 0, result.stdout + result.stderr
    module_file, templates = result.stdout.splitlines()[:2]
    assert str(env_dir) in module_file and str(env_dir) in templates, result.stdout
    assert "def build_pipeline" in (tmp_path / "simple.py").read_text()


def test_read_only_functions_option_reaches_the_analysis():
    """``tidy(df)`` sorts its argument, so it changes ``df``, unless the user says tidy
    is read-only (they know better, e.g. it sorts a copy on the path they use)."""
    from kale_nbconvert.errors import NotebookError

    nb = make_notebook(
        [
            ("def tidy(frame):\n    frame.sort()", ["functions"]),
            ("df = [2, 1]", ["step:load"]),
            ("tidy(df)", ["step:show", "prev:load"]),
            ("total = sum(df)", ["step:add", "prev:load"]),
        ]
    )
    with pytest.raises(NotebookError, match="add the tag 'prev:show'"):
        convert(nb)
    _, resources = convert(nb, **{"NameAnalysisPreprocessor.read_only_functions": ["tidy"]})
    add = resources["kale_pipeline"].steps["add"]
    assert [(a.name, a.producer) for a in add.inputs] == [("df", "load")]
    assert resources["kale_pipeline"].steps["load"].output_cells == {"df": 2}


@pytest.mark.parametrize(
    "flags",
    [
        ["--NameAnalysisPreprocessor.mutating_functions=fill,stretch"],
        ["--NameAnalysisPreprocessor.mutating_functions=fill",
         "--NameAnalysisPreprocessor.mutating_functions=stretch"],
    ],
    ids=["comma-separated", "repeated"],
)
def test_list_options_take_commas_and_repeated_flags(tmp_path, flags):
    """Both spellings a Jupyter user writes reach the analysis as two names."""
    nb = make_notebook(
        [
            ("a = [1]\nb = [2]", ["step:load"]),
            ("import mylib\nmylib.fill(a)\nmylib.stretch(b)", ["step:change", "prev:load"]),
            ("print(a, b)", ["step:show", "prev:load"]),
        ]
    )
    nbformat.write(nb, tmp_path / "nb.ipynb")
    result = run_nbconvert(tmp_path, "--to", "kale", "nb.ipynb", *flags)
    assert result.returncode == 1
    assert "step 'show' reads 'a'" in result.stderr and "prev:change" in result.stderr
    assert not (tmp_path / "nb.py").exists()
    nb.cells[1].source = "import mylib\nmylib.stretch(b)"
    nbformat.write(nb, tmp_path / "nb.ipynb")
    result = run_nbconvert(tmp_path, "--to", "kale", "nb.ipynb", *flags)
    assert "step 'show' reads 'b'" in result.stderr, result.stderr


def test_explain_says_what_each_step_may_change_and_why():
    nb = make_notebook(
        [
            ("import random\ndeck = [1, 2, 3]\nmodel = []", ["step:load"]),
            ("random.shuffle(deck)\nmodel.fit(deck)", ["step:train", "prev:load"]),
            ("print(deck, model)", ["step:show", "prev:train"]),
        ]
    )
    script, resources = convert(nb)
    assert "train: deck (cell 2, line 1: random.shuffle(deck))" in script
    assert "train: model (cell 2, line 2: model.fit(deck))" in script
