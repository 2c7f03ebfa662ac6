"""The step's HTML report. Runs INSIDE a pipeline step (in-step part of the script).

In a notebook you see each cell's prints, tables and plots under it; in a pipeline you
see a log. A step with a report (``report: Output[HTML]``, on unless
``report:disabled``) also writes one self-contained HTML page that the KFP UI lists
with the step's outputs: its cells in order, each with its outputs as Jupyter shows
them, then whatever the step printed after its cells (divergence warnings, a failure to
hand on a value). A failing step writes it too, with the traceback under its cell,
before it exits non-zero.

No kernel: ``sys.stdout``/``sys.stderr`` are teed (the log still gets every line, live)
and rich outputs come from IPython's own display machinery in-process: the step's
shell (``step.py``'s ``_kale_shell``) formats with its ``DisplayFormatter`` and
publishes to a publisher that calls ``_kale_report_display``. Without IPython in the
container the page holds text only: ``display()`` prints ``repr``, which the tee keeps.

The recorder is a plain dict (the rules of ``kale_nbconvert/embedded/``: functions
only): ``cells`` ``[{number, code, shared, seconds, outputs}]``, the ``cell`` being
run, ``log`` (outputs outside the cells) and the original streams. An output is
``(kind, value, metadata)``: ``stdout``/``stderr`` with a list of text chunks,
``display`` with a mime bundle, ``error`` with a traceback.
"""


def _kale_report_start(artifact):
    """Start recording the step's outputs for the report ``artifact`` (a KFP ``HTML``
    output or a bare path): tee stdout and stderr until ``_kale_report_finish``."""
    import sys
    import time

    recorder = {
        "path": getattr(artifact, "path", artifact), "cells": [], "cell": None, "log": [],
        "stdout": sys.stdout, "stderr": sys.stderr, "began": time.perf_counter(),
        "room": 20_000_000, "dropped": 0, "failure": None,
    }

    class Tee:
        """A stream that writes to the log as before and keeps a copy for the report;
        everything else (``fileno``, ``encoding``...) is the original stream's."""

        def __init__(self, stream, name):
            self._kale_stream, self._kale_name = stream, name

        def write(self, text):
            written = self._kale_stream.write(text)
            if isinstance(text, str):
                _kale_report_add(recorder, self._kale_name, text)
            return written

        def writelines(self, lines):
            for line in lines:
                self.write(line)

        def __getattr__(self, name):
            return getattr(self._kale_stream, name)

    sys.stdout, sys.stderr = Tee(sys.stdout, "stdout"), Tee(sys.stderr, "stderr")
    return recorder


def _kale_report_cell(recorder, number, code=None, shared=False):
    """From now on outputs belong to cell ``number`` (None: to the step, after its
    cells); the cell before it gets its duration."""
    import time

    if recorder is None:
        return
    now = time.perf_counter()
    if recorder["cell"] is not None:
        recorder["cell"]["seconds"] = now - recorder["cell"]["began"]
    recorder["cell"] = None
    if number is not None:
        recorder["cell"] = {"number": number, "code": code, "shared": shared, "began": now,
                            "seconds": None, "outputs": []}
        recorder["cells"].append(recorder["cell"])


def _kale_report_add(recorder, kind, value, metadata=None):
    """Record one output in the current cell (or the step's own, between cells): text of
    a stream, merged with the text before it as Jupyter does, a mime bundle or a
    traceback. Past ``room`` characters the rest is only counted (a step that prints
    gigabytes must not fill its memory or the page)."""
    if recorder is None or not value:
        return
    outputs = recorder["log"] if recorder["cell"] is None else recorder["cell"]["outputs"]
    size = len(value) if isinstance(value, str) else sum(
        len(v) for v in value.values() if isinstance(v, (str, bytes)))
    if size > recorder["room"]:
        recorder["dropped"] += size
        return
    recorder["room"] -= size
    if kind in ("stdout", "stderr"):
        if outputs and outputs[-1][0] == kind:
            outputs[-1][1].append(value)
            return
        value = [value]
    outputs.append((kind, value, metadata or {}))


def _kale_report_display(recorder, data, metadata=None, display_id=None, update=False):
    """What a ``display()`` (or a cell's last value, or a figure) published: its plain
    text goes to the log, as a terminal IPython shows it, and the bundle to the report.
    ``update_display(obj, display_id=...)`` (``update``) replaces, as in Jupyter, every
    output shown with that id, wherever it is, and shows nothing where there is none."""
    import sys

    text = data.get("text/plain")
    if text is not None:
        print(text, file=sys.stdout if recorder is None else recorder["stdout"], flush=True)
    if recorder is None:
        return
    if update:
        places = [recorder["log"]] + [cell["outputs"] for cell in recorder["cells"]]
        for outputs in places:
            for index, (kind, _, shown) in enumerate(outputs):
                if kind == "display" and display_id is not None and shown.get("display_id") == display_id:
                    outputs[index] = (kind, dict(data), dict(metadata or {}, display_id=display_id))
        return
    if display_id is not None:
        metadata = dict(metadata or {}, display_id=display_id)
    _kale_report_add(recorder, "display", dict(data), metadata)


