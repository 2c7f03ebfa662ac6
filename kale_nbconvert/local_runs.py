"""Open a finished ``--local`` run's artifacts as Python objects, e.g. in the notebook.

Runs in the NOTEBOOK (or any Python session), after a run: neither at conversion nor
inside a step. It reuses the in-step marshaller (``kale_nbconvert/embedded/marshal.py``).

A local run (``python nb.py --local``) keeps each run in its own folder,
``kale-local-runs/<pipeline>-<timestamp>/`` next to the script, with a manifest
``kale-run.json`` that says what every step received and produced (its format is
described in ``kale_nbconvert/embedded/local_run.py``). To debug a step with the exact
values it got::

    from kale_nbconvert.local_runs import load_run

    run = load_run()                    # newest run under ./kale-local-runs
    run                                 # steps, status, outputs
    run.outputs("train")                # {"model": LogisticRegression(...), ...}
    run.output("train", "model")
    globals().update(run.namespace("evaluate"))   # its inputs and parameters
    run.report("train")                 # the path of its HTML report (cells and outputs)
    # ... now run the cells of step 'evaluate' in the notebook

Values are read with the same code the steps use (``_kale_marshal_load`` of the
in-step marshaller), so they come back exactly as the next step would see them.
Serializers registered in the notebook (``KALE_SERIALIZERS``) are found in
``__main__`` (the notebook) or can be passed as ``serializers=``. Outputs of steps
reused from the cache (``--cache``) live in the earlier run that produced them; the
manifest points there, so they load the same way.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .embedded.marshal import _kale_marshal_load, _kale_marshal_registry
from .tags import kfp_name

MANIFEST = "kale-run.json"
FORMAT = "kale-local-run/1"
DEFAULT_RUNS_DIR = "kale-local-runs"


@dataclass
class StepRun:
    """What one step of a local run did. ``status``: succeeded, cached, failed, not run."""

    name: str
    status: str
    duration_s: float | None
    outputs: dict[str, dict] = field(default_factory=dict)
    """variable -> {"uri": folder of the artifact, "metadata": {...}}"""
    inputs: dict[str, dict] = field(default_factory=dict)
    """variable -> {"producer": step, "uri": ...}"""
    parameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    failure: str | None = None
    report: str | None = None
    """The step's HTML report (``report.html`` in its folder of the run), if it has one."""


class LocalRun:
    """One ``--local`` run: its steps, and their artifacts loaded on demand."""

    def __init__(self, path: str | os.PathLike, serializers: dict | None = None):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{manifest_path} not found: not a folder of a local run "
                "(made by `python nb.py --local`)"
            ) from None
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{manifest_path}: unknown format {manifest.get('format')!r}")
        self.manifest = manifest
        self.pipeline: str = manifest["pipeline"]
        self.status: str = manifest["status"]
        self.started: str = manifest["started"]
        self.parameters: dict[str, Any] = manifest["parameters"]
        self.steps: dict[str, StepRun] = {
            name: StepRun(
                name=name,
                status=step["status"],
                duration_s=step.get("duration_s"),
                outputs=step.get("outputs", {}),
                inputs=step.get("inputs", {}),
                parameters=step.get("parameters", {}),
                metrics=step.get("metrics", {}),
                failure=step.get("failure"),
                report=step.get("report"),
            )
            for name, step in manifest["steps"].items()
        }
        self._serializers = serializers

    def _step(self, step: str) -> StepRun:
        """A step by its name in Kubeflow (``train-model``, as the manifest keys it) or
        as tagged in the notebook (``train_model``)."""
        if step not in self.steps and kfp_name(step) in self.steps:
            step = kfp_name(step)
        if step not in self.steps:
            raise KeyError(f"no step {step!r} in this run (steps: {', '.join(self.steps)})")
        return self.steps[step]

    def _load(self, uri: str) -> Any:
        registry = self._serializers if self._serializers is not None else _kale_marshal_registry()
        return _kale_marshal_load(uri, registry)

    def outputs(self, step: str) -> dict[str, Any]:
        """The variables ``step`` handed on to later steps, as Python objects."""
        record = self._step(step)
        if record.status in ("failed", "not run"):
            raise LookupError(f"step {step!r} {record.status}: it has no outputs"
                              + (f" ({record.failure})" if record.failure else ""))
        return {name: self._load(output["uri"]) for name, output in record.outputs.items()}

    def output(self, step: str, name: str) -> Any:
        """One variable handed on by ``step``."""
        record = self._step(step)
        if name not in record.outputs:
            raise KeyError(
                f"step {step!r} handed on no {name!r} (it handed on: "
                f"{', '.join(record.outputs) or 'nothing'})"
            )
        return self._load(record.outputs[name]["uri"])

    def inputs(self, step: str) -> dict[str, Any]:
        """The variables ``step`` received from earlier steps, exactly as it got them
        (also when it failed: its inputs were made before it ran)."""
        record = self._step(step)
        if record.status == "not run" and not record.inputs:
            raise LookupError(f"step {step!r} did not run: an earlier step failed")
        return {name: self._load(source["uri"]) for name, source in record.inputs.items()}

    def namespace(self, step: str) -> dict[str, Any]:
        """Inputs and parameters of ``step``: ``globals().update(run.namespace(step))``
        in the notebook, then run the step's cells to reproduce it."""
        return {**self.inputs(step), **self._step(step).parameters}

    def report(self, step: str) -> Path:
        """The path of ``step``'s HTML report: its cells with their outputs, as the
        notebook shows them (open it in a browser, or ``IPython.display.IFrame``)."""
        record = self._step(step)
        if not record.report:
            why = "did not run" if record.status == "not run" else "has no report (report:disabled?)"
            raise LookupError(f"step {step!r} {why}")
        path = Path(record.report)
        return path if path.is_absolute() else self.path / path

    def metrics(self) -> dict[str, float]:
        """The run's pipeline-metrics, as reported to KFP."""
        return {name: value for step in self.steps.values() for name, value in step.metrics.items()}

    def __repr__(self) -> str:
        lines = [f"<LocalRun {self.pipeline} {self.started} {self.status}: {self.path}>"]
        for step in self.steps.values():
            duration = f"{step.duration_s:.2f} s" if step.duration_s is not None else ""
            handed = ", ".join(step.outputs)
            lines.append(f"  {step.name:<16} {step.status:<9} {duration:>9}  {handed}".rstrip())
        return "\n".join(lines)


def list_runs(runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR, pipeline: str | None = None) -> list[Path]:
    """Folders of the finished local runs under ``runs_dir``, oldest first
    (optionally only those of ``pipeline``)."""
    runs = []
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    for folder in root.iterdir():
        manifest = folder / MANIFEST
        if not manifest.is_file():
            continue
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except ValueError:
            continue
        if pipeline is None or data.get("pipeline") == pipeline:
            runs.append((data.get("started", ""), manifest.stat().st_mtime, folder))
    return [folder for _, _, folder in sorted(runs)]


def load_run(path: str | os.PathLike = DEFAULT_RUNS_DIR, pipeline: str | None = None,
             serializers: dict | None = None) -> LocalRun:
    """A local run: ``path`` is a run's folder, or a runs folder (default
    ``./kale-local-runs``) whose newest run (of ``pipeline``, if given) is taken."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return LocalRun(path, serializers)
    runs = list_runs(path, pipeline)
    if not runs:
        what = f" of pipeline {pipeline!r}" if pipeline else ""
        raise FileNotFoundError(
            f"no local run{what} in {path.resolve()}: run `python nb.py --local` first"
        )
    return LocalRun(runs[-1], serializers)
