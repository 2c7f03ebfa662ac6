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
``request:RESOURCE:QTY``   container request (cpu, memory)
``image:REF``              this step's image
``retry:N[:BACKOFF]``      retries, with an initial backoff
``timeout:DURATION``       the pod's deadline (``90s``, ``30m``, ``2h``)
``cache:enabled|disabled`` KFP caching of this step
``report:enabled|disabled`` the step's HTML report of its cells' outputs (on)
``env:NAME:VALUE``         environment variable (the value may contain colons)
``secret:SECRET:KEY:ENV``  a secret's key as an environment variable
``secret-volume:S:PATH``   a secret mounted as files
``configmap:NAME:KEY:ENV`` a config map's key as an environment variable
``configmap-volume:N:PATH`` a config map mounted as files
``node-selector:KEY:VALUE`` node selector
``toleration:KEY[=VALUE]:EFFECT`` toleration (kubectl's taint syntax)
``shm:SIZE``               a memory-backed ``/dev/shm`` of that size
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

from .model import StepSettings
from .problems import Problem

STEP_NAME = re.compile(r"^[_a-z][_a-z0-9]*$")
STEP_NAME_RULE = "lowercase letters, digits and '_', not starting with a digit"

# Kubernetes label/annotation syntax (a pod with a bad one is refused by the cluster at
# run time, long after conversion; we refuse it here instead).
_K8S_NAME = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)"
_DNS_SUBDOMAIN = r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)"
K8S_KEY = re.compile(rf"^({_DNS_SUBDOMAIN}/)?{_K8S_NAME}$")
K8S_LABEL_VALUE = re.compile(rf"^{_K8S_NAME}?$")
LIMIT_TEXT = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_./]{0,252}$")
CPU = re.compile(r"^[0-9]+(\.[0-9]+)?m?$")
MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?(E|P|T|G|M|K|Ei|Pi|Ti|Gi|Mi|Ki)?$")
_QUANTITY_EXAMPLES = {"limit": ("500m", "2", "4Gi"), "request": ("500m", "2", "1Gi")}


def quantity_problem(kind: str, resource: str, quantity: str) -> tuple[str, str] | None:
    """What is wrong with the cpu or memory quantity of a ``limit:``/``request:`` tag,
    and the fix; None if it is fine (or the resource is neither)."""
    cpu, cores, memory = _QUANTITY_EXAMPLES[kind]
    if resource == "cpu" and not CPU.match(quantity):
        return "not a CPU quantity", f"write e.g. '{kind}:cpu:{cpu}' or '{kind}:cpu:{cores}'"
    if resource == "memory" and not MEMORY.match(quantity):
        return "not a memory quantity", f"write e.g. '{kind}:memory:{memory}'"
    return None
DNS_SUBDOMAIN = re.compile(rf"^{_DNS_SUBDOMAIN}$")
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
DURATION = re.compile(r"^(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s?)?$")
IMAGE_REF = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

SECTION_TAGS = ("imports", "functions", "pipeline-parameters", "pipeline-metrics", "skip")
SETTING_TAGS = {
    # kind: (placeholder, a corrected example)
    "limit": ("RESOURCE:QTY", "limit:memory:4Gi"),
    "label": ("KEY:VALUE", "label:team:ml"),
    "annotation": ("KEY:VALUE", "annotation:owner:me"),
    "request": ("RESOURCE:QTY", "request:memory:1Gi"),
    "image": ("REF", "image:python:3.12-slim"),
    "retry": ("N", "retry:3:30s"),
    "timeout": ("DURATION", "timeout:30m"),
    "cache": ("enabled", "cache:disabled"),
    "report": ("enabled", "report:disabled"),
    "env": ("NAME:VALUE", "env:MODE:fast"),
    "secret": ("SECRET:KEY:ENV", "secret:db-creds:password:DB_PASSWORD"),
    "secret-volume": ("SECRET:PATH", "secret-volume:gcp-key:/secrets/gcp"),
    "configmap": ("NAME:KEY:ENV", "configmap:app-cfg:mode:CFG_MODE"),
    "configmap-volume": ("NAME:PATH", "configmap-volume:app-cfg:/etc/app"),
    "node-selector": ("KEY:VALUE", "node-selector:pool:gpu"),
    "toleration": ("KEY[=VALUE]:EFFECT", "toleration:dedicated=gpu:NoSchedule"),
    "shm": ("SIZE", "shm:2Gi"),
}
PREFIX_TAGS = ("step", "block", "prev") + tuple(SETTING_TAGS)
KNOWN_TAGS = SECTION_TAGS + tuple(f"{prefix}:" for prefix in PREFIX_TAGS)
SECTION_ALIASES = {"parameters": "pipeline-parameters"}
"""Other spellings of section tags: ``parameters`` is papermill's parameters cell (and
the seed's spelling), which holds the same ``name = literal`` lines."""


