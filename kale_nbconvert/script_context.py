"""The finished model -> the strings the template lays out.

Every decision about the script's text (signatures, literals, which settings apply) is
made here, in Python, so ``templates/kale/index.py.j2`` holds layout only. Runs at
conversion; the code the script embeds comes from ``kale_nbconvert/embedded/``
(``shipped``), whose in-step list becomes the script's ``RUNTIME``.
"""

from __future__ import annotations

import builtins
import keyword
import re
import textwrap
from dataclasses import dataclass, field

from . import __version__
from .dataflow import dataflow_table
from .embedded import COMMAND_LINE, IN_STEP, shipped
from .errors import NotebookError, _one_line
from .literals import docstring_text, py_literal
from .model import Pipeline, Step
from .tags import kfp_name
from .task_settings import kubernetes_calls, task_calls, uses_kubernetes


SCRIPT_GLOBALS = frozenset(
    {
        "sys", "dsl", "kubernetes", "Artifact", "Dataset", "Input", "Metrics", "Model", "Output",
        "PIPELINE_NAME", "EXPERIMENT_NAME", "KFP_HOST", "BASE_IMAGE", "PACKAGES", "PARAMETERS",
        "PRELOAD", "RUNTIME", "_kale_shared_cells", "build_pipeline", "pipeline",
        "local", "_kale_component",
    }
)
"""What ``index.py.j2`` itself defines or imports at module level (and ``build_pipeline``'s
own locals). A test checks this list against a rendered script."""


@dataclass(frozen=True)
class StepNames:
    """The Python identifiers the script uses for one step, and its name in Kubeflow."""

    function: str
    """The component's function (module level), ``train_step`` for step ``train``."""
    component: str
    """The component, a local of ``build_pipeline``."""
    task: str
    """The task, a local of the pipeline function."""
    kfp: str
    """The component and task name in KFP (``train_model`` -> ``train-model``)."""


@dataclass
class ScriptNames:
    steps: dict[str, StepNames]
    pipeline_function: str
    volumes: list[str]
    """The variable of each volume's ``CreatePVC`` task, in ``pipeline.volumes`` order."""


def embedded_names() -> set[str]:
    """The functions the script embeds (``kale_nbconvert/embedded/``, both parts)."""
    return set(shipped(IN_STEP)) | set(shipped(COMMAND_LINE))


def _unique(candidate: str, taken: set[str], fallback: str) -> str:
    """``candidate`` (or ``fallback`` if it is no identifier), numbered until it is in
    no use; it is then taken."""
    if not candidate.isidentifier():
        candidate = fallback
    name, number = candidate, 2
    while name in taken or keyword.iskeyword(name):
        name, number = f"{candidate}_{number}", number + 1
    taken.add(name)
    return name


def generated_names(pipeline: Pipeline) -> ScriptNames:
    """Every identifier the script derives from the notebook, decided in one place.

    A step may be called anything the tag grammar allows (``sum``, ``class``, ``os``,
    ``pipeline``, ``a`` next to ``a_step``...), so a step never becomes an identifier
    as is: its function is ``<name>_step``, its component ``<name>_component``, its task
    ``<name>_task``, each numbered (``_2``) if that is already in use. All of them,
    the parameters, the script's own globals, the embedded functions
    (``embedded_names``), Python's keywords and builtins share one set of taken names, so no two can collide, whatever
    the scope. The step's own name stays what users see: the KFP component and task
    (``kfp``), the run folder, ``kale-run.json``, messages.
    """
    taken = set(SCRIPT_GLOBALS) | set(dir(builtins)) | set(keyword.softkwlist)
    taken |= embedded_names()
    taken |= set(pipeline.parameters)
    function = _unique(pipeline.name.replace("-", "_") + "_pipeline", taken, "notebook_pipeline")
    steps = {}
    for step in pipeline.step_list():
        steps[step.name] = StepNames(
            function=_unique(f"{step.name}_step", taken, "step"),
            component=_unique(f"{step.name}_component", taken, "component"),
            task=_unique(f"{step.name}_task", taken, "task"),
            kfp=kfp_name(step.name),
        )
    volumes = [
        _unique("volume_" + re.sub(r"\W", "_", volume.name) + "_pvc", taken, "volume_pvc")
        for volume in pipeline.volumes
    ]
    return ScriptNames(steps, function, volumes)


@dataclass
class StepView:
    name: str
    function: str
    component: str
    task: str
    kfp_name: str
    """A Python literal."""
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
    parameters = "{" + ", ".join(f"{py_literal(n)}: {n}" for n in step.parameters) + "}"
    if step.is_metrics:
        return f"_kale_log_metrics({py_literal(pipeline.notebook)}, {inputs}, metrics, {parameters})"
    cells = "".join(
        f"        ({cell.number}, {py_literal(cell.code)}),\n" for cell in step.cells
    )
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
        + (f"        watched={py_literal(step.watched_inputs)},\n" if step.watched_inputs else "")
        + "    )"
    )


