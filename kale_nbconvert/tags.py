"""The Kale tag language: one cell's ``metadata.tags`` in, what they mean out.

Pure functions, no notebook needed. Tags (Kale-compatible):

=========================  =================================================
``step:NAME``              start (or continue) step NAME; ``block:NAME`` is
                           the older spelling of the same thing
``prev:NAME``              the step runs after step NAME
``imports``                code prepended to every step (first)
``functions``              code prepended to every step (after imports)
``pipeline-parameters``    literal assignments -> typed pipeline parameters
                           (``parameters``, papermill's spelling, is the same)
``pipeline-metrics``       ``print(var)`` / ``var`` lines -> KFP run metrics
``skip``                   the cell is left out
``limit:RESOURCE:QTY``     e.g. ``limit:memory:4Gi``, ``limit:nvidia.com/gpu:1``
``label:KEY:VALUE``        pod label
``annotation:KEY:VALUE``   pod annotation (the value may contain colons)
=========================  =================================================

Kale's precedence rule: ``skip``, ``imports``, ``functions``, ``pipeline-parameters``
and ``pipeline-metrics`` win over every other tag of their cell (Kale's editor leaves
``prev:`` behind when a step is switched to ``skip``); ``skip`` wins over another
section tag. An empty ``step:`` or ``block:`` is no tag (Kale's extension leaves
``block:`` behind). Both are reported back (``CellTags.overridden``,
``CellTags.empty_step_tags``) so the caller can warn, naming the cell.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

STEP_NAME = re.compile(r"^[_a-z][_a-z0-9]*$")
STEP_NAME_RULE = "lowercase letters, digits and '_', not starting with a digit"

# Kubernetes label/annotation syntax (a pod with a bad one is refused by the cluster at
# run time, long after conversion; we refuse it here instead).
_K8S_NAME = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)"
_DNS_SUBDOMAIN = r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)"
K8S_KEY = re.compile(rf"^({_DNS_SUBDOMAIN}/)?{_K8S_NAME}$")
K8S_LABEL_VALUE = re.compile(rf"^{_K8S_NAME}?$")
LIMIT_TEXT = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_./]{0,252}$")

SECTION_TAGS = ("imports", "functions", "pipeline-parameters", "pipeline-metrics", "skip")
PREFIX_TAGS = ("step", "block", "prev", "limit", "label", "annotation")
KNOWN_TAGS = SECTION_TAGS + tuple(f"{prefix}:" for prefix in PREFIX_TAGS)
SECTION_ALIASES = {"parameters": "pipeline-parameters"}
"""Other spellings of section tags: ``parameters`` is papermill's parameters cell (and
the seed's spelling), which holds the same ``name = literal`` lines."""


class TagError(ValueError):
    """A tag that cannot be understood; the caller adds the cell and step."""

    def __init__(
        self, message: str, fix: str | None = None, *, name: str | None = None, kind: str = ""
    ):
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.name = name
        """For an invalid step name: the name as written (the caller may refine the fix)."""
        self.kind = kind
        """For an invalid step name: the tag it is in (``step``, ``block``, ``prev``)."""


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
    """Tags of other tools (e.g. ``hide-input``) that Kale does not use."""
    overridden: list[str] = field(default_factory=list)
    """Tags (as written) that lost to the cell's ``section`` under Kale's precedence
    rule; the caller warns about them."""
    empty_step_tags: list[str] = field(default_factory=list)
    """On a cell whose only step tag is empty (``block:``): that tag and the cell's step
    settings (``prev:``, ``limit:``...), all ignored as in Kale; the caller warns."""

    @property
    def is_tagged(self) -> bool:
        return bool(self.step or self.section)


def validate_step_name(name: str, kind: str = "step") -> None:
    if not STEP_NAME.match(name):
        what = "empty step name" if not name else f"invalid step name {shown(name)}"
        fix = f"rename it, e.g. '{kind}:{normalise_step_name(name)[:60]}'"
        if not name:
            fix = f"remove the tag, or write '{kind}:NAME'"
        raise TagError(f"{what} in '{kind}:': use {STEP_NAME_RULE}", fix=fix, name=name, kind=kind)


