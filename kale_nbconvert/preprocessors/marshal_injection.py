"""Stage 4: what each step container needs: artifact signatures, packages, image.

A thin stage: the artifact kinds come from ``artifact_kinds.py``, the packages from
``dependencies.py``."""

from __future__ import annotations

import sys

from traitlets import List, Unicode

from ..artifact_kinds import plan_artifacts
from ..dependencies import distribution_pin, imported_modules, preload_modules, resolve_packages
from ..model import RESOURCE_KEY
from .stage import Stage

SERIALIZER_DISTRIBUTIONS = ("dill",)
"""What the in-step runtime itself imports, installed in every step."""


class MarshalInjectionPreprocessor(Stage):
    """Decide how variables travel and what each step's container installs.

    Every variable crossing a step boundary becomes a KFP artifact: the producer
    writes ``Output[...].path``, the consumer reads ``Input[Artifact].path``, so
    data crosses pods on a real cluster. A producer declares ``Output[Dataset]`` or
    ``Output[Model]`` where the code makes the type evident (``pd.read_csv``,
    ``np.array``, an estimator constructor, ``.fit``), else ``Output[Artifact]``; the
    in-step runtime picks the serializer from the value's actual type and records it
    in the artifact's metadata. ``packages_to_install`` comes from the modules the
    step's container imports (``_step_modules``), pinned to this environment.
    """

    base_image = Unicode(
        "",
        help="Container image of every step; overrides metadata docker_image. "
        "Default: python:X.Y of the converting interpreter.",
    ).tag(config=True)
    extra_packages = List(
        Unicode(),
        help="Requirements added to every step's packages_to_install.",
    ).tag(config=True)

    def preprocess(self, nb, resources):
        pipeline = resources[RESOURCE_KEY]
        version = sys.version_info
        pipeline.base_image = (
            self.base_image or pipeline.docker_image or f"python:{version.major}.{version.minor}"
        )
        for message in plan_artifacts(pipeline):
            pipeline.warnings.append(message)
            self.log.warning(message)
        runtime = [distribution_pin(name) for name in SERIALIZER_DISTRIBUTIONS]
        modules = _step_modules(pipeline)
        everything, unknown = set(runtime), set()
        for step in pipeline.step_list():
            pins, missing = resolve_packages(modules[step.name])
            # IPython runs a step's magics (its own, or the shared cells') and renders
            # its report's rich outputs (tables, figures)
            if pipeline.needs_ipython(step) or step.has_report:
                pins += [distribution_pin("ipython")]
            step.packages = sorted(set(pins + runtime + list(self.extra_packages)), key=str.lower)
            everything |= set(step.packages)
            unknown |= set(missing)
        pipeline.packages = sorted(everything, key=str.lower)
        pipeline.unknown_modules = sorted(unknown)
        pipeline.preload_modules = preload_modules(
            [cell.code for cell in pipeline.shared_cells]
            + [cell.code for step in pipeline.step_list() for cell in step.cells]
        )
        for module in pipeline.unknown_modules:
            message = (
                f"{pipeline.notebook}: module {module!r} is imported but no installed "
                "package provides it; a step container will not have it unless the "
                "image does (set docker_image)"
            )
            pipeline.warnings.append(message)
            self.log.warning(message)
        return nb, resources


def _step_modules(pipeline) -> dict[str, set[str]]:
    """The modules each step's container must have, by step name.

    A step runs the shared cells, its own cells and the imports it replays, and it
    unpickles what its producers hand it: a value's classes may come from any module
    its producer had (a DataFrame made in a step that imports pandas in its own cell),
    so a step also gets its producers' modules, transitively. The metrics step runs no
    cell and reads each metric as the number its producer recorded in the artifact's
    ``kale.json``: it needs the runtime only.
    """
    shared = set()
    for cell in pipeline.shared_cells:
        shared |= imported_modules(cell.code)
    own = {}
    for step in pipeline.step_list():
        modules = set(shared)
        for cell in step.cells:
            modules |= imported_modules(cell.code)
        for statement in step.replayed_imports:
            modules |= imported_modules(statement)
        own[step.name] = modules
    found: dict[str, set[str]] = {}
    open_steps: set[str] = set()  # entered, producers not all done yet
    for start in own:  # depth first without recursion: a chain may be thousands of steps long
        stack = [(start, False)]
        while stack:
            name, ready = stack.pop()
            if name in found:
                continue
            producers = {a.producer for a in pipeline.steps[name].inputs if a.producer in own}
            if ready:
                found[name] = set(own[name]).union(*(found.get(p, set()) for p in producers))
                open_steps.discard(name)
                continue
            open_steps.add(name)
            stack.append((name, True))
            # an open producer would be a cycle, which name analysis refuses earlier
            stack.extend((p, False) for p in producers if p not in found and p not in open_steps)
    return {
        step.name: set() if step.is_metrics else found[step.name]
        for step in pipeline.step_list()
    }
