"""Generated scripts run: compile to YAML, --local with kfp.local, parameters, failures."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from equivalence import load_snapshot
from helpers import make_notebook, run_script, write_script

pytestmark = pytest.mark.slow

KALE_STYLE = make_notebook(
    [
        ("markdown", "# Kale-style notebook"),
        ("import json", ["imports"]),
        ("def describe(items):\n    return json.dumps(sorted(items))", ["functions"]),
        ("greeting = 'it\\'s a \"quoted\" {{ value }}'\ncount = 3", ["pipeline-parameters"]),
        ("items = list(range(count))", ["block:start"]),
        ("items.append(len(greeting))", []),  # untagged: continues 'start'
        ("items.append(-1000)", ["skip"]),
        ("summary = describe(items) + greeting\nprint(summary)", ["step:report", "prev:start"]),
    ]
)


def _snapshot(tmp_path, step):
    return load_snapshot(tmp_path / "snap" / step)


def test_block_untagged_skip_and_quoted_parameter_run_correctly(tmp_path):
    script = write_script(KALE_STYLE, tmp_path, "kale_style.ipynb")
    result = run_script(script, "--local", env={"KALE_NBCONVERT_SNAPSHOT_DIR": str(tmp_path / "snap")})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    greeting = 'it\'s a "quoted" {{ value }}'
    assert _snapshot(tmp_path, "start")["items"] == [0, 1, 2, len(greeting)]
    assert _snapshot(tmp_path, "report")["summary"] == f"[0, 1, 2, {len(greeting)}]" + greeting
    assert greeting in result.stdout  # the user's print reached the log


def test_a_run_time_parameter_reaches_the_steps(tmp_path):
    script = write_script(KALE_STYLE, tmp_path, "kale_style.ipynb")
    result = run_script(
        script, "--local", "--param", "count=5", "--param", "greeting=hi",
        env={"KALE_NBCONVERT_SNAPSHOT_DIR": str(tmp_path / "snap")},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert _snapshot(tmp_path, "start")["items"] == [0, 1, 2, 3, 4, 2]


def test_bad_parameters_are_refused_before_running(tmp_path):
    script = write_script(KALE_STYLE, tmp_path, "kale_style.ipynb")
    unknown = run_script(script, "--local", "--param", "colour=red")
    assert unknown.returncode == 2
    assert "no such pipeline parameter" in unknown.stderr
    typo = run_script(script, "--local", "--param", "cuont=5")
    assert typo.returncode == 2
    assert "did you mean 'count'?" in typo.stderr
    bad = run_script(script, "--local", "--param", "count=three")
    assert bad.returncode == 2
    assert "not a valid int" in bad.stderr


def test_a_failing_cell_fails_the_run_and_names_the_cell(tmp_path):
    nb = make_notebook(
        [
            ("x = 1", ["step:first"]),
            ("y = x + 1\nz = y / 0", ["step:second", "prev:first"]),
            ("print(z)", ["step:third", "prev:second"]),
        ]
    )
    script = write_script(nb, tmp_path, "broken.ipynb")
    result = run_script(script, "--local")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "broken.ipynb cell 2, step second, line 2" in output
    assert "ZeroDivisionError" in output
    assert "Executing task 'third'" not in output.replace("\x1b[96m", "").replace("\x1b[0m", "")


def test_compiled_yaml_loads_back_and_runs_with_kfp_local(tmp_path):
    script = write_script(KALE_STYLE, tmp_path, "kale_style.ipynb")
    compiled = run_script(script)
    assert compiled.returncode == 0, compiled.stderr
    yaml_path = tmp_path / "kale_style.yaml"
    assert yaml_path.exists()
    runner = textwrap.dedent(
        f"""
        from kfp import components, local
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root={str(tmp_path / 'runs')!r})
        pipeline = components.load_component_from_file({str(yaml_path)!r})
        pipeline(count=2)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", runner],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "KALE_NBCONVERT_SNAPSHOT_DIR": str(tmp_path / "snap")},
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    greeting = 'it\'s a "quoted" {{ value }}'
    assert _snapshot(tmp_path, "start")["items"] == [0, 1, len(greeting)]


def test_kfp_dsl_compile_accepts_the_script(tmp_path):
    script = write_script(KALE_STYLE, tmp_path, "kale_style.ipynb")
    result = subprocess.run(
        [sys.executable, "-c", "from kfp.cli.__main__ import main; main()",
         "dsl", "compile", "--py", str(script), "--output", str(tmp_path / "p.yaml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "pipelineInfo" in (tmp_path / "p.yaml").read_text()


def test_metrics_print_as_the_notebook_prints_them_and_a_bad_one_says_why(tmp_path):
    nb = make_notebook(
        [
            ("total = 32\nshare = 0.5\nlabel = 'best'", ["step:count"]),
            ("print(total)\nprint(share)", ["pipeline-metrics"]),
        ]
    )
    script = write_script(nb, tmp_path, "metrics.ipynb")
    result = run_script(script, "--local")
    assert result.returncode == 0, result.stderr
    assert "pipeline-metrics | total: 32\n" in result.stdout  # not 32.0
    assert "pipeline-metrics | share: 0.5\n" in result.stdout
    nb.cells[1].source = "print(label)"
    script = write_script(nb, tmp_path / "bad", "metrics.ipynb")
    failed = run_script(script, "--local")
    assert failed.returncode == 1
    summary = [line for line in failed.stderr.splitlines() if "pipeline-metrics" in line and "failed" in line]
    assert summary and "metric 'label'" in summary[0] and "not a number" in summary[0]
    assert "Fix:" in summary[0]
