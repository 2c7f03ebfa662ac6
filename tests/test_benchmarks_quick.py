"""Smoke test of the benchmark harness: ``python -m benchmarks --quick`` runs end to end.

It asserts nothing about speed (a shared CI machine is too noisy for that); it only
checks that every figure group still produces a row, so the harness does not rot.
"""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.exhaustive
def test_quick_benchmarks_run_and_print_every_group(tmp_path):
    out_json = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out_json)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith("| group") and "| baseline" in line and "| met" in line
               for line in lines), done.stdout
    assert any(line.startswith("machine:") for line in lines)
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| group")]
    for group in ("conversion", "scaling", "local run", "memory"):
        assert any(row.startswith(f"| {group} ") for row in rows), (group, done.stdout)
    assert "harness error" not in done.stdout, done.stdout
    assert out_json.exists()
