"""The finished model -> the strings the template lays out.

Every decision about the script's text (signatures, literals, which settings apply) is
made here, in Python, so ``templates/kale/index.py.j2`` holds layout only.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

from . import __version__, launcher, runtime
from .dataflow import dataflow_table
from .errors import NotebookError
from .literals import docstring_text, py_literal
from .model import Pipeline, Step
from .task_settings import kubernetes_calls, task_calls, uses_kubernetes


@dataclass
class StepView:
    name: str
    signature: str
    docstring: str
    body: str
    """The call of the in-step runtime, indented for the function body."""
    packages: str
    arguments: str
    """Keyword arguments of the component call inside the pipeline function."""
    after: list[str] = field(default_factory=list)
    task_calls: list[str] = field(default_factory=list)
    kubernetes_calls: list[tuple[str, str]] = field(default_factory=list)


def _signature(step: Step, pipeline: Pipeline) -> list[str]:
    arguments = [f"{a.input_argument}: Input[Artifact]" for a in step.inputs]
    arguments += [f"{name}: {pipeline.parameters[name].type_name}" for name in step.parameters]
    arguments += [
        f"{name}_out: Output[{step.output_kinds.get(name, 'Artifact')}]" for name in step.outputs
    ]
    if step.is_metrics:
        arguments.append("metrics: Output[Metrics]")
    names = [argument.split(":")[0] for argument in arguments]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise NotebookError(
            f"step {step.name!r} would have two component arguments named "
            f"{duplicates[0]!r} (a variable and a parameter clash)",
            notebook=pipeline.notebook,
            cell=step.first_cell,
            step=step.name,
            fix="rename the parameter or the variable",
        )
    return arguments


def _body(step: Step, pipeline: Pipeline) -> str:
    inputs = "{" + ", ".join(
        f"{py_literal(a.name)}: ({a.input_argument}, {py_literal(a.producer)})"
        for a in step.inputs
    ) + "}"
    if step.is_metrics:
        return f"_kale_log_metrics({py_literal(pipeline.notebook)}, {inputs}, metrics)"
    cells = "".join(
        f"        ({cell.number}, {py_literal(cell.code)}),\n" for cell in step.cells
    )
    parameters = "{" + ", ".join(f"{py_literal(n)}: {n}" for n in step.parameters) + "}"
    outputs = "{" + ", ".join(f"{py_literal(n)}: {n}_out" for n in step.outputs) + "}"
    output_cells = "{" + ", ".join(
        f"{py_literal(n)}: {step.output_cells[n]}" for n in step.outputs if n in step.output_cells
    ) + "}"
    return (
        "_kale_run_step(\n"
        f"        notebook={py_literal(pipeline.notebook)},\n"
        f"        step={py_literal(step.name)},\n"
        f"        cells=[\n{cells}        ],\n"
        "        shared=_kale_shared_cells(),\n"
        f"        imports={py_literal(step.replayed_imports)},\n"
        f"        parameters={parameters},\n"
        f"        inputs={inputs},\n"
        f"        outputs={outputs},\n"
        f"        uses_ipython={step.uses_ipython or any(c.uses_ipython for c in pipeline.shared_cells)},\n"
        f"        output_cells={output_cells},\n"
        "    )"
    )


def _docstring(step: Step) -> str:
    if step.is_metrics:
        return "Report the notebook's pipeline-metrics variables as KFP metrics."
    numbers = ", ".join(str(cell.number) for cell in step.cells)
    return f"Step {step.name}: notebook cells {numbers}."


def _arguments(step: Step, pipeline: Pipeline) -> str:
    arguments = [
        f'{a.input_argument}={a.producer}_task.outputs["{a.name}_out"]' for a in step.inputs
    ]
    arguments += [f"{name}={name}" for name in step.parameters]
    return ", ".join(arguments)


def _check_identifiers(pipeline: Pipeline) -> None:
    """Parameters must not shadow the names the pipeline function body uses."""
    generated = set()
    for name in pipeline.steps:
        generated |= {f"{name}_task", f"{name}_component"}
    generated |= {"dsl", "kubernetes", "local", "_kale_component"}
    for parameter in pipeline.parameters.values():
        if parameter.name in generated:
            raise NotebookError(
                f"parameter {parameter.name!r} clashes with a name the generated "
                "pipeline uses",
                notebook=pipeline.notebook,
                cell=parameter.cell,
                line=parameter.line,
                fix=f"rename it, e.g. {parameter.name}_value",
            )


def _pipeline_function(pipeline: Pipeline) -> str:
    name = pipeline.name.replace("-", "_") + "_pipeline"
    if not name.isidentifier() or name in pipeline.steps or name in pipeline.parameters:
        name = "notebook_pipeline"
    return name


def _check_volumes(pipeline: Pipeline) -> None:
    for volume in pipeline.volumes:
        if volume.type == "pv":
            raise NotebookError(
                f"volume {volume.name!r} is of type 'pv', which kale_nbconvert cannot "
                "mount directly",
                notebook=pipeline.notebook,
                fix="create a PVC bound to the PV and list it with type 'pvc'",
            )


def script_context(pipeline: Pipeline) -> dict:
    """What ``index.py.j2`` needs, all Python literals or validated identifiers."""
    _check_identifiers(pipeline)
    _check_volumes(pipeline)
    steps = []
    for step in pipeline.step_list():
        steps.append(
            StepView(
                name=step.name,
                signature=", ".join(_signature(step, pipeline)),
                docstring=docstring_text(_docstring(step)),
                body=_body(step, pipeline),
                packages=py_literal(step.packages),
                arguments=_arguments(step, pipeline),
                after=[name for name in step.prev if name not in {a.producer for a in step.inputs}],
                task_calls=task_calls(step, pipeline),
                kubernetes_calls=kubernetes_calls(step, pipeline),
            )
        )
    shared = "[\n" + "".join(
        f"        ({cell.number}, {py_literal(cell.code)}),\n" for cell in pipeline.shared_cells
    ) + "    ]"
    parameters = ", ".join(
        f"{p.name}: {p.type_name} = {py_literal(p.default)}" for p in pipeline.parameters.values()
    )
    summary = (
        f"{pipeline.name}: a Kubeflow pipeline generated from {pipeline.notebook} by "
        f"kale_nbconvert {__version__}.\n\n"
        + (f"{pipeline.description}\n\n" if pipeline.description else "")
        + "Edit the notebook and convert it again rather than editing this file.\n\n"
        "Data flow (inputs arrive as KFP artifacts from the named step):\n\n"
        + "\n".join("    " + line for line in dataflow_table(pipeline).splitlines())
        + "\n\nUsage:\n"
        "    python THIS_FILE                      compile to YAML next to this file\n"
        "    python THIS_FILE --local              run every step on this machine\n"
        "    python THIS_FILE --local --cache      re-run only steps whose code or inputs changed\n"
        "    python THIS_FILE --param NAME=VALUE   override a pipeline parameter\n"
        "    python THIS_FILE --host URL           upload and run on a Kubeflow cluster\n"
        "    python THIS_FILE --help               everything else\n"
    )
    return {
        "version": __version__,
        "docstring": docstring_text(summary),
        "description": py_literal(pipeline.description),
        "runtime_source": inspect.getsource(runtime).split('"""', 2)[2].strip(),
        "launcher_source": inspect.getsource(launcher).split('"""', 2)[2].strip(),
        "runtime_functions": ", ".join(runtime.RUNTIME_FUNCTIONS + ("_kale_shared_cells",)),
        "shared": shared,
        "steps": steps,
        "packages": py_literal(pipeline.packages),
        "preload": py_literal(pipeline.preload_modules),
        "parameters_signature": parameters,
        "parameters_table": "{" + ", ".join(
            f"{py_literal(p.name)}: ({py_literal(p.type_name)}, {py_literal(p.default)})"
            for p in pipeline.parameters.values()
        ) + "}",
        "uses_kubernetes": uses_kubernetes(pipeline),
        "volumes": [
            {
                "variable": "volume_" + re.sub(r"\W", "_", volume.name),
                "type": volume.type,
                "mount_point": py_literal(volume.mount_point),
                "pvc_name": py_literal(volume.name),
                "size": py_literal(volume.size or "1Gi"),
                "access_mode": py_literal(volume.access_mode),
                "storage_class": py_literal(volume.storage_class_name) if volume.storage_class_name else "",
            }
            for volume in pipeline.volumes
        ],
        "pipeline_function": _pipeline_function(pipeline),
    }
