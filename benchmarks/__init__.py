"""Benchmarks for kale_nbconvert: ``python -m benchmarks [--quick] [--json FILE]``.

Each figure is ours against a baseline measured in the same run (see common.py for why).
Modules: ``conversion`` (command line and in-process conversion, scaling),
``local_run`` (``--local`` per-step overhead, examples vs nbclient), ``marshal``
(in-step save+load), ``check`` (the in-step check that inputs did not change unseen), ``kale_runs`` (Kale 2.3.0's pipeline on kfp.local and its
marshalling), ``kale_baseline`` (Kale 2.3.0 in its own venv), ``generate``
(synthetic notebooks), ``common`` (timing, peak RSS, the table).
"""
