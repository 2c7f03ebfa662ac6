"""The preprocessor chain, in the order the exporter runs it.

Each is a traitlets-configurable nbconvert ``Preprocessor`` that adds to the one
:class:`~kale_nbconvert.model.Pipeline` in ``resources["kale_pipeline"]``.
"""

from .tag_merge import TagMergePreprocessor
from .parameter_extraction import ParameterExtractionPreprocessor
from .name_analysis import NameAnalysisPreprocessor
from .marshal_injection import MarshalInjectionPreprocessor

CHAIN = (
    TagMergePreprocessor,
    ParameterExtractionPreprocessor,
    NameAnalysisPreprocessor,
    MarshalInjectionPreprocessor,
)

__all__ = [cls.__name__ for cls in CHAIN] + ["CHAIN"]