class TagError(Problem):
    """A tag that cannot be understood; the caller adds the cell and step."""

    def __init__(
        self, message: str, fix: str | None = None, *, name: str | None = None, kind: str = ""
    ):
        super().__init__(message, fix, name=name)
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
    extra: StepSettings = field(default_factory=StepSettings)
    """The other step settings (``request:``, ``image:``, ``env:``, ...)."""
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

    @property
    def has_settings(self) -> bool:
        return bool(self.prev or self.limits or self.labels or self.annotations) or not (
            self.extra.is_empty()
        )

    def step_settings(self) -> StepSettings:
        """Every step setting of the cell as one :class:`StepSettings`."""
        return StepSettings(**{
            **self.extra.__dict__,
            "limits": dict(self.limits),
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
        })

    def _clear_settings(self) -> None:
        self.prev, self.limits, self.labels, self.annotations = [], {}, {}, {}
        self.extra = StepSettings()


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
        placeholder = SETTING_TAGS[head][0] if head in SETTING_TAGS else "NAME"
        return TagError(
            f"tag {tag!r} has no value", fix=f"write it as '{head}:{placeholder}'"
        )
    candidates = list(SECTION_TAGS) + list(PREFIX_TAGS)
    if not colon:  # a bare word is likely another tool's tag ('config', 'images')
        candidates = list(SECTION_TAGS) + ["step", "block", "prev", "limit", "label", "annotation"]
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
        elif kind in SETTING_TAGS and _:
            _parse_setting(parsed.extra, tag, kind, rest)
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
        parsed._clear_settings()
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
    parsed._clear_settings()
    parsed.empty_step_tags = []
    return parsed


