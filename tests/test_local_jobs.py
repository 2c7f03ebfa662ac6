"""--local --jobs N runs independent branches of the pipeline at once: each step starts
as soon as the steps it depends on have succeeded, at most N at a time, in threads
that call kfp.local's own per-task execution; --jobs 1 runs them one after another.

Concurrency is shown by what the steps see, not by wall time: two sibling steps each
leave a marker in a shared folder and wait for the other's. Run together, both see
the other's; run one after another, the first one gives up."""

from __future__ import annotations

import json
import re
import sys

import pytest

from helpers import make_notebook, run_script, write_script
from kale_nbconvert.local_runs import load_run

pytestmark = pytest.mark.slow

FORKS = sys.platform != "win32"  # elsewhere every step gets a fresh interpreter anyway


def _wait_for_sibling(me, other):
    """A step's cell: leave my marker, wait up to ``patience`` s for the sibling's."""
    return (
        f"{me}, {other} = names if names[0] == '{me}' else names[::-1]\n"
        f"open(os.path.join(marker_dir, {me}), 'w').close()\n"
        "deadline = time.monotonic() + patience\n"
        f"while not os.path.exists(os.path.join(marker_dir, {other})) and time.monotonic() < deadline:\n"
        "    time.sleep(0.02)\n"
        f"{me}_saw_sibling = os.path.exists(os.path.join(marker_dir, {other}))\n"
        f"{me}_forked = preloaded"
    )


# parent -> (left, right) -> join. 'wave' is a module nothing else imports: whether it
# is already imported when the imports cell starts tells a forked step from a fresh one.
SIBLINGS = make_notebook(
    [
        ("import os\nimport sys\nimport time\npreloaded = 'wave' in sys.modules\nimport wave",
         ["imports"]),
        ("marker_dir = ''\npatience = 20.0", ["pipeline-parameters"]),
        ("names = ['left', 'right']", ["step:parent"]),
        (_wait_for_sibling("left", "right"), ["step:left", "prev:parent"]),
        (_wait_for_sibling("right", "left"), ["step:right", "prev:parent"]),
        ("seen = [left_saw_sibling, right_saw_sibling]\nforked = [left_forked, right_forked]\n"
         "print('seen', seen, 'forked', forked)", ["step:join", "prev:left", "prev:right"]),
    ]
)


