"""Per-step settings -> the ``kfp.dsl`` / ``kfp.kubernetes`` calls that apply them.

Every setting reaches the compiled pipeline or is refused with a clear error; none is
parsed and then dropped. ``kfp.kubernetes`` (kfp-kubernetes) is used for pod labels,
annotations and PVCs because it is the KFP project's own, maintained way to put
Kubernetes settings into the pipeline spec.
"""

from __future__ import annotations

import re

from .errors import NotebookError
from .literals import py_literal
from .model import Pipeline, Step

CPU = re.compile(r"^[0-9]+(\.[0-9]+)?m?$")
MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?(E|P|T|G|M|K|Ei|Pi|Ti|Gi|Mi|Ki)?$")
ACCELERATOR = re.compile(r"^[a-z0-9.-]+\.[a-z]+/[a-z0-9.-]+$")


def _limit_calls(step: Step, pipeline: Pipeline) -> list[str]:
    calls = []
    for resource, quantity in sorted(step.settings.limits.items()):
        def refuse(what: str, fix: str) -> NotebookError:
            return NotebookError(
                f"'limit:{resource}:{quantity}': {what}",
                notebook=pipeline.notebook,
                cell=step.first_cell,
                step=step.name,
                fix=fix,
            )

        if resource == "cpu":
            if not CPU.match(quantity):
                raise refuse("not a CPU quantity", "write e.g. 'limit:cpu:500m' or 'limit:cpu:2'")
            calls.append(f"set_cpu_limit({py_literal(quantity)})")
        elif resource == "memory":
            if not MEMORY.match(quantity):
                raise refuse("not a memory quantity", "write e.g. 'limit:memory:4Gi'")
            calls.append(f"set_memory_limit({py_literal(quantity)})")
        elif ACCELERATOR.match(resource):
            if not quantity.isdigit():
                raise refuse("an accelerator count must be a whole number", "write e.g. 'limit:nvidia.com/gpu:1'")
            calls.append(f"set_accelerator_type({py_literal(resource)})")
            calls.append(f"set_accelerator_limit({int(quantity)})")
        else:
            raise refuse(
                "KFP can limit only cpu, memory and accelerators (vendor.com/kind)",
                "use limit:cpu:, limit:memory: or e.g. limit:nvidia.com/gpu:",
            )
    return calls


def task_calls(step: Step, pipeline: Pipeline) -> list[str]:
    """Method calls on the step's task, as Python source (``set_memory_limit('4Gi')``)."""
    return _limit_calls(step, pipeline)


def kubernetes_calls(step: Step, pipeline: Pipeline) -> list[tuple[str, str]]:
    """``kfp.kubernetes`` calls for the task: [(function, literal arguments)]."""
    calls = []
    for key, value in sorted(step.settings.labels.items()):
        calls.append(("add_pod_label", f"{py_literal(key)}, {py_literal(value)}"))
    for key, value in sorted(step.settings.annotations.items()):
        calls.append(("add_pod_annotation", f"{py_literal(key)}, {py_literal(value)}"))
    return calls


def uses_kubernetes(pipeline: Pipeline) -> bool:
    return bool(pipeline.volumes) or any(
        kubernetes_calls(step, pipeline) for step in pipeline.steps.values()
    )
