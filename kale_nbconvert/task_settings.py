"""Per-step settings -> the ``kfp.dsl`` / ``kfp.kubernetes`` calls that apply them.

Every setting reaches the compiled pipeline or is refused with a clear error; none is
parsed and then dropped. ``kfp.kubernetes`` (kfp-kubernetes) is used for pod labels,
annotations, PVCs, the timeout, secrets, config maps, node selectors, tolerations and
the ``/dev/shm`` emptyDir because it is the KFP project's own, maintained way to put
Kubernetes settings into the pipeline spec.
"""

from __future__ import annotations

import re

from .errors import NotebookError
from .literals import py_literal
from .model import Pipeline, Step
from .tags import quantity_problem

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

        problem = quantity_problem("limit", resource, quantity)
        if problem:
            raise refuse(*problem)
        if resource in ("cpu", "memory"):
            calls.append(f"set_{resource}_limit({py_literal(quantity)})")
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
    """Method calls on the step's task, as Python source (``set_memory_limit('4Gi')``).
    The values were validated when the tags were parsed (``tags._parse_setting``)."""
    settings = step.settings
    calls = _limit_calls(step, pipeline)
    for resource, quantity in sorted(settings.requests.items()):
        calls.append(f"set_{resource}_request({py_literal(quantity)})")  # cpu, memory only
    if settings.image:
        calls.append(f"set_container_image({py_literal(settings.image)})")
    if settings.retry is not None:
        count, backoff = settings.retry
        extra = f", backoff_duration={py_literal(f'{backoff}s')}" if backoff else ""
        calls.append(f"set_retry({int(count)}{extra})")
    if settings.cache is not None:
        calls.append(f"set_caching_options({bool(settings.cache)!r})")
    for name, value in sorted(settings.env.items()):
        calls.append(f"set_env_variable({py_literal(name)}, {py_literal(value)})")
    return calls


def kubernetes_calls(step: Step, pipeline: Pipeline) -> list[tuple[str, str]]:
    """``kfp.kubernetes`` calls for the task: [(function, literal arguments)]."""
    calls = []
    for key, value in sorted(step.settings.labels.items()):
        calls.append(("add_pod_label", f"{py_literal(key)}, {py_literal(value)}"))
    for key, value in sorted(step.settings.annotations.items()):
        calls.append(("add_pod_annotation", f"{py_literal(key)}, {py_literal(value)}"))
    settings = step.settings
    if settings.timeout:
        calls.append(("set_timeout", f"seconds={int(settings.timeout)}"))
    # Only a secret's name and key reach the script; its value stays in the cluster.
    for function, argument, table in (
        ("use_secret_as_env", "secret", settings.secret_env),
        ("use_config_map_as_env", "config_map", settings.configmap_env),
    ):
        for env, (name, key) in sorted(table.items()):
            # One call per variable: the same key may feed two variables.
            calls.append((
                function,
                f"{argument}_name={py_literal(name)}, "
                f"{argument}_key_to_env={py_literal({key: env})}",
            ))
    for path, name in sorted(settings.secret_volumes.items()):
        calls.append(("use_secret_as_volume", f"secret_name={py_literal(name)}, mount_path={py_literal(path)}"))
    for path, name in sorted(settings.configmap_volumes.items()):
        calls.append(("use_config_map_as_volume", f"config_map_name={py_literal(name)}, mount_path={py_literal(path)}"))
    for key, value in sorted(settings.node_selectors.items()):
        calls.append(("add_node_selector", f"label_key={py_literal(key)}, label_value={py_literal(value)}"))
    for _, (key, value, effect) in sorted(settings.tolerations.items()):
        operator = "Exists" if value is None else "Equal"
        value_text = "" if value is None else f", value={py_literal(value)}"
        calls.append((
            "add_toleration",
            f"key={py_literal(key)}, operator={py_literal(operator)}{value_text}, "
            f"effect={py_literal(effect)}",
        ))
    if settings.shm:
        calls.append((
            "empty_dir_mount",
            f"volume_name='kale-shm', mount_path='/dev/shm', medium='Memory', "
            f"size_limit={py_literal(settings.shm)}",
        ))
    return calls


def uses_kubernetes(pipeline: Pipeline) -> bool:
    return bool(pipeline.volumes) or any(
        kubernetes_calls(step, pipeline) for step in pipeline.steps.values()
    )
