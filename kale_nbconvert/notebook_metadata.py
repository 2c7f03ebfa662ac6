"""Notebook-level settings from ``metadata.kubeflow_notebook`` (Kale's key).

Every key seen in Kale notebooks in the wild is accepted; the ones that change the
generated pipeline are applied, the others are kept quiet; unknown keys give a
warning, never a crash.

Rok (Arrikto's snapshot store, which Kale used on MiniKF) has no Kubeflow Pipelines
equivalent: ``clone`` volumes (the notebook server's own volumes, cloned from a Rok
snapshot for every run), ``snapshot``/``snapshot_name`` of a volume, ``rok/origin``
annotations (a PVC restored from a snapshot), ``autosnapshot`` and ``snapshot_volumes``.
They are read, left out of the pipeline, and reported in ONE warning that says what
was done instead and how to get the data into the steps.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import NotebookError
from .model import Pipeline, StepSettings, Volume
from .tags import TagError, duration_seconds, parse_tags, shown

USED_KEYS = {
    "pipeline_name",
    "pipeline_description",
    "experiment_name",
    "experiment",
    "docker_image",
    "volumes",
    "steps_defaults",
    "kfp_host",
    "timeout",
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
    "state",
    "marshal_volume",
    "marshal_path",
}
VOLUME_TYPES = ("pvc", "new_pvc", "pv", "clone")
ROK_ORIGIN = "rok/origin"
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


KFP_NAME_LENGTH = 128
"""KFP refuses a longer pipeline name when it compiles (``^[a-z0-9][a-z0-9-]{0,127}$``)."""
NAME_OPTION = "TagMergePreprocessor.pipeline_name"


def pipeline_name_from(text: str) -> str:
    """A KFP-friendly pipeline name (lowercase, digits, dashes), at most 128 characters:
    a long notebook file name must not make the script fail to compile."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return name[:KFP_NAME_LENGTH].rstrip("-") or "pipeline"


def _volumes(raw: Any, notebook: str, rok: dict[str, list[str]]) -> list[Volume]:
    """The volumes to mount. What only Rok could do is left out and noted in ``rok``
    (``clone``, ``snapshot``, ``origin``: what each volume asked of Rok)."""
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
        if vtype == "clone":
            rok["clone"].append(f"{name!r} at {mount!r}")
            continue
        if vtype not in VOLUME_TYPES:
            raise NotebookError(
                f"volume {name!r} has type {vtype!r}",
                notebook=notebook,
                fix="use one of: " + ", ".join(t for t in VOLUME_TYPES if t != "clone"),
            )
        if not isinstance(name, str) or not isinstance(mount, str) or not name or not mount:
            raise NotebookError(
                f"volume {entry!r} needs a name and a mount_point",
                notebook=notebook,
                fix="give every volume both keys as text",
            )
        size = entry.get("size", "")
        size_type = entry.get("size_type", "")
        annotations = _annotations(entry.get("annotations"), name, notebook)
        if entry.get("snapshot") or entry.get("snapshot_name"):
            rok["snapshot"].append(f"of volume {name!r}")
        if annotations.get(ROK_ORIGIN):
            rok["origin"].append(repr(name))
        volumes.append(
            Volume(
                name=name,
                mount_point=mount,
                type=vtype,
                size=f"{size}{size_type}" if size not in ("", None) else "",
                storage_class_name=str(entry.get("storage_class_name") or ""),
                access_mode=str(entry.get("volume_access_mode") or "ReadWriteOnce"),
                annotations=annotations,
            )
        )
    return volumes


def _annotations(raw: Any, volume: str, notebook: str) -> dict[str, str]:
    """A volume's annotations: Kale stores ``[{key, value}, ...]``; a dict is fine too."""
    if raw in (None, ""):
        return {}
    if isinstance(raw, list):
        return {
            str(item.get("key", "")): str(item.get("value", ""))
            for item in raw
            if isinstance(item, dict) and item.get("key")
        }
    if isinstance(raw, dict):
        return {str(key): str(value) for key, value in raw.items()}
    raise NotebookError(
        f"the annotations of volume {volume!r} are {type(raw).__name__}, not a list",
        notebook=notebook,
        fix='write them as [{"key": "...", "value": "..."}] or remove them',
    )


