"""The Kale tag language: one cell's ``metadata.tags`` in, what they mean out.

Pure functions, no notebook needed. Tags (Kale-compatible):

=========================  =================================================
``step:NAME``              start (or continue) step NAME; ``block:NAME`` is
                           the older spelling of the same thing
``prev:NAME``              the step runs after step NAME
``imports``                code prepended to every step (first)
``functions``              code prepended to every step (after imports)
``pipeline-parameters``    literal assignments -> typed pipeline parameters
``pipeline-metrics``       ``print(var)`` / ``var`` lines -> KFP run metrics
``skip``                   the cell is left out
``limit:RESOURCE:QTY``     e.g. ``limit:memory:4Gi``, ``limit:nvidia.com/gpu:1``
``label:KEY:VALUE``        pod label
``annotation:KEY:VALUE``   pod annotation (the value may contain colons)
=========================  =================================================
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

STEP_NAME = re.compile(r"^[_a-z][_a-z0-9]*$")
STEP_NAME_RULE = "lowercase letters, digits and '_', not starting with a digit"

SECTION_TAGS = ("imports", "functions", "pipeline-parameters", "pipeline-metrics", "skip")
PREFIX_TAGS = ("step", "block", "prev", "limit", "label", "annotation")
KNOWN_TAGS = SECTION_TAGS + tuple(f"{prefix}:" for prefix in PREFIX_TAGS)


class TagError(ValueError):
    """A tag that cannot be understood; the caller adds the cell and step."""

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix


@dataclass
class CellTags:
    """What one cell's tags say."""

    step: str | None = None
    section: str | None = None
    """One of ``SECTION_TAGS`` when the cell is not a step cell."""
    prev: list[str] = field(default_factory=list)
    limits: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    """Tags of other tools (e.g. papermill's ``parameters``) that Kale does not use."""

    @property
    def is_tagged(self) -> bool:
        return bool(self.step or self.section)


def validate_step_name(name: str) -> None:
    if not STEP_NAME.match(name):
        raise TagError(
            f"invalid step name {name!r}: use {STEP_NAME_RULE}",
            fix=f"rename it, e.g. 'step:{normalise_step_name(name)}'",
        )


def normalise_step_name(name: str) -> str:
    """A valid step name close to ``name`` (for suggestions)."""
    cleaned = re.sub(r"[^_a-z0-9]", "_", name.strip().lower())
    if not cleaned or cleaned[0].isdigit():
        cleaned = "_" + cleaned
    return cleaned


def _split_key_value(tag: str, kind: str) -> tuple[str, str]:
    body = tag[len(kind) + 1 :]
    key, sep, value = body.partition(":")
    if not sep or not key or not value:
        raise TagError(
            f"tag {tag!r} needs a key and a value",
            fix=f"write it as '{kind}:KEY:VALUE'",
        )
    return key, value


def _unknown_tag(tag: str) -> TagError | None:
    """An error for a tag that looks like a misspelt Kale tag, else None (ignore it)."""
    head = tag.split(":", 1)[0]
    candidates = list(SECTION_TAGS) + list(PREFIX_TAGS)
    close = difflib.get_close_matches(head, candidates, n=1, cutoff=0.75)
    if ":" in tag or close:
        if close:
            suggestion = close[0] + (":" + tag.split(":", 1)[1] if ":" in tag else "")
            fix = f"did you mean {suggestion!r}?"
        else:
            fix = "valid tags: " + ", ".join(KNOWN_TAGS)
        return TagError(f"unknown tag {tag!r}", fix=fix)
    return None


def parse_tags(tags) -> CellTags:
    """Parse one cell's tag list. Raises :class:`TagError` on a tag that cannot work."""
    if not isinstance(tags, (list, tuple)):
        raise TagError(
            f"metadata.tags must be a list of strings, not {type(tags).__name__}",
            fix="edit the cell's tags in Jupyter's property inspector",
        )
    parsed = CellTags()
    for tag in tags:
        if not isinstance(tag, str):
            raise TagError(
                f"tag {tag!r} is a {type(tag).__name__}, not a string",
                fix="remove it or write it as text",
            )
        tag = tag.strip()
        kind, _, rest = tag.partition(":")
        if tag in SECTION_TAGS:
            if parsed.section and parsed.section != tag:
                raise TagError(
                    f"tags {parsed.section!r} and {tag!r} conflict on one cell",
                    fix="split the cell in two",
                )
            parsed.section = tag
        elif kind in ("step", "block") and _:
            validate_step_name(rest)
            if parsed.step and parsed.step != rest:
                raise TagError(
                    f"two step tags on one cell ({parsed.step!r} and {rest!r})",
                    fix="keep one step tag per cell, or split the cell",
                )
            parsed.step = rest
        elif kind == "prev" and _:
            validate_step_name(rest)
            if rest not in parsed.prev:
                parsed.prev.append(rest)
        elif kind == "limit" and _:
            resource, quantity = _split_key_value(tag, "limit")
            parsed.limits[resource] = quantity
        elif kind == "label" and _:
            key, value = _split_key_value(tag, "label")
            parsed.labels[key] = value
        elif kind == "annotation" and _:
            key, value = _split_key_value(tag, "annotation")
            parsed.annotations[key] = value
        else:
            error = _unknown_tag(tag)
            if error:
                raise error
            parsed.ignored.append(tag)
    if parsed.step and parsed.section:
        raise TagError(
            f"tags 'step:{parsed.step}' and {parsed.section!r} conflict on one cell",
            fix="split the cell in two",
        )
    if parsed.section and (parsed.prev or parsed.limits or parsed.labels or parsed.annotations):
        raise TagError(
            f"step settings (prev/limit/label/annotation) on a {parsed.section!r} cell",
            fix="move them to a cell tagged 'step:NAME'",
        )
    return parsed
