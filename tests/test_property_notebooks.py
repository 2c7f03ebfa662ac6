"""Property: ANY notebook either fails with one clean NotebookError, or becomes a
script that parses, embeds every cell byte-exact, runs none of the notebook's text on
import, and compiles with kfp.

Hypothesis generates notebooks from arbitrary cell text (quotes, backslashes, Jinja
delimiters, CR/LF, control and non-ASCII characters, magics, injection attempts), tags
(valid, misspelt, colliding, hostile) and ``kubeflow_notebook`` metadata.

Profiles (``KALE_HYPOTHESIS_PROFILE``): ``kale-ci`` (the default, what ``make test``
runs): 2,000 notebooks, every 10th script compiled with kfp in-process; ``kale-dev``: 200.
"""

from __future__ import annotations

import ast
import itertools
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import compile_script_in_process, convert, embedded_cells, make_notebook
from kale_nbconvert.errors import NotebookError
from kale_nbconvert.magics import ipython_to_python
from kale_nbconvert.model import RESOURCE_KEY

settings.register_profile(
    "kale-ci",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "kale-dev",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = settings.get_profile(
    os.environ.get(
        "KALE_HYPOTHESIS_PROFILE",
        "kale-ci" if os.environ.get("KALE_TEST_PROFILE") == "exhaustive" else "kale-dev",
    )
)
COMPILE_EVERY = 10

CANARY_DIR = Path(tempfile.mkdtemp(prefix="kale-canary-"))
CANARY = CANARY_DIR / "pwned"
ATTACK = f"__import__('pathlib').Path({str(CANARY)!r}).write_text('x')"

FRAGMENTS = [
    "'''", '"""', "'", '"', "\\", "\\n", "{{", "}}", "{%", "%}", "{#", "#}", "\r", "\n",
    "\r\n", "\t", "\x00", "\x1b[31m", "\u2028", "\ufeff", "\U0001f600", "é", "#", ")", "(",
    "%time ", "!ls ", "?", ";", ATTACK, f"'''\n{ATTACK}\n'''", f'"""{ATTACK}"""',
    "\\'''", "{{ resources }}", "{% raw %}", "__import__('os')", ":", " ",
]
GOOD_NAMES = ["a", "b", "c", "train", "b1", "a_b"]
BAD_NAMES = ["a__b", "_a", "class", "print", "local", "A", "1a", "build_pipeline",
             "a_component", "a-b", "", "pipeline_metrics", "_"]

hostile_text = st.lists(
    st.one_of(st.text(max_size=12), st.sampled_from(FRAGMENTS)), max_size=6
).map("".join)
names = st.one_of(*[st.sampled_from(GOOD_NAMES)] * 12, st.sampled_from(BAD_NAMES))


@st.composite
def cell_source(draw, index):
    var = f"v{index}"
    kind = draw(st.integers(0, 13))
    text = draw(hostile_text)
    if kind > 7:  # most cells are valid Python with hostile text in strings/comments
        kind = kind % 4
    if kind == 0:
        return f"{var} = {text!r}"
    if kind == 1:
        return f"{var} = 1  # {text}"
    if kind == 2:
        return f"{var} = {index}\n{var} += len({text!r})\n"
    if kind == 3:
        previous = f"v{draw(st.integers(0, max(index - 1, 0)))}"
        return f"{var} = [{previous}, {text!r}]"
    if kind == 4:
        return f"{var} = '''{text}'''"
    if kind == 5:
        return f"def f{index}(x={text!r}):\n\treturn x\r\n{var} = f{index}()"
    if kind == 6:
        return text  # arbitrary text: mostly a syntax error, sometimes not
    return f"{var} = {index}\n%time {var} = {var} + 1\n!echo {text.splitlines()[0] if text.strip() else 'x'}"


@st.composite
def cell_tags(draw):
    kind = draw(st.integers(0, 17))
    if kind > 11:
        return [f"step:{draw(names)}"] + [f"prev:{draw(names)}"] * (kind % 2)
    if kind <= 3:
        return [f"step:{draw(names)}"]
    if kind == 4:
        return [f"step:{draw(names)}", f"prev:{draw(names)}"]
    if kind == 5:
        return [f"block:{draw(names)}", f"annotation:note:{draw(hostile_text)}"]
    if kind == 6:
        return []
    if kind == 7:
        return [draw(st.sampled_from(["imports", "functions", "skip", "pipeline-metrics"]))]
    if kind == 8:
        return [draw(hostile_text)]
    if kind == 9:
        return [f"step:{draw(names)}", f"label:{draw(hostile_text)}:{draw(hostile_text)}"]
    if kind == 10:
        return [f"step:{draw(names)}", draw(st.sampled_from(["limit:cpu:1", "limit:memory:2Gi", "limit:cpu:x", "label:team:ml"]))]
    return draw(st.lists(st.one_of(st.text(max_size=8), st.integers(), st.none()), max_size=2))


@st.composite
def parameters_cell(draw):
    values = st.one_of(
        st.integers(-(2**60), 2**60), st.floats(), st.booleans(), hostile_text, hostile_text,
        st.lists(st.integers(), max_size=3), st.dictionaries(hostile_text, st.integers(), max_size=2),
        st.none(),
    )
    lines = [f"p{i} = {draw(values)!r}" for i in range(draw(st.integers(1, 3)))]
    return "\n".join(lines)


@st.composite
def notebooks(draw):
    cells = []
    count = draw(st.integers(1, 6))
    for index in range(count):
        roll = draw(st.integers(0, 19))
        if roll == 0:
            cells.append(("markdown", draw(hostile_text)))
            continue
        if roll == 1:
            cells.append((draw(parameters_cell()), ["pipeline-parameters"]))
            continue
        source = draw(cell_source(index))
        tags = [f"step:{draw(names)}"] if index == 0 and roll < 19 else draw(cell_tags())
        cells.append((source, tags))
    metadata = draw(
        st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {},
                optional={
                    "pipeline_name": hostile_text,
                    "pipeline_description": hostile_text,
                    "docker_image": hostile_text,
                    "experiment_name": hostile_text,
                    "kfp_host": hostile_text,
                    "steps_defaults": st.lists(st.sampled_from(["label:team:ml", "limit:cpu:1"]) | hostile_text.map(lambda t: f"annotation:k:{t}"), max_size=2),
                    "autosnapshot": st.booleans(),
                    "unknown_key": hostile_text,
                },
            ),
        )
    )
    name = draw(st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=12))
    return make_notebook(cells, metadata), name + ".ipynb"


