"""The pipeline model the preprocessors fill, one stage after another.

Flow: ``TagMergePreprocessor`` creates a :class:`Pipeline` with its steps, cells, edges
and settings; ``ParameterExtractionPreprocessor`` adds the typed parameters;
``NameAnalysisPreprocessor`` decides each step's inputs, outputs and parameters;
``MarshalInjectionPreprocessor`` turns those into artifact signatures and the packages
a step container needs. The template only lays the finished model out.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

RESOURCE_KEY = "kale_pipeline"
"""Key of the :class:`Pipeline` in nbconvert's ``resources`` dict."""


@dataclass
class Cell:
    """One notebook code cell as it runs inside a step."""

    number: int
    """1-based position in the notebook, markdown cells included (as people count)."""
    source: str
    """The cell text exactly as written in the notebook."""
    code: str = ""
    """Plain Python that IPython would run for ``source`` (magics transformed)."""

    @property
    def uses_ipython(self) -> bool:
        return self.code != self.source


@dataclass
class StepSettings:
    """Per-step Kubernetes settings from tags and ``steps_defaults``.

    Every field is one kind of tag (``tags.py``); a step's own value wins over the
    notebook-wide default key by key (``merged_over``)."""

    limits: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    requests: dict[str, str] = field(default_factory=dict)
    image: str = ""
    retry: tuple | None = None
    """``(count, backoff seconds or None)``."""
    timeout: int | None = None
    """Seconds (the pod's activeDeadlineSeconds)."""
    cache: bool | None = None
    report: bool | None = None
    """The step's HTML report (``report:enabled|disabled``); None: the default, on."""
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, tuple] = field(default_factory=dict)
    """Environment variable -> ``(secret, key)``."""
    configmap_env: dict[str, tuple] = field(default_factory=dict)
    """Environment variable -> ``(config map, key)``."""
    secret_volumes: dict[str, str] = field(default_factory=dict)
    """Mount path -> secret."""
    configmap_volumes: dict[str, str] = field(default_factory=dict)
    """Mount path -> config map."""
    node_selectors: dict[str, str] = field(default_factory=dict)
    tolerations: dict[str, tuple] = field(default_factory=dict)
    """``"KEY:EFFECT"`` -> ``(key, value or None, effect)``."""
    shm: str = ""

    ENV_FIELDS = ("env", "secret_env", "configmap_env")
    PATH_FIELDS = ("secret_volumes", "configmap_volumes")

    def is_empty(self) -> bool:
        return self == StepSettings()

    def merged_over(self, defaults: "StepSettings") -> "StepSettings":
        """This step's own values win over the notebook-wide defaults, key by key; an
        environment variable (``env:``, ``secret:``, ``configmap:``) or a mount path
        set by the step replaces the default's of the same name, whatever its kind."""
        merged = {}
        own_env = {name for kind in self.ENV_FIELDS for name in getattr(self, kind)}
        own_paths = {path for kind in self.PATH_FIELDS for path in getattr(self, kind)}
        for item in dataclasses.fields(self):
            mine, theirs = getattr(self, item.name), getattr(defaults, item.name)
            if isinstance(mine, dict):
                shadowed = own_env if item.name in self.ENV_FIELDS else (
                    own_paths if item.name in self.PATH_FIELDS else set()
                )
                theirs = {k: v for k, v in theirs.items() if k not in shadowed}
                merged[item.name] = {**theirs, **mine}
            else:
                merged[item.name] = mine if mine not in (None, "") else theirs
        return StepSettings(**merged)


@dataclass
class Artifact:
    """A variable crossing a step boundary."""

    name: str
    """The notebook variable."""
    producer: str
    """The step whose value the consumer must see (last writer in notebook order)."""

    @property
    def input_argument(self) -> str:
        return f"{self.name}_in"

    @property
    def output_argument(self) -> str:
        return f"{self.name}_out"


