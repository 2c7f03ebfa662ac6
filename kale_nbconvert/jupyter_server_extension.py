"""The jupyter_server extension behind JupyterLab's File > Save and Export Notebook As > Kale.

JupyterLab downloads ``GET /nbconvert/kale/<path>?download=true``, served by
jupyter_server's ``NbconvertFileHandler``. Left alone, a conversion error there becomes
``500 : Internal Server Error`` (the handler wraps every exception in
``HTTPError(500)``), which reads as a broken server rather than a problem in the
notebook. This extension registers a subclass of that handler for the ``kale`` format
only (tornado tries extension handlers before the server's own), which differs in two
ways:

- a :class:`~kale_nbconvert.errors.KaleError` answers ``422`` with a small page of our
  own: the notebook, cell, step, what is wrong, the fix, and how to see more;
- the exporter's configuration also reads ``jupyter_nbconvert_config.py`` / ``.json``
  from the same folders ``jupyter nbconvert`` reads (the server alone reads only its own
  config files), so an option set for the command line applies in JupyterLab too. The
  server's own config (``jupyter_server_config.py``, ``jupyter lab --X.y=...``) wins.

The same goes for ``POST /nbconvert/kale`` (a notebook sent as JSON, ``{"content":
NOTEBOOK, "name": "nb.ipynb"}``, converted without being saved; jupyter_server's
``NbconvertPostHandler``): the script, or the same ``422`` page. The download handler's
URL pattern matches ``/nbconvert/kale`` too (its path may be empty), so without a POST
handler of our own in front of it a POST would reach a handler that only knows GET.

Other formats, and ``jupyter nbconvert`` itself, are untouched. The extension is enabled
by ``etc/jupyter/jupyter_server_config.d/kale_nbconvert.json``, which installing the
package puts in place (``jupyter server extension list`` shows it; ``jupyter server
extension disable kale_nbconvert`` turns it off).
"""

from __future__ import annotations

import html
import os
import shlex

from jupyter_server.base.handlers import path_regex
from jupyter_server.nbconvert.handlers import NbconvertFileHandler, NbconvertPostHandler
from jupyter_server.utils import url_path_join
from traitlets.config import Config
from traitlets.config.loader import ConfigFileNotFound, JSONFileConfigLoader, PyFileConfigLoader

from .errors import KaleError, NotebookError

FORMAT = "kale"
STATUS = 422  # Unprocessable Content: the request is fine, the notebook cannot be converted
TITLE = "Kale: the notebook cannot be converted"
NBCONVERT_CONFIG = "jupyter_nbconvert_config"
CONFIG_PATHS = "kale_nbconvert_config_paths"
"""web_app.settings key: the folders the server reads its config from, which are the
folders ``jupyter nbconvert`` reads its own from."""


def _load_jupyter_server_extension(serverapp) -> None:
    """Called by jupyter_server at start-up (``kale_nbconvert._jupyter_server_extension_points``
    names this module)."""
    web_app = serverapp.web_app
    web_app.settings[CONFIG_PATHS] = list(serverapp.config_file_paths)
    base_url = web_app.settings["base_url"]
    # The server's own order: the bare /nbconvert/FORMAT is the POST handler's (as in
    # jupyter_server's default_handlers); /nbconvert/FORMAT/PATH is the download's.
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base_url, rf"/nbconvert/(?P<format>{FORMAT})"), KaleNbconvertPostHandler),
            (url_path_join(base_url, rf"/nbconvert/(?P<format>{FORMAT}){path_regex}"), KaleNbconvertFileHandler),
        ],
    )
    serverapp.log.info("kale_nbconvert: conversion errors of /nbconvert/%s/ answer %d with the notebook's cell and fix", FORMAT, STATUS)


def nbconvert_config(paths: list[str], log=None) -> Config:
    """``jupyter_nbconvert_config.py`` and ``.json`` from ``paths`` (highest priority
    first, as ``jupyter_core`` lists them), merged the way ``jupyter nbconvert`` merges
    them: lower-priority folders first, ``.json`` over ``.py`` in one folder."""
    merged = Config()
    for folder in reversed(paths):
        for loader_class, extension in ((PyFileConfigLoader, ".py"), (JSONFileConfigLoader, ".json")):
            if not os.path.isfile(os.path.join(folder, NBCONVERT_CONFIG + extension)):
                continue
            loader = loader_class(NBCONVERT_CONFIG + extension, path=folder, log=log)
            try:
                merged.merge(loader.load_config())
            except ConfigFileNotFound:
                continue
            except Exception as error:  # noqa: BLE001 - a broken user file: as nbconvert does, go on
                if log is not None:
                    log.error("kale_nbconvert: skipping %s: %s", os.path.join(folder, NBCONVERT_CONFIG + extension), error)
    return merged