def duration_seconds(text: str) -> int | None:
    """``90s``, ``30m``, ``2h``, ``1h30m``, ``45`` (seconds) -> seconds; None if invalid."""
    match = DURATION.match(text)
    if not text or not match:
        return None
    hours, minutes, seconds = (int(group or 0) for group in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _parse_setting(settings: StepSettings, tag: str, kind: str, rest: str) -> None:
    """One ``request:``/``image:``/``env:``/... tag into ``settings``, validated the way
    Kubernetes will validate it (a bad value fails the run on the cluster, long after
    conversion; we refuse it here, with a corrected example)."""
    example = SETTING_TAGS[kind][1]

    def refuse(what: str, fix: str | None = None) -> TagError:
        return TagError(
            f"tag {shown(tag)}: {what}",
            fix=fix or f"write it as '{kind}:{SETTING_TAGS[kind][0]}', e.g. {example!r}",
        )

    def parts(count: int) -> list[str]:
        # The last part may contain colons (a value), except where noted by the caller.
        pieces = rest.split(":", count - 1)
        if len(pieces) != count or not all(pieces):
            raise refuse(f"needs {count} parts separated by ':'")
        return pieces

    def k8s_name(name: str, what: str) -> str:
        if len(name) > 253 or not DNS_SUBDOMAIN.match(name):
            raise refuse(
                f"{shown(name)} is not a valid Kubernetes {what} name",
                f"use lowercase letters, digits, '-' and '.', starting and ending with a "
                f"letter or digit, e.g. {example!r}",
            )
        return name

    def data_key(key: str, what: str) -> str:
        if not CONFIG_KEY.match(key):
            raise refuse(
                f"{shown(key)} is not a valid {what} key",
                f"use letters, digits, '-', '_' and '.', e.g. {example!r}",
            )
        return key

    def env_name(name: str) -> str:
        if not ENV_NAME.match(name):
            raise refuse(
                f"{shown(name)} is not a valid environment variable name",
                f"use letters, digits and '_', not starting with a digit, e.g. {example!r}",
            )
        return name

    def mount_path(path: str) -> str:
        if not path.startswith("/") or ":" in path or ".." in path.split("/") or not (
            path.isprintable() and path.strip() == path
        ):
            raise refuse(
                f"{shown(path)} is not an absolute mount path",
                f"write an absolute path without ':' or '..', e.g. {example!r}",
            )
        if path in settings.secret_volumes or path in settings.configmap_volumes:
            raise refuse(f"two volumes at {shown(path)}", "mount each volume at its own path")
        return path.rstrip("/") or "/"

    def fresh_env(name: str) -> str:
        name = env_name(name)
        if any(name in getattr(settings, kind) for kind in StepSettings.ENV_FIELDS):
            raise refuse(
                f"environment variable {name!r} is set twice on this cell",
                "keep one env:, secret: or configmap: tag per variable",
            )
        return name

    if kind == "request":
        resource, quantity = parts(2)
        problem = quantity_problem("request", resource, quantity)
        if problem:
            raise refuse(*problem)
        if resource not in ("cpu", "memory"):
            raise refuse(
                "KFP can request only cpu and memory (an accelerator is requested by "
                "its limit)",
                "write e.g. 'request:cpu:500m', 'request:memory:1Gi', or "
                "'limit:nvidia.com/gpu:1' for an accelerator",
            )
        settings.requests[resource] = quantity
    elif kind == "image":
        if len(rest) > 512 or not IMAGE_REF.match(rest):
            raise refuse(
                f"{shown(rest)} is not a container image reference",
                "write e.g. 'image:python:3.12-slim' or "
                "'image:registry.example.com/team/img@sha256:<64 hex digits>' "
                "(lowercase repository, optional :tag and @sha256:digest)",
            )
        settings.image = rest
    elif kind == "retry":
        count, _, backoff = rest.partition(":")
        if not count.isdigit() or int(count) > 100 or (_ and not backoff):
            raise refuse("the retry count must be a whole number (0 to 100)", "write e.g. 'retry:3' or 'retry:3:30s'")
        seconds = duration_seconds(backoff) if backoff else None
        if backoff and seconds is None:
            raise refuse(
                f"{shown(backoff)} is not a backoff duration",
                "write e.g. 'retry:3:30s', 'retry:3:5m' or 'retry:3:1h'",
            )
        settings.retry = (int(count), seconds)
    elif kind == "timeout":
        seconds = duration_seconds(rest)
        if not seconds:
            raise refuse("not a duration", "write e.g. 'timeout:90s', 'timeout:30m' or 'timeout:2h'")
        settings.timeout = seconds
    elif kind == "cache":
        if rest not in ("enabled", "disabled"):
            raise refuse("caching is 'enabled' or 'disabled'", "write 'cache:disabled' or 'cache:enabled'")
        settings.cache = rest == "enabled"
    elif kind == "report":
        if rest not in ("enabled", "disabled"):
            raise refuse("the report is 'enabled' or 'disabled'", "write 'report:disabled' or 'report:enabled'")
        settings.report = rest == "enabled"
    elif kind == "env":
        name, value = parts(2)
        settings.env[fresh_env(name)] = value
    elif kind in ("secret", "configmap"):
        what = "secret" if kind == "secret" else "config map"
        pieces = rest.split(":")
        if len(pieces) != 3 or not all(pieces):
            raise refuse("needs 3 parts separated by ':'")
        name, key, env = pieces
        entry = (k8s_name(name, what), data_key(key, what))
        target = settings.secret_env if kind == "secret" else settings.configmap_env
        target[fresh_env(env)] = entry
    elif kind in ("secret-volume", "configmap-volume"):
        what = "secret" if kind == "secret-volume" else "config map"
        name, path = parts(2)
        path = mount_path(path)
        target = settings.secret_volumes if kind == "secret-volume" else settings.configmap_volumes
        target[path] = k8s_name(name, what)
    elif kind == "node-selector":
        key, value = parts(2)
        if not K8S_KEY.match(key) or len(value) > 63 or not K8S_LABEL_VALUE.match(value):
            raise refuse(
                f"{shown(key)}={shown(value)} is not a valid Kubernetes node label",
                f"use a label key and a value of at most 63 letters, digits, '-', '_' and "
                f"'.', e.g. {example!r}",
            )
        settings.node_selectors[key] = value
    elif kind == "toleration":
        taint, sep, effect = rest.rpartition(":")
        key, equals, value = taint.partition("=")
        if not sep or effect not in TAINT_EFFECTS:
            raise refuse(
                f"the effect must be one of {', '.join(TAINT_EFFECTS)}",
                "write e.g. 'toleration:dedicated=gpu:NoSchedule' or "
                "'toleration:nvidia.com/gpu:NoSchedule'",
            )
        if not K8S_KEY.match(key) or (equals and (len(value) > 63 or not value or not K8S_LABEL_VALUE.match(value))):
            raise refuse(
                f"{shown(taint)} is not a valid taint key[=value]",
                "write e.g. 'toleration:dedicated=gpu:NoSchedule' or "
                "'toleration:nvidia.com/gpu:NoSchedule'",
            )
        settings.tolerations[f"{key}:{effect}"] = (key, value if equals else None, effect)
    elif kind == "shm":
        if not MEMORY.match(rest) or not rest.strip("0.").rstrip("EPTGMKi"):
            raise refuse("not a memory quantity", "write e.g. 'shm:2Gi' or 'shm:512Mi'")
        settings.shm = rest
