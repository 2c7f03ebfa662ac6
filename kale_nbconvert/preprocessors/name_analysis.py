"""Stage 3: per step, the names it needs from upstream and the names it must hand on."""

from __future__ import annotations

from nbconvert.preprocessors import Preprocessor
from traitlets import Bool, List, Unicode

from ..analysis import DEFAULT_READ_ONLY
from ..dataflow import dataflow_table, plan_dataflow
from ..model import RESOURCE_KEY


class NameAnalysisPreprocessor(Preprocessor):
    """Decide each step's inputs, outputs and parameters by static analysis.

    Module-level code is walked in order with ``ast``; nested scopes go through
    pyflakes. See :mod:`kale_nbconvert.analysis` for the mutation rule and
    :mod:`kale_nbconvert.dataflow` for how each input's producer is chosen (the last
    step before it in notebook order that changed the name, which must be an ancestor).
    """

    enabled = Bool(True).tag(config=True)
    explain = Bool(
        False,
        help="Log the data-flow plan (per step: inputs <- producer, outputs, parameters).",
    ).tag(config=True)
    read_only_functions = List(
        Unicode(),
        help="Extra function names that never change their arguments "
        "(e.g. 'plot'), so passing a variable to them does not count as changing it.",
    ).tag(config=True)
    read_only_methods = List(
        Unicode(),
        help="Extra method names that never change their object (e.g. 'summary').",
    ).tag(config=True)

    def preprocess(self, nb, resources):
        pipeline = resources[RESOURCE_KEY]
        read_only = DEFAULT_READ_ONLY.extended(self.read_only_functions, self.read_only_methods)
        plan_dataflow(pipeline, read_only)
        if self.explain:
            self.log.warning("Data flow of %s:\n%s", pipeline.notebook, dataflow_table(pipeline))
        return nb, resources
