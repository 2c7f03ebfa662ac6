"""What the four stages share: they are not optional.

nbconvert's ``Preprocessor`` has a configurable ``enabled`` switch; a stage of this
chain switched off would leave the model half-filled (steps without inputs, or a crash
in the next stage). So a stage always runs, and ``--TagMergePreprocessor.enabled=False``
is reported by traitlets as an option the stage does not have.
"""

from __future__ import annotations

from nbconvert.preprocessors import Preprocessor
from traitlets import Bool


class Stage(Preprocessor):
    """A mandatory stage of the chain (``preprocessors.CHAIN``)."""

    enabled = Bool(True, help="Always on: every stage of the chain is needed.")

    def __call__(self, nb, resources):
        return self.preprocess(nb, resources)
