"""Test-only: seed Python's and NumPy's global random generators when a process starts
(``KALE_TEST_RESEED=N``), so that an unseeded notebook can be compared with its pipeline.

Each pipeline step is a new process; tests/equivalence.py reseeds the notebook the same
way before each step's first cell, so both draw the same numbers step by step.
"""

import os

_SEED = os.environ.get("KALE_TEST_RESEED")
if _SEED is not None:
    import random

    random.seed(int(_SEED))
    # Python reseeds its global generator from the OS in every forked child (the warm
    # worker forks each step): seed it again, after that.
    os.register_at_fork(after_in_child=lambda: random.seed(int(_SEED)))
    try:
        import numpy

        numpy.random.seed(int(_SEED))
    except ImportError:
        pass