class _KaleErrorPage:
    """What the two handlers below add to jupyter_server's: the exporter's config read
    as ``jupyter nbconvert`` reads it, and a KaleError answered with our page."""

    @property
    def config(self):
        server = super().config
        # Read on every export, as `jupyter nbconvert` reads it on every run: an edit
        # applies without restarting the server.
        merged = nbconvert_config(self.settings.get(CONFIG_PATHS) or _config_paths(), self.log)
        if server is not None:
            merged.merge(server)
        return merged

    def log_exception(self, typ, value, tb) -> None:
        # The handler has logged our one-line message already ("nbconvert failed"
        # goes through the exporter's short-error filter); tornado would add a second
        # line saying 500, which is not what the user gets.
        if _kale_error((typ, value, tb)) is None:
            super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs) -> None:
        error = _kale_error(kwargs.get("exc_info"))
        if error is None:
            super().write_error(status_code, **kwargs)
            return
        self.set_status(STATUS)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(error_page(error, (self.path_kwargs or {}).get("path", "").strip("/")))


class KaleNbconvertFileHandler(_KaleErrorPage, NbconvertFileHandler):
    """jupyter_server's nbconvert download handler (``GET /nbconvert/kale/PATH``), for
    the ``kale`` format only."""


class KaleNbconvertPostHandler(_KaleErrorPage, NbconvertPostHandler):
    """jupyter_server's nbconvert POST handler (``POST /nbconvert/kale`` with the
    notebook in the body), for the ``kale`` format only. The page names the notebook by
    the body's ``name`` (there is no path)."""

    def log_exception(self, typ, value, tb) -> None:
        # Unlike the download handler, the server's POST handler logs nothing before
        # it answers: say it once, on one line, as a GET does.
        error = _kale_error((typ, value, tb))
        if error is None:
            super().log_exception(typ, value, tb)
        else:
            self.log.error("nbconvert failed: %s", error)


def _config_paths() -> list[str]:
    from jupyter_core.paths import jupyter_config_dir, jupyter_config_path

    paths = jupyter_config_path()
    if jupyter_config_dir() not in paths:
        paths.insert(0, jupyter_config_dir())
    return paths


def _kale_error(exc_info) -> KaleError | None:
    """The KaleError behind the handler's ``HTTPError(500, ...) from error``."""
    error = exc_info[1] if exc_info else None
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KaleError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def error_page(error: KaleError, path: str = "") -> str:
    """The page a conversion error shows in JupyterLab's export tab (all text escaped)."""
    rows = []
    if isinstance(error, NotebookError):
        notebook = path or error.notebook
        rows.append(("Notebook", notebook))
        if error.cell is not None:
            cell = f"cell {error.cell}"
            if error.section and not error.step:
                cell += f" ({error.section})"
            rows.append(("Cell", cell))
        if error.step:
            rows.append(("Step", error.step))
        if error.line is not None:
            rows.append(("Line", f"line {error.line} of the cell"))
        rows.append(("Problem", error.message))
        if error.fix:
            rows.append(("Fix", error.fix))
    else:
        notebook = path
        rows.append(("Notebook", notebook))
        rows.append(("Problem", str(error)))
    table = "\n".join(
        f'<tr class="{html.escape(label.lower())}"><th>{html.escape(label)}</th>'
        f"<td>{html.escape(str(value))}</td></tr>"
        for label, value in rows
        if value
    )
    command = f"jupyter nbconvert --to kale {shlex.quote(notebook or 'NOTEBOOK.ipynb')}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(TITLE)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 50em; padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.4em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th {{ text-align: left; vertical-align: top; padding: 0.3em 1em 0.3em 0; white-space: nowrap; }}
td {{ padding: 0.3em 0; white-space: pre-wrap; }}
tr.fix td {{ font-weight: bold; }}
code, pre {{ background: #f4f4f4; padding: 0.1em 0.3em; }}
pre {{ padding: 0.6em; white-space: pre-wrap; }}
</style>
</head>
<body>
<h1>{html.escape(TITLE)}</h1>
<p>The Jupyter server is fine: something in the notebook stops it from becoming a
Kubeflow pipeline. Fix the notebook, save it, and export it again.</p>
<table>
{table}
</table>
<h2>Seeing more</h2>
<p>The whole message, on one line:</p>
<pre id="message">{html.escape(str(error))}</pre>
<p>In a terminal, <code>{html.escape(command)}</code> gives the same message
(add <code>--debug</code> for the traceback); so does the Jupyter server's log.
<code>--NameAnalysisPreprocessor.explain=True</code> (or
<code>c.NameAnalysisPreprocessor.explain = True</code> in
<code>jupyter_nbconvert_config.py</code>) also logs which step each variable comes
from.</p>
</body>
</html>
"""
