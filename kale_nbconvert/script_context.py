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
from .diagram import mermaid
from .embedded import COMMAND_LINE, IN_STEP, shipped
from .errors import NotebookError, _one_line
from .literals import docstring_text, py_literal
from .model import Pipeline, Step
from .tags import kfp_name
from .task_settings import kubernetes_calls, task_calls, uses_kubernetes


SCRIPT_GLOBALS = frozenset(
    {
        "sys", "dsl", "kubernetes", "Artifact", "Dataset", "HTML", "Input", "Metrics", "Model",
        "Output",
        "PIPELINE_NAME", "EXPERIMENT_NAME", "KFP_HOST", "BASE_IMAGE", "PACKAGES", "PARAMETERS",
        "PRELOAD", "RUNTIME", "_kale_shared_cells", "build_pipeline", "pipeline",
        "local", "_kale_component", "restore_sources",
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
    local: str = "local"
    """How the pipeline function's body says ``build_pipeline``'s ``local``."""
    kubernetes: str = "kubernetes"
    """How the pipeline function's body says the ``kfp.kubernetes`` module."""

    @property
    def aliases(self) -> list[tuple[str, str]]:
        """``(alias, name)`` for each of ``local`` and ``kubernetes`` that the pipeline
        function's body says but a pipeline parameter of that name hides there."""
        return [(alias, name) for alias, name in
                [(self.local, "local"), (self.kubernetes, "kubernetes")] if alias != name]


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
    # the pipeline function's body says these two (local: for volumes only); a parameter
    # of the same name (its argument) would hide them there, so the body then says them
    # by another name
    local, k8s = "local", "kubernetes"
    if "local" in pipeline.parameters and pipeline.volumes:
        local = _unique("build_locally", taken, "build_locally")
    if "kubernetes" in pipeline.parameters and uses_kubernetes(pipeline):
        k8s = _unique("k8s", taken, "k8s")
    return ScriptNames(steps, function, volumes, local, k8s)


@dataclass
class StepView:
    name: str
    function: str
    definition: str
    """``def <function>(<signature>):``, wrapped."""
    docstring: str
    body: str
    """The call of the in-step runtime, indented for the function body."""
    component: str
    """``<component> = _kale_component(...)``, inside ``build_pipeline``."""
    task: str
    call: str
    """``[<task> = ]<component>(<arguments>)``, inside the pipeline function: the
    task is bound only where a later line uses it (pyflakes-clean script)."""
    after: list[str] = field(default_factory=list)
    task_calls: list[str] = field(default_factory=list)
    kubernetes_calls: list[tuple[str, str]] = field(default_factory=list)


WIDTH = 88
"""The width the script's own lines are wrapped to (the notebook's cells are kept as
they are)."""


def wrapped(opening: str, items: list[str], closing: str, indent: int) -> str:
    """``opening a, b closing`` on one line if it fits in ``WIDTH`` at ``indent``, else
    one item per line, as a person would wrap it."""
    one_line = f"{opening}{', '.join(items)}{closing}"
    if indent + len(one_line) <= WIDTH or not items:
        return one_line
    inner = " " * (indent + 4)
    return f"{opening}\n" + "".join(f"{inner}{item},\n" for item in items) + " " * indent + closing


def packed(opening: str, items: list[str], closing: str) -> str:
    """A long list of short items (module names, a component's arguments) filled line
    by line, at module level: it reads as a list, not as a column."""
    one_line = f"{opening}{', '.join(items)}{closing}"
    if len(one_line) <= WIDTH:
        return one_line
    lines = [""]
    for item in items:  # never split inside an item ("x: Output[Model]")
        if lines[-1] and len(lines[-1]) + len(item) + 6 > WIDTH:
            lines.append("")
        lines[-1] += f"{item}, "
    return opening + "\n" + "".join(f"    {line.rstrip()}\n" for line in lines) + closing


def call_text(head: str, arguments: list[str], indent: int, closing: str = ")") -> str:
    """``head(arguments)``, wrapped (``wrapped``)."""
    return wrapped(f"{head}(", arguments, closing, indent)


def _input_kind(artifact, pipeline: Pipeline) -> str:
    """The type the producer declares for the output: ``Input[Model]`` for a
    ``Output[Model]``, so the KFP UI and compiler see one type along the edge."""
    return pipeline.steps[artifact.producer].output_kinds.get(artifact.name, "Artifact")


def _signature(step: Step, pipeline: Pipeline) -> list[str]:
    arguments = [f"{a.input_argument}: Input[{_input_kind(a, pipeline)}]" for a in step.inputs]
    arguments += [f"{name}: {pipeline.parameters[name].type_name}" for name in step.parameters]
    arguments += [
        f"{name}_out: Output[{step.output_kinds.get(name, 'Artifact')}]" for name in step.outputs
    ]
    if step.is_metrics:
        arguments.append("metrics: Output[Metrics]")
    if step.has_report:
        arguments.append("report: Output[HTML]")
    names = [argument.split(":")[0] for argument in arguments]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        clash, fix = "a variable and a parameter", "rename the parameter or the variable"
        if duplicates[0] in ("metrics", "report"):  # the step's own output, not a variable
            clash, fix = f"a parameter and the step's {duplicates[0]} output", "rename the parameter"
            if duplicates[0] == "report":
                fix += " (or tag the step 'report:disabled')"
        raise NotebookError(
            f"step {step.name!r} would have two component arguments named "
            f"{duplicates[0]!r} ({clash} clash)",
            notebook=pipeline.notebook,
            cell=step.first_cell,
            step=step.name,
            fix=fix,
        )
    return arguments


def _mapping(opening: str, pairs: list[tuple[str, str]], indent: int) -> str:
    """``opening{key: value, ...}`` from source pairs, wrapped."""
    return wrapped(opening + "{", [f"{key}: {value}" for key, value in pairs], "}", indent)


def _cells_literal(cells, indent: int) -> str:
    """``[(number, code), ...]``, one cell per line; the code byte for byte."""
    inner = " " * (indent + 4)
    return "[\n" + "".join(
        f"{inner}({cell.number}, {py_literal(cell.code)}),\n" for cell in cells
    ) + " " * indent + "]"


def _body(step: Step, pipeline: Pipeline) -> str:
    """The component's one statement: the in-step runtime's call, with only the
    arguments this step uses (the runtime's defaults stand for the others)."""
    inputs = [
        (py_literal(a.name), f"({a.input_argument}, {py_literal(a.producer)})") for a in step.inputs
    ]
    parameters = [(py_literal(name), name) for name in step.parameters]
    if step.is_metrics:
        arguments = [py_literal(pipeline.notebook), _mapping("", inputs, 8), "metrics"]
        if parameters:
            arguments.append(_mapping("", parameters, 8))
        return call_text("_kale_log_metrics", arguments, 4)
    arguments = [
        f"notebook={py_literal(pipeline.notebook)}",
        f"step={py_literal(step.name)}",
        f"cells={_cells_literal(step.cells, 8)}",
    ]
    if pipeline.shared_cells:
        arguments.append("shared=_kale_shared_cells()")
    if step.replayed_imports:
        arguments.append(
            wrapped("imports=[", [py_literal(s) for s in step.replayed_imports], "]", 8)
        )
    if parameters:
        arguments.append(_mapping("parameters=", parameters, 8))
    if inputs:
        arguments.append(_mapping("inputs=", inputs, 8))
    if step.outputs:
        outputs = [(py_literal(n), f"({n}_out, {step.output_cells.get(n)})") for n in step.outputs]
        arguments.append(_mapping("outputs=", outputs, 8))
    if pipeline.needs_ipython(step):
        arguments.append("ipython=True")
    if step.watched_inputs:
        watched = [(py_literal(n), py_literal(r)) for n, r in step.watched_inputs.items()]
        arguments.append(_mapping("watched=", watched, 8))
    if step.has_report:
        arguments.append("report=report")
    # always one argument per line: the cells read as a block of their own
    return "_kale_run_step(\n" + "".join(f"        {a},\n" for a in arguments) + "    )"


def _docstring(step: Step) -> str:
    if step.is_metrics:
        return "Report the notebook's pipeline-metrics variables as KFP metrics."
    numbers = ", ".join(str(cell.number) for cell in step.cells)
    return f"Step {step.name}: notebook cell{'s' if len(step.cells) > 1 else ''} {numbers}."


def _arguments(step: Step, pipeline: Pipeline, names: ScriptNames) -> list[str]:
    arguments = [
        f'{a.input_argument}={names.steps[a.producer].task}.outputs["{a.name}_out"]'
        for a in step.inputs
    ]
    arguments += [f"{name}={name}" for name in step.parameters]
    return arguments


def _artifact_types(pipeline: Pipeline) -> list[str]:
    """The ``kfp.dsl`` names the components' signatures use, for the import line."""
    used = set()
    for step in pipeline.step_list():
        if step.inputs:
            used |= {"Input"} | {_input_kind(a, pipeline) for a in step.inputs}
        if step.outputs:
            used |= {"Output"} | {step.output_kinds.get(n, "Artifact") for n in step.outputs}
        if step.is_metrics:
            used |= {"Output", "Metrics"}
        if step.has_report:
            used |= {"Output", "HTML"}
    return sorted(used)


def _check_volumes(pipeline: Pipeline) -> None:
    for volume in pipeline.volumes:
        if volume.type == "pv":
            raise NotebookError(
                f"volume {volume.name!r} is of type 'pv', which kale_nbconvert cannot "
                "mount directly",
                notebook=pipeline.notebook,
                fix="create a PVC bound to the PV and list it with type 'pvc'",
            )


def _paragraph(text: str) -> str:
    """``text`` wrapped to ``WIDTH`` for the docstring, then a blank line."""
    return textwrap.fill(text, width=WIDTH, break_long_words=False, break_on_hyphens=False) + "\n\n"


def _warnings_text(pipeline: Pipeline) -> str:
    """The conversion's warnings, for the script's docstring: from JupyterLab's Export
    the log is out of sight, the downloaded script is not."""
    if not pipeline.warnings:
        return ""
    lines = ["Conversion warnings (also logged when converting):"]
    for message in pipeline.warnings:
        lines += textwrap.wrap(
            _one_line(str(message)),  # a notebook named "a\nb" stays one visible name
            width=WIDTH,
            initial_indent="    - ",
            subsequent_indent="      ",
            break_long_words=False,
            break_on_hyphens=False,
        )
    return "\n".join(lines) + "\n\n"


def _preload(pipeline: Pipeline) -> list[str]:
    """What a ``--local`` run's warm worker imports before it forks the steps: the
    notebook's installed modules, and IPython where a step writes a report (its display
    machinery renders the outputs, and its import alone takes about half a second)."""
    modules = list(pipeline.preload_modules)
    if any(step.has_report for step in pipeline.step_list()) and "IPython" not in modules:
        modules.append("IPython")
    return modules


def script_context(pipeline: Pipeline) -> dict:
    """What ``index.py.j2`` needs, all Python literals or validated identifiers."""
    _check_volumes(pipeline)
    names = generated_names(pipeline)
    used_tasks = {a.producer for step in pipeline.step_list() for a in step.inputs}
    used_tasks |= {name for step in pipeline.step_list() for name in step.prev}
    steps = []
    for step in pipeline.step_list():
        own = names.steps[step.name]
        after = [
            names.steps[name].task
            for name in step.prev
            if name not in {a.producer for a in step.inputs}
        ]
        calls = task_calls(step, pipeline)
        kubernetes = kubernetes_calls(step, pipeline)
        bound = step.name in used_tasks or after or calls or kubernetes or pipeline.volumes
        steps.append(
            StepView(
                name=step.name,
                function=own.function,
                definition=packed(f"def {own.function}(", _signature(step, pipeline), "):"),
                docstring=docstring_text(_docstring(step)),
                body=_body(step, pipeline),
                component=call_text(
                    f"{own.component} = _kale_component",
                    [own.function, py_literal(step.packages), py_literal(own.kfp)],
                    8,
                ),
                task=own.task,
                call=call_text(
                    f"{own.task} = {own.component}" if bound else own.component,
                    _arguments(step, pipeline, names),
                    8,
                ),
                after=after,
                task_calls=calls,
                kubernetes_calls=kubernetes,
            )
        )
    parameters = [
        f"{p.name}: {p.type_name} = {py_literal(p.default)}" for p in pipeline.parameters.values()
    ]
    summary = (
        _paragraph(
            f"{pipeline.name}: a Kubeflow pipeline generated from {pipeline.notebook} by "
            f"kale_nbconvert {__version__}."
        )
        + (_paragraph(pipeline.description) if pipeline.description else "")
        + _warnings_text(pipeline)
        + "The pipeline (a Mermaid flowchart: Markdown viewers draw it):\n\n"
        + "\n".join("    " + line for line in mermaid(pipeline).splitlines())
        + "\n\n"
        + "Data flow (inputs arrive as KFP artifacts from the named step):\n\n"
        + "\n".join("    " + line for line in dataflow_table(pipeline).splitlines())
        + "\n\nRun it: python THIS_FILE compiles it to YAML beside this file, --local runs it here,\n"
        "--host URL on a Kubeflow cluster; --help tells everything else.\n"
    )
    in_step = shipped(IN_STEP)
    return {
        "version": __version__,
        "docstring": docstring_text(summary),
        "pipeline_decorator": call_text(
            "@dsl.pipeline",
            ["name=PIPELINE_NAME", f"description={py_literal(pipeline.description)}"],
            4,
        ),
        "runtime_source": "\n\n\n".join(in_step.values()),
        "launcher_source": "\n\n\n".join(
            source for name, source in shipped(COMMAND_LINE).items() if name not in in_step
        ),
        "runtime_functions": textwrap.fill(
            ", ".join([*in_step, *(["_kale_shared_cells"] if pipeline.shared_cells else [])]) + ",",
            width=WIDTH, initial_indent="    ",
            subsequent_indent="    ", break_long_words=False, break_on_hyphens=False,
        ),
        "shared": _cells_literal(pipeline.shared_cells, 4) if pipeline.shared_cells else "",
        "steps": steps,
        "packages": packed("PACKAGES = [", [py_literal(p) for p in pipeline.packages], "]"),
        "preload": packed("PRELOAD = [", [py_literal(m) for m in _preload(pipeline)], "]"),
        "pipeline_definition": call_text(f"def {names.pipeline_function}", parameters, 4, "):"),
        "parameters_table": wrapped(
            "PARAMETERS = {",
            [
                f"{py_literal(p.name)}: ({py_literal(p.type_name)}, {py_literal(p.default)})"
                for p in pipeline.parameters.values()
            ],
            "}",
            0,
        ),
        "artifact_types": ", ".join(_artifact_types(pipeline)),
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
                "annotations": py_literal(volume.annotations) if volume.annotations else "",
            }
            for volume, variable in zip(pipeline.volumes, names.volumes)
        ],
        "pipeline_function": names.pipeline_function,
        "local": names.local,
        "kubernetes": names.kubernetes,
        "aliases": names.aliases,
    }