def _kale_report_clear(recorder):
    """``clear_output()``: the current cell's outputs so far are dropped."""
    if recorder is not None and recorder["cell"] is not None:
        recorder["cell"]["outputs"].clear()


def _kale_report_error(recorder, traceback_text, summary):
    """A cell failed: its traceback goes under it, the one-line summary on top."""
    if recorder is not None:
        recorder["failure"] = summary
        _kale_report_add(recorder, "error", traceback_text)


def _kale_report_finish(recorder, notebook, step):
    """Stop the tee and write the page. Never raises: a report that cannot be written
    is said in the log, and the step goes on as it would have without it."""
    import os
    import sys

    if recorder is None:
        return
    sys.stdout, sys.stderr = recorder["stdout"], recorder["stderr"]
    _kale_report_cell(recorder, None)
    try:
        page = _kale_report_page(recorder, notebook, step)
        folder = os.path.dirname(recorder["path"])
        if folder:
            os.makedirs(folder, exist_ok=True)
        with open(recorder["path"], "w", encoding="utf-8") as handle:
            handle.write(page)
    except Exception as error:  # noqa: BLE001 - the report must not fail the step
        print(f"kale: warning: could not write the report of step {step!r}: {error}",
              file=sys.stderr, flush=True)


def _kale_report_page(recorder, notebook, step):
    """The report as one HTML page: a header (status, failure, warnings), every cell
    with its outputs, then what the step printed after its cells. Every text from the
    step is escaped; only the HTML and SVG it displayed are kept as markup."""
    import html
    import time

    lines = "".join(
        "".join(value) for kind, value, _ in recorder["log"] if kind in ("stdout", "stderr")
    ).splitlines()
    # the runtime's own lines, read as the command line reads them (local_run.py)
    warning = "kale: warning: "
    warnings = [line[len(warning):] for line in lines if line.startswith(warning)]
    failed = [line for line in lines if line.startswith("kale: step ") and " failed" in line]
    failure = recorder["failure"] or (failed[-1] if failed else None)
    rest = "\n".join(line for line in lines
                     if not line.startswith(warning) and line not in failed).strip()
    status = "failed" if failure else "succeeded"
    own = ", ".join(str(cell["number"]) for cell in recorder["cells"] if not cell["shared"])
    parts = [
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>Step {html.escape(step, False)} ({html.escape(notebook, False)})</title>\n"
        "<style>\n"
        "body{font:14px/1.45 system-ui,sans-serif;color:#1f2328;max-width:72em;"
        "margin:1em auto;padding:0 1em}\n"
        "h1{font-size:1.3em;margin:.2em 0} .meta{color:#656d76;margin:0 0 1em}\n"
        ".succeeded{color:#1a7f37} .failed{color:#cf222e}\n"
        ".banner{padding:.5em .8em;margin:.5em 0;border-radius:4px;white-space:pre-wrap}\n"
        ".banner.failed{background:#ffebe9;color:#82071e} .banner.warning{background:#fff8c5}\n"
        "section{border-top:1px solid #d0d7de;padding:.4em 0}\n"
        "summary,.cell{color:#656d76;font-size:12px} summary{cursor:pointer}\n"
        "pre{margin:.3em 0;padding:.4em .6em;white-space:pre-wrap;word-break:break-word;"
        "font:12.5px/1.4 ui-monospace,Menlo,Consolas,monospace}\n"
        "pre.code{background:#f6f8fa} pre.stderr{background:#fff1f0}\n"
        "pre.error{background:#ffebe9;color:#82071e}\n"
        ".output{margin:.3em 0;overflow-x:auto} img{max-width:100%}\n"
        "table{border-collapse:collapse;font-size:12.5px}"
        " th,td{padding:.2em .6em;border:1px solid #d0d7de;text-align:right}\n"
        "</style></head><body>\n",
        f'<h1>Step {html.escape(step, False)} <span class="{status}">{status}</span></h1>\n'
        f'<p class="meta">{html.escape(notebook, False)}, cell{"s" if "," in own else ""} '
        f"{own}: {time.perf_counter() - recorder['began']:.2f} s, "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}</p>\n",
    ]
    if failure:
        failure = failure[len("kale: "):] if failure.startswith("kale: ") else failure
        parts.append(f'<div class="banner failed">{html.escape(failure, False)}</div>\n')
    for text in warnings:
        parts.append(f'<div class="banner warning">warning: {html.escape(text, False)}</div>\n')
    for cell in recorder["cells"]:
        head = f"cell {cell['number']}" + (" (shared: imports, functions)" if cell["shared"] else "")
        if cell["seconds"] is not None:
            head += f" ({cell['seconds']:.2f} s)"
        code = html.escape(_kale_report_source(cell["code"]), False)
        body = f'<pre class="code">{code}</pre>\n' + "".join(
            _kale_report_output(*output) for output in cell["outputs"])
        if cell["shared"]:  # the same in every step: folded unless it showed something
            shown = " open" if cell["outputs"] else ""
            parts.append(f"<section><details{shown}><summary>{head}</summary>\n{body}"
                         "</details></section>\n")
        else:
            parts.append(f'<section id="cell-{cell["number"]}"><div class="cell">{head}</div>\n'
                         f"{body}</section>\n")
    if rest:
        parts.append('<section><div class="cell">after the cells</div>\n'
                     + _kale_report_output("stdout", [rest], {}) + "</section>\n")
    if recorder["dropped"]:
        parts.append(f'<p class="meta">{recorder["dropped"]:,} more characters of output are '
                     "left out of this page: see the step's log.</p>\n")
    return "".join(parts) + "</body></html>\n"


