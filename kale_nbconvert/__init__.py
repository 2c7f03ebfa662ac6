"""kale_nbconvert: turn a Kale-tagged notebook into a Kubeflow Pipelines v2 script.

``jupyter nbconvert --to kale notebook.ipynb`` runs :class:`KaleExporter`, which chains
four preprocessors (tag merge, name analysis, parameter extraction, marshal injection)
that fill one :class:`~kale_nbconvert.model.Pipeline`, then renders it with the
``templates/kale`` Jinja template. From Python, :func:`plan` gives the filled model
and :func:`convert` the script (see :mod:`kale_nbconvert.api`).

The package's code runs at three times: at conversion (everything here but the two
below), in the generated script (``kale_nbconvert/embedded/``: pasted into every
script, it runs inside each step and in the script's command line) and in the notebook
after a run (``kale_nbconvert.local_runs``). See the README's Layout section.
"""

__version__ = "0.1.0"

__all__ = ["KaleError", "KaleExporter", "NotebookError", "__version__", "convert", "plan"]


def __getattr__(name):
    # nbconvert is slow to import (about 3 s on a 2-core machine: nbformat's schema
    # checker alone builds a grammar for 2 s), and the exporter and the errors (which
    # derive from nbconvert's) import it: load them only when asked for, so what runs in
    # a notebook or a step (``kale_nbconvert.local_runs``, ``kale_nbconvert.embedded``)
    # does not pay for it.
    if name in ("KaleError", "NotebookError"):
        from . import errors

        return getattr(errors, name)
    if name == "KaleExporter":
        from .exporter import KaleExporter

        return KaleExporter
    if name in ("convert", "plan"):
        from . import api

        return getattr(api, name)
    raise AttributeError(name)


def _jupyter_server_extension_points():
    """jupyter_server's hook: the extension that gives JupyterLab's Export > Kale its
    error page (enabled by ``etc/jupyter/jupyter_server_config.d/kale_nbconvert.json``)."""
    return [{"module": "kale_nbconvert.jupyter_server_extension"}]
