"""Issue 14: every step writes an HTML report of its cells and their outputs, as Jupyter
shows them (``Output[HTML]``, listed by the KFP UI), unless ``report:disabled``; and
``%matplotlib inline`` runs in a step. One real ``--local`` run carries most of it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import kale_nbconvert
from helpers import make_notebook, run_script, write_script, yaml_documents
from kale_nbconvert.errors import NotebookError
from kale_nbconvert.local_runs import load_run

pytest.importorskip("matplotlib")
pytest.importorskip("pandas")

NOTEBOOK = make_notebook([
    ("import numpy as np\nimport pandas as pd\nimport matplotlib.pyplot as plt", ["imports"]),
    ("%matplotlib inline\nprint('hello <world>')\ndata = [0]\n"
     "df = pd.DataFrame({'a': [1, 2]})\ndisplay(df)", ["step:make_plot"]),
    ("plt.plot([1, 2, 3])\nnp.int64(0)", ["step:make_plot"]),
    # an in-place change the analysis cannot see: a warning with --allow-divergence
    ('getattr(data, "app" + "end")(1)\nn = len(data)', ["step:change", "prev:make_plot"]),
    ("%matplotlib agg\nplt.plot([1])\ntotal = sum(data)\nprint('quiet ran')",
     ["step:quiet", "prev:make_plot", "report:disabled"]),
    ("%config InlineBackend.figure_format = 'svg'\nplt.plot([3, 2, 1]);",
     ["step:broken", "prev:change", "prev:quiet"]),
    ("print(n, total)\nn / 0", ["step:broken"]),
])


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reports")
    script = write_script(NOTEBOOK, folder, "nb.ipynb")
    result = run_script(script, "--local", "--allow-divergence")
    return folder, script, result, load_run(folder / "kale-local-runs")


@pytest.mark.slow
def test_a_report_shows_each_cell_with_its_outputs_as_jupyter_does(local_run):
    _, _, result, run = local_run
    output = result.stdout + result.stderr
    assert run.steps["make-plot"].status == "succeeded", output
    page = run.report("make_plot").read_text(encoding="utf-8")
    assert run.report("make_plot") == run.report("make-plot")  # the KFP name too
    assert run.report("make_plot").name == "report.html"
    assert "%matplotlib inline" in page  # the cell as written, not IPython's translation
    assert "hello &lt;world&gt;" in page and "<world>" not in page  # escaped
    assert '<table border="1" class="dataframe">' in page
    assert '<img alt="&lt;Figure size 640x480 with 1 Axes&gt;" src="data:image/png;base64,' in page
    assert page.index('id="cell-2"') < page.index("<table") < page.index('id="cell-3"') < page.index("<img")
    # a last value as Jupyter shows it, in the report and in the log
    assert "<pre>np.int64(0)</pre>" in page
    assert "  make-plot | np.int64(0)\n" in result.stdout
    assert "  make-plot | hello <world>\n" in result.stdout  # the log still gets the prints


@pytest.mark.slow
def test_a_failed_step_has_its_traceback_under_the_cell_and_warnings_on_top(local_run):
    _, _, result, run = local_run
    assert result.returncode == 1
    assert run.steps["broken"].status == "failed"
    page = run.report("broken").read_text(encoding="utf-8")
    assert 'class="failed">failed</span>' in page
    assert ">step 'broken' failed in nb.ipynb cell 7, step broken, line 2: ZeroDivisionError" in page
    cell = page[page.index('id="cell-7"'):]
    assert "<pre class=\"stdout\">2 0" in cell  # its print, then the error
    assert 'Traceback (most recent call last):\n  File "nb.ipynb cell 7, step broken", line 2' in cell
    assert "ZeroDivisionError: division by zero" in cell
    figure_cell = page[page.index('id="cell-6"'):page.index('id="cell-7"')]
    assert "<svg" in figure_cell  # %config InlineBackend.figure_format = 'svg'
    assert "Line2D" not in figure_cell  # the ';' after its last expression hides the value
    # a step's divergence warning is in its report, not only in the log
    warned = run.report("change").read_text(encoding="utf-8")
    assert "class=\"banner warning\">warning: step 'change' changed 'data' in place" in warned


@pytest.mark.slow
def test_report_disabled_writes_no_report_and_the_summary_lists_the_others(local_run):
    folder, script, result, run = local_run
    assert run.steps["quiet"].status == "succeeded", result.stderr
    assert "  quiet | quiet ran\n" in result.stdout  # %matplotlib agg ran, no window
    with pytest.raises(LookupError, match="has no report"):
        run.report("quiet")
    assert not any((run.path / "quiet").glob("report*"))
    summary = result.stdout[result.stdout.index("kale: summary\n"):].splitlines()
    assert summary[1].split() == ["step", "status", "time", "inputs", "outputs", "report"]
    rows = {line.split()[0]: line for line in summary[2:6]}
    assert rows["make-plot"].split()[-1].endswith("/make-plot/report.html")
    assert "data (list, " in rows["make-plot"]
    assert rows["quiet"].rstrip().endswith(" -") and "data (list, " in rows["quiet"]
    assert rows["broken"].split()[1] == "failed"
    assert "report" not in " ".join(line for line in result.stdout.splitlines() if line.startswith("["))
    manifest = json.loads((run.path / "kale-run.json").read_text(encoding="utf-8"))
    assert manifest["steps"]["quiet"]["report"] is None
    assert "report" not in manifest["steps"]["make-plot"]["outputs"]

    # the compiled pipeline declares the report as an HTML output (the KFP UI lists it),
    # and no report for the step that has none
    compiled = run_script(script)
    assert compiled.returncode == 0, compiled.stderr
    spec = yaml_documents(script.with_suffix(".yaml"))[0]
    artifacts = {name: comp.get("outputDefinitions", {}).get("artifacts", {})
                 for name, comp in spec["components"].items()}
    assert artifacts["comp-make-plot"]["report"]["artifactType"]["schemaTitle"] == "system.HTML"
    assert "report" not in artifacts["comp-quiet"]


def test_report_tags_per_step_and_in_steps_defaults():
    cells = [("x = 1", ["step:a", "report:enabled"]), ("y = x", ["step:b", "prev:a"])]
    pipeline = kale_nbconvert.plan(make_notebook(cells, {"steps_defaults": ["report:disabled"]}))
    assert [pipeline.steps[s].has_report for s in ("a", "b")] == [True, False]
    script = kale_nbconvert.convert(make_notebook(cells, {"steps_defaults": ["report:disabled"]}))
    assert script.count("report: Output[HTML]") == 1 and script.count("report=report") == 1
    with pytest.raises(NotebookError) as raised:
        kale_nbconvert.plan(make_notebook([("x = 1", ["step:a", "report:off"])]))
    assert raised.value.cell == 1
    assert "'report:off'" in str(raised.value) and "report:disabled" in raised.value.fix


def test_without_ipython_the_report_holds_text(tmp_path):
    """A container without IPython: display() prints repr, the page keeps the text."""
    page = tmp_path / "report.html"
    code = (
        "import sys\nsys.modules['IPython'] = None\n"
        "from kale_nbconvert.runtime import _kale_run_step\n"
        f"_kale_run_step('nb.ipynb', 'a', [(1, 'import numpy\\ndisplay(numpy.int64(3))\\n"
        f"x = \"<b>\"\\nx')], report={str(page)!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2:] == ["np.int64(3)", "'<b>'"]
    text = page.read_text(encoding="utf-8")
    assert "<pre class=\"stdout\">np.int64(3)\n'&lt;b&gt;'\n</pre>" in text


UPDATING_CELLS = [
    (1, "from IPython.display import HTML, display, update_display\n"
        "progress = display(HTML('<b>step 1 of 3</b>'), display_id=True)\n"
        "display(HTML('<i>kept</i>'), display_id='other')"),
    (2, "progress.update(HTML('<b>step 3 of 3</b>'))\n"
        "update_display(HTML('<u>nowhere</u>'), display_id='unknown')"),
]


def test_update_display_replaces_the_output_as_jupyter_does(tmp_path):
    """A progress display updated from a later cell shows its last state where it was
    first shown, once; an update of an id never shown shows nothing; others stay."""
    page = tmp_path / "report.html"
    code = (
        "from kale_nbconvert.runtime import _kale_run_step\n"
        f"_kale_run_step('nb.ipynb', 'a', {UPDATING_CELLS!r}, ipython=True, report={str(page)!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = page.read_text(encoding="utf-8")
    shown = '<div class="output">{}</div>'.format
    assert text.count(shown("<b>step 3 of 3</b>")) == 1 and shown("<b>step 1 of 3</b>") not in text
    assert text.index('id="cell-1"') < text.index(shown("<b>step 3 of 3</b>")) < text.index('id="cell-2"')
    assert shown("<i>kept</i>") in text and shown("<u>nowhere</u>") not in text


@pytest.mark.slow
def test_a_step_that_draws_nothing_gets_its_shell_on_the_first_display(tmp_path):
    """A shell costs about 30 ms a step: one whose code draws nothing gets it only when
    a value is displayed, and the report still shows what Jupyter would."""
    notebook = make_notebook([
        ("import pandas as pd", ["imports"]),
        ("print('In' in globals(), 'get_ipython' in globals())\nx = 1", ["step:plain"]),
        ("pd.DataFrame({'b': [x]})", ["step:table", "prev:plain"]),
        ("print('Out' in globals())", ["step:table"]),
    ])
    script = write_script(notebook, tmp_path, "lazy.ipynb")
    result = run_script(script, "--local")
    assert result.returncode == 0, result.stderr
    run = load_run(tmp_path / "kale-local-runs")
    plain = run.report("plain").read_text(encoding="utf-8")
    assert "False False" in plain and "<table" not in plain
    table = run.report("table").read_text(encoding="utf-8")
    assert '<table border="1" class="dataframe">' in table
    assert "  table | False\n" in result.stdout  # the namespace the cells always saw