def compile_with_kfp(script: str) -> None:
    """Write the generated module to a file (kfp needs its source) and compile it."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "generated.py"
        path.write_text(script, encoding="utf-8")
        assert compile_script_in_process(path).stat().st_size > 0


_scripts = itertools.count(1)
STATS = {"examples": 0, "errors": 0, "scripts": 0, "compiled": 0}


@settings(PROFILE)
@given(notebooks())
def test_any_notebook_gives_a_clean_error_or_a_faithful_script(case):
    nb, name = case
    STATS["examples"] += 1
    try:
        script, resources = convert(nb, name)
    except NotebookError as error:
        message = str(error)
        assert message and "\n" not in message and "\r" not in message, message
        assert message.startswith(error.location)
        assert error.fix
        assert not CANARY.exists()
        STATS["errors"] += 1
        return
    assert not CANARY.exists()
    STATS["scripts"] += 1
    script.encode("utf-8")  # the writer can write it
    tree = ast.parse(script)
    compile(tree, "generated.py", "exec")
    embedded = embedded_cells(tree)
    pipeline = resources[RESOURCE_KEY]
    included = pipeline.shared_cells + [c for s in pipeline.steps.values() for c in s.cells]
    assert included, "a script without any cell"
    for cell in included:
        source = nb.cells[cell.number - 1].source
        assert cell.source == source
        assert cell.code == ipython_to_python(source)
        assert cell.code in embedded.get(cell.number, []), f"cell {cell.number} not embedded exactly"
    if next(_scripts) % COMPILE_EVERY == 1:  # the 1st, 21st, 41st, ... script
        compile_with_kfp(script)
        STATS["compiled"] += 1
        assert not CANARY.exists()


def teardown_module():
    print(f"\nproperty test: {STATS}")
