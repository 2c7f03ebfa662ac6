"""IPython syntax (``%magic``, ``%%cell``, ``!cmd``, ``x = !cmd``, ``obj?``) -> plain Python.

Analysis and the step both use the code IPython itself would run, produced by IPython's
own ``TransformerManager`` rather than a regex of ours, so every magic IPython knows is
handled the way IPython handles it.
"""

from __future__ import annotations

import functools
import re

_MAYBE_IPYTHON = re.compile(r"^\s*(%|!)|=\s*(%|!)|\?\s*$", re.MULTILINE)


@functools.lru_cache(maxsize=1)
def _transformer():
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager()


def ipython_to_python(source: str) -> str:
    """The plain Python IPython would execute for ``source`` (unchanged if no magics)."""
    if not _MAYBE_IPYTHON.search(source):
        return source
    code = _transformer().transform_cell(source)
    # transform_cell always ends with a newline; keep plain cells byte-exact.
    if code.rstrip("\n") == source.rstrip("\n"):
        return source
    return code