@dataclass
class Step:
    """A pipeline step: one KFP lightweight component running some notebook cells."""

    name: str
    cells: list[Cell] = field(default_factory=list)
    prev: list[str] = field(default_factory=list)
    """Explicit ``prev:`` edges, in tag order."""
    prev_cells: dict[str, int] = field(default_factory=dict)
    """For each ``prev:`` target, the cell that declared it (for error messages)."""
    settings: StepSettings = field(default_factory=StepSettings)
    # Filled by name analysis.
    inputs: list[Artifact] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    parameters: list[str] = field(default_factory=list)
    replayed_imports: list[str] = field(default_factory=list)
    """Import statements of upstream steps whose modules this step uses."""
    upstream: list[str] = field(default_factory=list)
    """Every step this one waits for: ``prev:`` edges plus data edges."""
    output_cells: dict[str, int] = field(default_factory=dict)
    """The cell of this step that last sets or changes each output (for run-time
    messages)."""
    in_place_changes: dict[str, str] = field(default_factory=dict)
    """Names this step may change in place, and why ("cell 4, line 2: model.fit(X)"),
    for ``explain`` and the script's data-flow table."""
    watched_inputs: dict[str, list[str]] = field(default_factory=dict)
    """Inputs the plan expects this step to leave unchanged but that later steps (in
    notebook order) read from the same producer -> those steps. The step checks them
    at run time: an unseen in-place change would reach them in the notebook, not in the
    pipeline (``dataflow.watched_inputs``)."""
    # Filled by marshal injection.
    packages: list[str] = field(default_factory=list)
    output_kinds: dict[str, str] = field(default_factory=dict)
    """KFP artifact class of each output (``Dataset``, ``Model``; ``Artifact`` if absent)."""
    is_metrics: bool = False

    @property
    def first_cell(self) -> int:
        return self.cells[0].number if self.cells else 0

    @property
    def uses_ipython(self) -> bool:
        return any(cell.uses_ipython for cell in self.cells)

    @property
    def has_report(self) -> bool:
        """The step writes an HTML report of its cells' outputs (``Output[HTML]``): on
        unless ``report:disabled``; the metrics step has no cells to show."""
        return not self.is_metrics and self.settings.report is not False


@dataclass
class Parameter:
    """A typed pipeline parameter from the ``pipeline-parameters`` cell."""

    name: str
    type_name: str
    """One of ``int``, ``float``, ``str``, ``bool``, ``list``, ``dict``."""
    default: Any
    cell: int
    line: int


@dataclass
class Volume:
    """A PVC mount from ``kubeflow_notebook.volumes``."""

    name: str
    mount_point: str
    type: str
    size: str = ""
    storage_class_name: str = ""
    access_mode: str = "ReadWriteOnce"
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass
class Pipeline:
    """Everything the template needs, built up by the preprocessor chain."""

    notebook: str
    """File name of the notebook, used in messages and tracebacks."""
    name: str = "pipeline"
    description: str = ""
    experiment_name: str = ""
    docker_image: str = ""
    kfp_host: str = ""
    volumes: list[Volume] = field(default_factory=list)
    defaults: StepSettings = field(default_factory=StepSettings)
    imports_cells: list[Cell] = field(default_factory=list)
    functions_cells: list[Cell] = field(default_factory=list)
    parameters_cells: list[Cell] = field(default_factory=list)
    metrics_cells: list[Cell] = field(default_factory=list)
    skipped_cells: list[Cell] = field(default_factory=list)
    steps: dict[str, Step] = field(default_factory=dict)
    parameters: dict[str, Parameter] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Filled by marshal injection.
    base_image: str = ""
    packages: list[str] = field(default_factory=list)
    unknown_modules: list[str] = field(default_factory=list)
    preload_modules: list[str] = field(default_factory=list)
    """Installed modules the notebook imports, which a ``--local`` run imports once in
    the warm process its steps fork from."""

    @property
    def shared_cells(self) -> list[Cell]:
        """Code prepended to every step: imports first, then functions."""
        return self.imports_cells + self.functions_cells

    def needs_ipython(self, step: Step) -> bool:
        """Whether ``step`` runs IPython syntax (magics, ``!``): its own cells or the
        shared cells, which every step but the metrics step runs first."""
        if step.is_metrics:
            return False
        return step.uses_ipython or any(cell.uses_ipython for cell in self.shared_cells)

    def step_list(self) -> list[Step]:
        """Steps in notebook order (by their first cell)."""
        return sorted(self.steps.values(), key=lambda step: (step.is_metrics, step.first_cell))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