def _kale_report_source(code):
    """A cell's code as the notebook shows it: the step runs IPython's translation of
    its magics (``get_ipython().run_line_magic('matplotlib', 'inline')``), the page
    shows ``%matplotlib inline`` again (and ``!cmd``, ``%%magic``)."""
    import ast
    import re

    def source(match):
        indent, head, call, arguments = match.groups(default="")
        try:
            values = ast.literal_eval(f"({arguments},)")
        except (ValueError, SyntaxError):
            return match.group(0)
        if call == "run_line_magic" and len(values) == 2:
            return f"{indent}{head}%{values[0]} {values[1]}".rstrip()
        if call in ("system", "getoutput") and len(values) == 1:
            return f"{indent}{head}!{values[0]}"
        if call == "run_cell_magic" and len(values) == 3 and not indent and not head:
            return f"%%{values[0]} {values[1]}".rstrip() + "\n" + values[2].rstrip("\n")
        return match.group(0)

    calls = "run_line_magic|system|getoutput|run_cell_magic"
    pattern = rf"(?m)^([ \t]*)(\w+ = )?get_ipython\(\)\.({calls})\((.*)\)[ \t]*$"
    return re.sub(pattern, source, code or "")


def _kale_report_output(kind, value, metadata):
    """One output as HTML: the richest form of a display that a page can show on its
    own (HTML, Markdown, SVG, PNG, JPEG, else the text), streams and tracebacks as
    escaped text, carriage returns resolved as a terminal would (progress bars)."""
    import base64
    import html
    import re

    if kind != "display":
        text = "".join(value) if kind in ("stdout", "stderr") else value
        text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)  # colours
        lines = [next((part for part in reversed(line.split("\r")) if part), "")
                 for line in text.split("\n")]
        return f'<pre class="{kind}">{html.escape(chr(10).join(lines), False)}</pre>\n'
    if isinstance(value.get("text/html"), str):
        return f'<div class="output">{value["text/html"]}</div>\n'
    if isinstance(value.get("text/markdown"), str):
        try:
            import mistune

            return f'<div class="output">{mistune.html(value["text/markdown"])}</div>\n'
        except Exception:  # noqa: BLE001 - no (or another) Markdown library: its text
            return f"<pre>{html.escape(value['text/markdown'], False)}</pre>\n"
    if isinstance(value.get("image/svg+xml"), str):
        return f'<div class="output">{value["image/svg+xml"]}</div>\n'
    for mime in ("image/png", "image/jpeg"):
        data = value.get(mime)
        if not data or not isinstance(data, (bytes, str)):
            continue
        if isinstance(data, bytes):
            data = base64.b64encode(data).decode("ascii")
        width = (metadata.get(mime) if isinstance(metadata.get(mime), dict) else {}).get("width")
        width = f' width="{int(width)}"' if isinstance(width, (int, float)) else ""
        alt = html.escape(str(value.get("text/plain", mime)))
        data = html.escape("".join(data.split()))
        return f'<div class="output"><img{width} alt="{alt}" src="data:{mime};base64,{data}"></div>\n'
    text = value.get("text/plain") or value.get("text/latex") or ""
    return f"<pre>{html.escape(str(text), False)}</pre>\n" if text else ""