def kfp_name(name: str) -> str:
    """The name KFP gives a step's component and task (``train_model`` -> ``train-model``):
    two steps with the same KFP name would be indistinguishable in the KFP UI."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def normalise_step_name(name: str) -> str:
    """A valid step name close to ``name`` (for suggestions)."""
    cleaned = re.sub(r"[^_a-z0-9]", "_", name.strip().lower())
    cleaned = re.sub(r"__+", "_", cleaned) if cleaned.strip("_") else cleaned
    if not cleaned or cleaned[0].isdigit():
        cleaned = "_" + cleaned
    if not re.search(r"[a-z0-9]", cleaned):  # '_' alone gives Kubeflow no task name
        cleaned = "step"
    return cleaned


def _split_key_value(tag: str, kind: str) -> tuple[str, str]:
    body = tag[len(kind) + 1 :]
    key, sep, value = body.partition(":")
    if not sep or not key or not value:
        raise TagError(
            f"tag {shown(tag)} needs a key and a value",
            fix=f"write it as '{kind}:KEY:VALUE'",
        )
    if kind in ("label", "annotation") and not K8S_KEY.match(key):
        raise TagError(
            f"tag {shown(tag)}: {shown(key)} is not a valid Kubernetes {kind} key",
            fix="use letters, digits, '-', '_' and '.' (optionally 'example.com/' first), "
            "starting and ending with a letter or digit",
        )
    if kind == "label" and (len(value) > 63 or not K8S_LABEL_VALUE.match(value)):
        raise TagError(
            f"tag {shown(tag)}: {shown(value)} is not a valid Kubernetes label value",
            fix="use at most 63 letters, digits, '-', '_' and '.', starting and ending "
            "with a letter or digit (put free text in an 'annotation:KEY:VALUE' tag)",
        )
    return key, value


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def shown(text: str, limit: int = 80) -> str:
    """``repr(text)``, shortened for a one-line message (a tag can be megabytes)."""
    if len(text) > limit:
        return repr(text[:limit]) + f"... ({len(text):,} characters)"
    return repr(text)


def _unknown_tag(tag: str) -> TagError | None:
    """An error for a tag that looks like a misspelt Kale tag, else None (ignore it)."""
    head, colon, rest = tag.partition(":")
    if head in PREFIX_TAGS and not colon:
        placeholder = "KEY:VALUE" if head in ("label", "annotation") else (
            "RESOURCE:QTY" if head == "limit" else "NAME"
        )
        return TagError(
            f"tag {tag!r} has no value", fix=f"write it as '{head}:{placeholder}'"
        )
    candidates = list(SECTION_TAGS) + list(PREFIX_TAGS)
    close = difflib.get_close_matches(head.lower(), candidates, n=1, cutoff=0.75)
    if colon or close:
        if close:
            suggestion = close[0] + (":" + rest if colon else "")
            fix = f"did you mean {shown(suggestion)}?"
        else:
            fix = "valid tags: " + ", ".join(KNOWN_TAGS)
        return TagError(f"unknown tag {shown(tag)}", fix=fix)
    return None


def parse_tags(tags) -> CellTags:
    """Parse one cell's tag list. Raises :class:`TagError` on a tag that cannot work."""
    if not isinstance(tags, (list, tuple)):
        raise TagError(
            f"metadata.tags must be a list of strings, not {_a(type(tags).__name__)}",
            fix="edit the cell's tags in Jupyter's property inspector",
        )
    parsed = CellTags()
    sections: list[tuple[str, str]] = []  # (as written, canonical)
    steps: list[str] = []
    settings: list[str] = []  # step and step-setting tags as written, for precedence
    for tag in tags:
        if not isinstance(tag, str):
            what = repr(tag)
            what = what if len(what) <= 60 else what[:57] + "..."
            raise TagError(
                f"tag {what} is {_a(type(tag).__name__)}, not a string",
                fix="remove it, or write it as text (in quotes) in the cell's tags",
            )
        tag = tag.strip()
        kind, _, rest = tag.partition(":")
        if tag in SECTION_TAGS or tag in SECTION_ALIASES:
            sections.append((tag, SECTION_ALIASES.get(tag, tag)))
            continue
        if kind in PREFIX_TAGS and _:
            settings.append(tag)
        if kind in ("step", "block") and _ and not rest:
            parsed.empty_step_tags.append(tag)
        elif kind in ("step", "block") and _:
            validate_step_name(rest, kind)
            if rest not in steps:
                steps.append(rest)
        elif kind == "prev" and _:
            validate_step_name(rest, kind)
            if rest not in parsed.prev:
                parsed.prev.append(rest)
        elif kind == "limit" and _:
            resource, quantity = _split_key_value(tag, "limit")
            if not LIMIT_TEXT.match(resource) or not LIMIT_TEXT.match(quantity):
                raise TagError(
                    f"tag {shown(tag)} is not a resource limit",
                    fix="write e.g. 'limit:cpu:500m', 'limit:memory:4Gi' or "
                    "'limit:nvidia.com/gpu:1'",
                )
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
    if sections:
        return _section_wins(parsed, sections, settings)
    if len(steps) > 1:
        raise TagError(
            f"two step tags on one cell ({shown(steps[0])} and {shown(steps[1])})",
            fix="keep one step tag per cell, or split the cell",
        )
    parsed.step = steps[0] if steps else None
    if parsed.step:
        parsed.empty_step_tags = []  # a stray empty tag beside a real one changes nothing
    elif parsed.empty_step_tags:
        # The step's name was cleared (Kale's editor leaves 'block:' and the step's
        # settings behind): as in Kale, the cell is untagged, its settings go too.
        parsed.empty_step_tags = list(dict.fromkeys(parsed.empty_step_tags + settings))
        parsed.prev, parsed.limits, parsed.labels, parsed.annotations = [], {}, {}, {}
    return parsed


def _section_wins(parsed: CellTags, sections: list[tuple[str, str]], settings: list[str]) -> CellTags:
    """Kale's precedence rule: a section tag wins over every step tag and step setting
    of its cell, and ``skip`` over another section (the cell is left out either way).
    Two different non-skip sections stay an error: which code would the cell be?"""
    kinds = list(dict.fromkeys(canonical for _, canonical in sections))
    if len(kinds) > 1 and "skip" not in kinds:
        raise TagError(
            f"tags {kinds[0]!r} and {kinds[1]!r} conflict on one cell",
            fix="keep one of them, or split the cell in two",
        )
    parsed.section = "skip" if "skip" in kinds else kinds[0]
    losers = [written for written, canonical in sections if canonical != parsed.section]
    parsed.overridden = list(dict.fromkeys(losers + settings))
    parsed.prev, parsed.limits, parsed.labels, parsed.annotations = [], {}, {}, {}
    parsed.empty_step_tags = []
    return parsed
