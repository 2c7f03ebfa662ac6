"""Test profiles: the default one a contributor runs, the exhaustive one CI runs.

``make test`` runs the default profile (under 2 minutes on a quiet 2-core machine, more
when the machine is busy): every behaviour is covered, the property test draws 100
notebooks, and the tests marked ``exhaustive`` (more of the same at greater cost: 2,000
notebooks, the benchmark harness, every example's compiled YAML run with kfp.local and
its equivalence run, not just one, the real-browser test, the heavy libraries' values
crossing a pipeline) are skipped with a reason that says how to run them.
``KALE_TEST_PROFILE=exhaustive make test`` (what CI runs) runs everything.

Bytecode is written whatever ``PYTHONDONTWRITEBYTECODE`` says: the suite starts some
400 Python processes (conversions, scripts, steps, kernels, servers) that import this
package, and pytest rewrites every test module again in each worker; without cached
bytecode each of them compiles from source again (a quarter of the default profile's
wall time on a 2-core machine, 4:26 -> 3:28). The cache goes to ``__pycache__``
folders, which git ignores; where a folder is not writable Python skips it silently.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # and in every process the suite starts

PROFILE = os.environ.get("KALE_TEST_PROFILE", "default")
EXHAUSTIVE = PROFILE == "exhaustive"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "exhaustive: runs only in the exhaustive profile (KALE_TEST_PROFILE=exhaustive)"
    )


def pytest_report_header(config):
    return f"kale test profile: {PROFILE} (KALE_TEST_PROFILE=exhaustive runs everything)"


def pytest_collection_modifyitems(config, items):
    if EXHAUSTIVE:
        return
    skip = pytest.mark.skip(
        reason="exhaustive profile only: run KALE_TEST_PROFILE=exhaustive make test (CI does)"
    )
    for item in items:
        if "exhaustive" in item.keywords:
            item.add_marker(skip)
