"""Notebook-level settings from ``metadata.kubeflow_notebook`` (Kale's key).

Every key seen in Kale notebooks in the wild is accepted; the ones that change the
generated pipeline are applied, the others are kept quiet; unknown keys give a
warning, never a crash.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import NotebookError
from .model import Pipeline, StepSettings, Volume
from .tags import TagError, parse_tags

USED_KEYS = {
    "pipeline_name",
    "pipeline_description",
    "experiment_name",
    "experiment",
    "docker_image",
    "volumes",
    "steps_defaults",
    "kfp_host",
}
KNOWN_UNUSED_KEYS = {
    "autosnapshot",
    "katib_run",
    "katib_metadata",
    "storage_class_name",
    "volume_access_mode",
    "snapshot_volumes",
    "abs_working_dir",
    "base_image",
    "timeout",
    "state",
}
VOLUME_TYPES = ("pvc", "new_pvc", "pv")
PIPELINE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _text(value: Any, key: str, notebook: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise NotebookError(
            f"metadata.kubeflow_notebook.{key} must be text, not {type(value).__name__}",
            notebook=notebook,
            fix=f"set {key} to a string in the notebook metadata",
        )
    return value


def pipeline_name_from(text: str) -> str:
    """A KFP-friendly pipeline name (lowercase, digits, dashes)."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return name or "pipeline"


def _volumes(raw: Any, notebook: str, warnings: list[str]) -> list[Volume]:
    if raw in (None, ""):
        return []
    if not isinstance(raw, list):
        raise NotebookError(
            "metadata.kubeflow_notebook.volumes must be a list",
            notebook=notebook,
            fix="write volumes as a list of {name, mount_point, type}",
        )
    volumes = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise NotebookError(
                f"volume entry {entry!r} is not an object",
                notebook=notebook,
                fix="write each volume as {name, mount_point, type}",
            )
        vtype = entry.get("type", "pvc")
        name = entry.get("name", "")
        mount = entry.get("mount_point", "")
        if vtype not in VOLUME_TYPES:
            raise NotebookError(
                f"volume {name!r} has type {vtype!r}",
                notebook=notebook,
                fix="use one of: " + ", ".join(VOLUME_TYPES),
            )
        if not isinstance(name, str) or not isinstance(mount, str) or not name or not mount:
            raise NotebookError(
                f"volume {entry!r} needs a name and a mount_point",
                notebook=notebook,
                fix="give every volume both keys as text",
            )
        size = entry.get("size", "")
        size_type = entry.get("size_type", "")
        annotations = entry.get("annotations") or {}
        if isinstance(annotations, list):  # Kale stores [{key, value}, ...]
            annotations = {
                str(item.get("key", "")): str(item.get("value", ""))
                for item in annotations
                if isinstance(item, dict) and item.get("key")
            }
        volumes.append(
            Volume(
                name=name,
                mount_point=mount,
                type=vtype,
                size=f"{size}{size_type}" if size not in ("", None) else "",
                storage_class_name=str(entry.get("storage_class_name") or ""),
                access_mode=str(entry.get("volume_access_mode") or "ReadWriteOnce"),
                annotations={str(k): str(v) for k, v in dict(annotations).items()},
            )
        )
    return volumes


def _step_defaults(raw: Any, notebook: str) -> StepSettings:
    if raw in (None, ""):
        return StepSettings()
    if not isinstance(raw, list):
        raise NotebookError(
            "metadata.kubeflow_notebook.steps_defaults must be a list of tags",
            notebook=notebook,
            fix='write it like ["label:team:ml", "limit:memory:1Gi"]',
        )
    try:
        tags = parse_tags(raw)
    except TagError as error:
        raise NotebookError(
            f"steps_defaults: {error.message}", notebook=notebook, fix=error.fix
        ) from None
    if tags.step or tags.section or tags.prev:
        raise NotebookError(
            "steps_defaults may hold only limit:, label: and annotation: tags",
            notebook=notebook,
            fix="move step, prev and section tags to cells",
        )
    return StepSettings(limits=tags.limits, labels=tags.labels, annotations=tags.annotations)


def apply_notebook_metadata(pipeline: Pipeline, metadata: Any, default_name: str) -> None:
    """Fill the pipeline's notebook-wide settings from ``metadata.kubeflow_notebook``."""
    notebook = pipeline.notebook
    raw = metadata.get("kubeflow_notebook") if hasattr(metadata, "get") else None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise NotebookError(
            "metadata.kubeflow_notebook must be an object",
            notebook=notebook,
            fix="fix the notebook metadata (Edit > Notebook metadata)",
        )
    for key in sorted(set(raw) - USED_KEYS - KNOWN_UNUSED_KEYS):
        pipeline.warnings.append(
            f"{notebook}: metadata.kubeflow_notebook.{key} is not a known setting; ignored"
        )
    name = _text(raw.get("pipeline_name"), "pipeline_name", notebook) or default_name
    pipeline.name = pipeline_name_from(name)
    pipeline.description = _text(
        raw.get("pipeline_description"), "pipeline_description", notebook
    )
    experiment = raw.get("experiment")
    experiment_name = raw.get("experiment_name")
    if not experiment_name and isinstance(experiment, dict):
        experiment_name = experiment.get("name")
    pipeline.experiment_name = _text(experiment_name, "experiment_name", notebook)
    pipeline.docker_image = _text(raw.get("docker_image"), "docker_image", notebook).strip()
    pipeline.kfp_host = _text(raw.get("kfp_host"), "kfp_host", notebook)
    pipeline.volumes = _volumes(raw.get("volumes"), notebook, pipeline.warnings)
    pipeline.defaults = _step_defaults(raw.get("steps_defaults"), notebook)