def _run_siblings(tmp_path, *args, patience=20.0):
    markers = tmp_path / "markers"
    markers.mkdir()
    script = write_script(SIBLINGS, tmp_path / "nb", "siblings.ipynb")
    result = run_script(script, "--local", "--param", f"marker_dir={markers}",
                        "--param", f"patience={patience}", *args, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = load_run(script.parent / "kale-local-runs")
    inputs = run.inputs("join")
    return result, run, [inputs["left_saw_sibling"], inputs["right_saw_sibling"]], \
        [inputs["left_forked"], inputs["right_forked"]]


def _progress(result):
    return [line for line in result.stdout.splitlines() if re.match(r"\[\d+/\d+\] ", line)]


def test_jobs_2_runs_sibling_steps_at_the_same_time(tmp_path):
    result, run, seen, forked = _run_siblings(tmp_path, "--jobs", "2")
    assert seen == [True, True]  # each found the other's marker while it waited
    assert forked == [FORKS, FORKS]  # both from the warm worker, at once
    assert "up to 2 at once" in result.stdout
    # one whole line per step, k counting the steps finished so far
    progress = _progress(result)
    assert [line.split("]")[0] for line in progress] == [f"[{k}/4" for k in range(1, 5)]
    assert all(re.fullmatch(r"\[\d/4\] \S+ +succeeded +\d+\.\d\d s( .*)?", line) for line in progress)
    assert progress[0].split()[1] == "parent" and progress[-1].split()[1] == "join"
    # each step's own output stays attributed to it, line by line
    assert "  join | seen [True, True]" in result.stdout
    assert list(run.steps) == ["parent", "left", "right", "join"]  # the manifest keeps its order


def test_jobs_1_runs_them_one_after_another(tmp_path):
    result, _, seen, _ = _run_siblings(tmp_path, "--jobs", "1", patience=1.0)
    # the first to run gave up waiting; the second found the first's marker
    assert sorted(seen) == [False, True]
    assert "at once" not in result.stdout


def test_isolated_with_jobs_2_gives_each_step_a_fresh_interpreter_at_the_same_time(tmp_path):
    _, run, seen, forked = _run_siblings(tmp_path, "--isolated", "--jobs", "2")
    assert seen == [True, True]
    assert forked == [False, False]
    assert {step.status for step in run.steps.values()} == {"succeeded"}


# a -> (bad -> after), a -> good, a -> worse: two failing branches and an independent one
FAILING_BRANCH = make_notebook(
    [
        ("numbers = [1, 2, 3]", ["step:a"]),
        ("ratio = sum(numbers) / 0", ["step:bad", "prev:a"]),
        ("doubled = ratio * 2", ["step:after", "prev:bad"]),
        ("total = sum(numbers)\nprint('good total', total)", ["step:good", "prev:a"]),
        ("numbers[7]", ["step:worse", "prev:a"]),
    ]
)


def _run_failing(tmp_path, jobs):
    script = write_script(FAILING_BRANCH, tmp_path / f"jobs{jobs}", "branches.ipynb")
    result = run_script(script, "--local", "--jobs", str(jobs), timeout=300)
    folder = script.parent / "kale-local-runs"
    manifest = json.loads(next(folder.glob("*/kale-run.json")).read_text())
    return result, manifest


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failing_branch_stops_only_its_descendants_whatever_the_jobs(tmp_path, jobs):
    """A run goes as far as it can, the same way every time and for every --jobs: the
    failed steps' descendants do not run, every other step does, and the summary
    names each failure (kfp.local's own loop stopped at the first, in an order that
    changes from run to run)."""
    result, manifest = _run_failing(tmp_path, jobs)
    statuses = {name: step["status"] for name, step in manifest["steps"].items()}
    assert result.returncode == 1 and manifest["status"] == "failed"
    assert statuses == {"a": "succeeded", "bad": "failed", "after": "not run",
                        "good": "succeeded", "worse": "failed"}
    assert list(statuses) == ["a", "bad", "after", "good", "worse"]  # notebook order
    assert "kale: step 'bad' failed in branches.ipynb cell 2, step bad, line 1: ZeroDivisionError" \
        in result.stderr
    assert "kale: step 'worse' failed in branches.ipynb cell 5, step worse, line 1: IndexError" \
        in result.stderr
    assert "  good | good total 6" in result.stdout
    if jobs == 1:  # one after another, in the same order every time
        assert [line.split()[1] for line in _progress(result)] == ["a", "bad", "good", "worse"]


def test_a_crashing_step_fails_alone_while_its_sibling_runs(tmp_path):
    """Two children of the warm worker at once: one kills its interpreter, the other
    (which waits to see it start, so they overlap) still succeeds."""
    markers = tmp_path / "markers"
    markers.mkdir()
    nb = make_notebook(
        [
            ("import os\nimport time", ["imports"]),
            ("marker_dir = ''", ["pipeline-parameters"]),
            ("folder = marker_dir", ["step:start"]),
            ("open(os.path.join(folder, 'crash'), 'w').close()\nos._exit(3)",
             ["step:crash", "prev:start"]),
            ("deadline = time.monotonic() + 20\n"
             "while not os.path.exists(os.path.join(folder, 'crash')) and time.monotonic() < deadline:\n"
             "    time.sleep(0.02)\n"
             "saw_crash = os.path.exists(os.path.join(folder, 'crash'))",
             ["step:survivor", "prev:start"]),
        ]
    )
    script = write_script(nb, tmp_path / "nb", "crash.ipynb")
    result = run_script(script, "--local", "--jobs", "2", "--param", f"marker_dir={markers}",
                        timeout=300)
    assert result.returncode == 1
    run = load_run(script.parent / "kale-local-runs")
    assert {name: step.status for name, step in run.steps.items()} == {
        "start": "succeeded", "crash": "failed", "survivor": "succeeded"}


@pytest.mark.parametrize("value", ["0", "-1", "x", "2.5"])
def test_a_bad_jobs_value_is_a_usage_error(tmp_path, value):
    script = write_script(SIBLINGS, tmp_path, "siblings.ipynb")
    result = run_script(script, "--local", "--jobs", value)
    assert result.returncode == 2
    assert f"argument --jobs: {value!r}: give the number of steps to run at once" in result.stderr
    assert "1 or more" in result.stderr
    assert not (tmp_path / "kale-local-runs").exists()


def test_jobs_applies_to_local_runs_only(tmp_path):
    script = write_script(SIBLINGS, tmp_path, "siblings.ipynb")
    result = run_script(script, "--jobs", "2")
    assert result.returncode == 2
    assert "--jobs applies to --local runs" in result.stderr
    assert "--jobs N" in run_script(script, "--help").stdout