def _docstring(step: Step) -> str:
    if step.is_metrics:
        return "Report the notebook's pipeline-metrics variables as KFP metrics."
    numbers = ", ".join(str(cell.number) for cell in step.cells)
    return f"Step {step.name}: notebook cells {numbers}."


def _arguments(step: Step, pipeline: Pipeline, names: ScriptNames) -> str:
    arguments = [
        f'{a.input_argument}={names.steps[a.producer].task}.outputs["{a.name}_out"]'
        for a in step.inputs
    ]
    arguments += [f"{name}={name}" for name in step.parameters]
    return ", ".join(arguments)


def _check_identifiers(pipeline: Pipeline) -> None:
    """Parameters must not shadow the fixed names the pipeline function body uses (the
    names derived from steps and volumes avoid the parameters: ``generated_names``)."""
    generated = {"dsl", "kubernetes", "local", "_kale_component"}
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


def _check_volumes(pipeline: Pipeline) -> None:
    for volume in pipeline.volumes:
        if volume.type == "pv":
            raise NotebookError(
                f"volume {volume.name!r} is of type 'pv', which kale_nbconvert cannot "
                "mount directly",
                notebook=pipeline.notebook,
                fix="create a PVC bound to the PV and list it with type 'pvc'",
            )


def _warnings_text(pipeline: Pipeline) -> str:
    """The conversion's warnings, for the script's docstring: from JupyterLab's Export
    the log is out of sight, the downloaded script is not."""
    if not pipeline.warnings:
        return ""
    lines = ["Conversion warnings (also logged when converting):"]
    for message in pipeline.warnings:
        lines += textwrap.wrap(
            _one_line(str(message)),  # a notebook named "a\nb" stays one visible name
            width=88,
            initial_indent="    - ",
            subsequent_indent="      ",
            break_long_words=False,
            break_on_hyphens=False,
        )
    return "\n".join(lines) + "\n\n"


def script_context(pipeline: Pipeline) -> dict:
    """What ``index.py.j2`` needs, all Python literals or validated identifiers."""
    _check_identifiers(pipeline)
    _check_volumes(pipeline)
    names = generated_names(pipeline)
    steps = []
    for step in pipeline.step_list():
        own = names.steps[step.name]
        steps.append(
            StepView(
                name=step.name,
                function=own.function,
                component=own.component,
                task=own.task,
                kfp_name=py_literal(own.kfp),
                signature=", ".join(_signature(step, pipeline)),
                docstring=docstring_text(_docstring(step)),
                body=_body(step, pipeline),
                packages=py_literal(step.packages),
                arguments=_arguments(step, pipeline, names),
                after=[
                    names.steps[name].task
                    for name in step.prev
                    if name not in {a.producer for a in step.inputs}
                ],
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
        + _warnings_text(pipeline)
        + "Data flow (inputs arrive as KFP artifacts from the named step):\n\n"
        + "\n".join("    " + line for line in dataflow_table(pipeline).splitlines())
        + "\n\nUsage:\n"
        "    python THIS_FILE                      compile to YAML next to this file\n"
        "    python THIS_FILE --local              run every step on this machine\n"
        "    python THIS_FILE --local --cache      re-run only steps whose code or inputs changed\n"
        "    python THIS_FILE --param NAME=VALUE   override a pipeline parameter\n"
        "    python THIS_FILE --host URL           upload and run on a Kubeflow cluster\n"
        "    python THIS_FILE --help               everything else\n"
    )
    in_step = shipped(IN_STEP)
    return {
        "version": __version__,
        "docstring": docstring_text(summary),
        "description": py_literal(pipeline.description),
        "runtime_source": "\n\n\n".join(in_step.values()),
        "launcher_source": "\n\n\n".join(
            source for name, source in shipped(COMMAND_LINE).items() if name not in in_step
        ),
        "runtime_functions": textwrap.fill(
            ", ".join([*in_step, "_kale_shared_cells"]) + ",", width=88, initial_indent="    ",
            subsequent_indent="    ", break_long_words=False, break_on_hyphens=False,
        ),
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
                "variable": variable,
                "type": volume.type,
                "mount_point": py_literal(volume.mount_point),
                "pvc_name": py_literal(volume.name),
                "size": py_literal(volume.size or "1Gi"),
                "access_mode": py_literal(volume.access_mode),
                "storage_class": py_literal(volume.storage_class_name) if volume.storage_class_name else "",
            }
            for volume, variable in zip(pipeline.volumes, names.volumes)
        ],
        "pipeline_function": names.pipeline_function,
    }
