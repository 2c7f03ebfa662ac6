"""Stage 3: per step, the names it needs from upstream and the names it must hand on."""

from __future__ import annotations

from .stage import Stage
from traitlets import Bool, List, Unicode

from ..analysis import DEFAULT_RULES
from ..dataflow import dataflow_table, plan_dataflow
from ..model import RESOURCE_KEY


def listed_names(values) -> list[str]:
    """Option values as names: ``--X.names=a,b`` and ``--X.names=a --X.names=b`` both
    give ``["a", "b"]`` (traitlets keeps ``"a,b"`` as one item)."""
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


class NameAnalysisPreprocessor(Stage):
    """Decide each step's inputs, outputs and parameters by static analysis.

    Module-level code is walked in order with ``ast``; nested scopes go through
    pyflakes. See :mod:`kale_nbconvert.analysis` for the mutation rule (passing a value
    to a call only reads it, except for the functions known to change their arguments)
    and :mod:`kale_nbconvert.dataflow` for how each input's producer is chosen (the last
    step before it in notebook order that changed the name, which must be an ancestor).
    """

    explain = Bool(
        False,
        help="Log the data-flow plan: per step, its inputs and the step each comes from, "
        "its outputs, its parameters, and what it may change in place and why (the line "
        "and the call).",
    ).tag(config=True)
    read_only_functions = List(
        Unicode(),
        help="Functions (bare 'clean' or qualified 'mylib.clean') that never change "
        "their arguments, even where the analysis would say so. Comma-separated or "
        "repeated.",
    ).tag(config=True)
    read_only_methods = List(
        Unicode(),
        help="Extra method names that never change their object (e.g. 'summary'). "
        "Comma-separated or repeated.",
    ).tag(config=True)
    mutating_functions = List(
        Unicode(),
        help="Functions or methods (bare 'fill' or qualified 'mylib.fill') that change "
        "the arguments they are passed (and, for methods, their object). "
        "Comma-separated or repeated.",
    ).tag(config=True)

    def preprocess(self, nb, resources):
        pipeline = resources[RESOURCE_KEY]
        rules = DEFAULT_RULES.extended(
            listed_names(self.read_only_functions),
            listed_names(self.read_only_methods),
            listed_names(self.mutating_functions),
        )
        plan_dataflow(pipeline, rules)
        if self.explain:
            self.log.warning("Data flow of %s:\n%s", pipeline.notebook, dataflow_table(pipeline))
        return nb, resources