def _rok_warning(raw: dict, rok: dict[str, list[str]], notebook: str) -> str | None:
    """The one warning about Rok settings, or None. Says what was done instead of each
    and how the steps can still get the files."""
    snapshots = [f"'{key}'" for key in ("autosnapshot", "snapshot_volumes") if raw.get(key)]
    snapshots += rok["snapshot"]
    done = []
    if rok["clone"]:
        many = len(rok["clone"]) > 1
        done.append(
            f"the 'clone' volume{'s' if many else ''} " + ", ".join(rok["clone"])
            + f" (the notebook server's own, cloned from a Rok snapshot for each run) "
            f"{'are' if many else 'is'} not mounted"
        )
    if rok["origin"]:
        done.append(
            "new_pvc " + ", ".join(rok["origin"]) + f" starts empty unless the cluster "
            f"runs Rok (the PVC keeps its {ROK_ORIGIN!r} annotation, which only Rok restores)"
        )
    if snapshots:
        done.append("no Rok snapshot is taken (" + ", ".join(snapshots) + ")")
    if not done:
        return None
    text = (
        f"{notebook}: metadata.kubeflow_notebook: Rok has no Kubeflow Pipelines "
        "equivalent, so " + "; ".join(done) + "."
    )
    if not (rok["clone"] or rok["origin"]):
        return text + " Fix: remove these settings to silence this"
    return text + (
        " Variables still reach the steps as KFP artifacts, but files the steps read "
        "from those folders are not there. Fix: to give the steps such files, list a "
        "volume of type 'pvc' naming a PVC of your own that holds them (ReadWriteMany if "
        "your notebook server keeps it mounted) at the same mount_point, or 'new_pvc' "
        "for an empty one the pipeline creates; remove the Rok settings to silence this"
    )


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
        raise NotebookError.from_problem(
            error, notebook, message=f"steps_defaults: {error.message}"
        ) from None
    if tags.step or tags.section or tags.prev or tags.empty_step_tags:
        raise NotebookError(
            "steps_defaults may hold only step settings (limit:, label:, annotation:, "
            "request:, env:, ...), not step, prev or section tags",
            notebook=notebook,
            fix="move step, prev and section tags to cells",
        )
    return tags.step_settings()


def _timeout(raw: Any, notebook: str) -> int | None:
    """Kale's notebook-level ``timeout`` (seconds, or a duration such as ``30m``): the
    default ``timeout:`` of every step."""
    if raw in (None, "", 0):
        return None
    seconds = None
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
        seconds = raw
    elif isinstance(raw, str):
        seconds = duration_seconds(raw.strip())
    if not seconds:
        raise NotebookError(
            f"metadata.kubeflow_notebook.timeout is {raw!r}, not a duration",
            notebook=notebook,
            fix="give it in seconds (e.g. 3600) or as a duration such as \"30m\" or \"2h\"",
        )
    return seconds


def apply_notebook_metadata(
    pipeline: Pipeline, metadata: Any, default_name: str, name_option: str = ""
) -> None:
    """Fill the pipeline's notebook-wide settings from ``metadata.kubeflow_notebook``.

    ``name_option`` (``--TagMergePreprocessor.pipeline_name``, or the same key in a
    config file) wins over the metadata's ``pipeline_name``; both go through
    :func:`pipeline_name_from`, and a warning says when the option's value had to change.
    """
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
    if name_option.strip():
        pipeline.name = pipeline_name_from(name_option)
        if pipeline.name != name_option:
            pipeline.warnings.append(
                f"{notebook}: {NAME_OPTION} is {shown(name_option)}, which Kubeflow does not "
                f"accept as a pipeline name (lowercase letters, digits and '-', at most "
                f"{KFP_NAME_LENGTH} characters), so the pipeline is named {pipeline.name!r}. "
                f"Fix: set {NAME_OPTION} to {pipeline.name!r} to silence this"
            )
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
    rok: dict[str, list[str]] = {"clone": [], "snapshot": [], "origin": []}
    pipeline.volumes = _volumes(raw.get("volumes"), notebook, rok)
    warning = _rok_warning(raw, rok, notebook)
    if warning:
        pipeline.warnings.append(warning)
    if raw.get("katib_run"):
        pipeline.warnings.append(
            f"{notebook}: metadata.kubeflow_notebook.katib_run is true, but no Katib "
            "experiment is made (katib_metadata is ignored): the script runs the pipeline "
            "once, with the parameters it is given. Fix: run it with --param NAME=VALUE for "
            "each trial, or set katib_run to false to silence this"
        )
    pipeline.defaults = _step_defaults(raw.get("steps_defaults"), notebook)
    if pipeline.defaults.timeout is None:  # a 'timeout:' in steps_defaults wins
        pipeline.defaults.timeout = _timeout(raw.get("timeout"), notebook)
