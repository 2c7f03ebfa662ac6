"""Stage 4: what each step container needs: artifact signatures, packages, image."""

from __future__ import annotations

import sys

from nbconvert.preprocessors import Preprocessor
from traitlets import Bool, List, Unicode

from ..dependencies import distribution_pin, imported_modules, resolve_packages
from ..model import RESOURCE_KEY

SERIALIZER_DISTRIBUTIONS = ("dill",)
"""What the in-step runtime itself imports, installed in every step."""


class MarshalInjectionPreprocessor(Preprocessor):
    """Decide how variables travel and what each step's container installs.

    Every variable crossing a step boundary becomes a KFP artifact: the producer
    writes ``Output[Artifact].path``, the consumer reads ``Input[Artifact].path``, so
    data crosses pods on a real cluster. ``packages_to_install`` comes from the step's
    own imports (plus the shared cells), pinned to this environment.
    """

    enabled = Bool(True).tag(config=True)
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
        shared_modules = set()
        for cell in pipeline.shared_cells:
            shared_modules |= imported_modules(cell.code)
        runtime = [distribution_pin(name) for name in SERIALIZER_DISTRIBUTIONS]
        everything, unknown = set(runtime), set()
        for step in pipeline.step_list():
            modules = set(shared_modules)
            for cell in step.cells:
                modules |= imported_modules(cell.code)
            for statement in step.replayed_imports:
                modules |= imported_modules(statement)
            pins, missing = resolve_packages(modules)
            if step.uses_ipython:
                pins += [distribution_pin("ipython")]
            step.packages = sorted(set(pins + runtime + list(self.extra_packages)), key=str.lower)
            everything |= set(step.packages)
            unknown |= set(missing)
        pipeline.packages = sorted(everything, key=str.lower)
        pipeline.unknown_modules = sorted(unknown)
        for module in pipeline.unknown_modules:
            message = (
                f"{pipeline.notebook}: module {module!r} is imported but no installed "
                "package provides it; a step container will not have it unless the "
                "image does (set docker_image)"
            )
            pipeline.warnings.append(message)
            self.log.warning(message)
        return nb, resources
