"""Notebooks tagged for Kale convert unchanged (issue 11).

Each class of what Kale accepts has its own small notebook here, written for this test:
step names Kale's grammar allows (builtins, keywords, the script's own names), Rok-era
metadata (``clone`` volumes, snapshots), a pipeline parameter in ``pipeline-metrics``,
an empty ``block:`` tag, Kale's tag precedence (``skip`` and the sections win), the
``parameters`` tag. What stays an error says so clearly, and every fix a message
suggests is followed here: the conversion then succeeds, or at least that error does
not come back. Last, every notebook the Kale project published that sits in
``../shared/kale-notebooks`` converts and compiles, and each warning names its cell or
metadata key and what was done.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

import helpers
from helpers import compiled_documents, convert, make_notebook, run_script, write_script, yaml_documents
from kale_nbconvert.errors import NotebookError
from kale_nbconvert.local_runs import load_run
from kale_nbconvert.model import RESOURCE_KEY
from kale_nbconvert.script_context import SCRIPT_GLOBALS, embedded_names, generated_names
from kale_nbconvert.tags import kfp_name

KALE_NOTEBOOKS = Path(__file__).resolve().parents[2] / "shared" / "kale-notebooks"


def plan(nb, name="nb.ipynb"):
    """Convert; returns (script, pipeline model)."""
    script, resources = convert(nb, name)
    return script, resources[RESOURCE_KEY]


def error_of(nb, name="nb.ipynb") -> NotebookError:
    with pytest.raises(NotebookError) as caught:
        convert(nb, name)
    message = str(caught.value)
    assert "\n" not in message and caught.value.fix, message
    return caught.value


def tasks_of(documents: list[dict]) -> set[str]:
    return set(documents[0]["root"]["dag"]["tasks"])


def suggested_tags(fix: str) -> list[str]:
    """The tags a fix suggests (``'prev:load'``), in order."""
    return re.findall(r"'((?:step|block|prev):[_a-z0-9]+)'", fix)


def retag(nb, index: int, old: str, new: str | None):
    """A copy of ``nb`` with tag ``old`` of cell ``index`` replaced (None: removed)."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    tags = nb.cells[index].metadata["tags"]
    position = tags.index(old)
    if new is None:
        del tags[position]
    else:
        tags[position] = new
    return nb


# -- 1. step names Kale accepts ------------------------------------------------------

NAMES = ["sum", "eval", "os", "input", "filter", "type", "pipeline", "class", "match", "dsl",
         "main", "build_pipeline", "local", "print", "sys", "a", "a_step", "a_component",
         "_kale_run", "pipeline_metrics"]


def _chain(names, metrics=True):
    cells = [("n = 2", ["pipeline-parameters"]), ("x0 = n", [f"step:{names[0]}"])]
    for index, name in enumerate(names[1:], 1):
        cells.append((f"x{index} = x{index - 1} + 1", [f"step:{name}", f"prev:{names[index - 1]}"]))
    if metrics:
        cells.append((f"print(x{len(names) - 1})", ["pipeline-metrics"]))
    return make_notebook(cells)


@pytest.mark.slow
def test_any_step_name_of_the_grammar_converts_compiles_and_runs(tmp_path):
    script = write_script(_chain(NAMES), tmp_path, "names.ipynb")
    spec = compiled_documents(script)
    # The KFP task (and component) is named after the step, not after its function.
    assert {kfp_name(name) for name in NAMES} <= tasks_of(spec)
    assert not any(task.endswith("-step") and task != "a-step" for task in tasks_of(spec))
    # The user's step 'pipeline_metrics' keeps its name; the metrics step takes another.
    assert "pipeline-metrics-2" in tasks_of(spec)
    result = run_script(script, "--local")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = load_run(tmp_path / "kale-local-runs")
    assert set(run.steps) == {kfp_name(name) for name in NAMES} | {"pipeline-metrics-2"}
    assert run.outputs("class") == {"x7": 9}
    assert run.output("_kale_run", "x18") == 20  # the step name as tagged works too
    assert (run.path / "build-pipeline").is_dir()  # the run folder of the step
    assert run.metrics() == {"x19": 21.0}


def test_a_step_named_like_a_builtin_does_not_shadow_it(tmp_path):
    """``print``, ``sum`` and ``os`` as step names: the steps still use the real ones."""
    nb = make_notebook([
        ("import os", ["imports"]),
        ("total = sum([1, 2])\nprint(total)", ["step:sum"]),
        ("where = os.path.join('a', str(total))\nprint(where)", ["step:print", "prev:sum"]),
        ("done = len(where)", ["step:os", "prev:print"]),
    ])
    script = write_script(nb, tmp_path, "builtins.ipynb")
    tree = ast.parse(script.read_text(encoding="utf-8"))
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert {"sum_step", "print_step", "os_step"} <= functions
    assert not {"sum", "print", "os"} & functions
    assert tasks_of(compiled_documents(script)) == {"sum", "print", "os"}


def test_generated_identifiers_never_collide(tmp_path):
    nb = make_notebook([
        ("a_task = 1\nbuild_pipeline_step = 2", ["pipeline-parameters"]),
        ("x = a_task + build_pipeline_step", ["step:a"]),
        ("y = x", ["step:a_step", "prev:a"]),
        ("z = y", ["step:a_step_step", "prev:a_step"]),
        ("w = z", ["step:build_pipeline", "prev:a_step_step"]),
        ("v = w", ["step:_kale_run", "prev:build_pipeline"]),
        ("u = v", ["step:_kale", "prev:_kale_run"]),
    ], metadata={"volumes": [
        {"name": "my-data", "mount_point": "/a", "type": "new_pvc", "size": 1, "size_type": "Gi"},
        {"name": "my_data", "mount_point": "/b", "type": "new_pvc", "size": 1, "size_type": "Gi"},
    ]})
    _, pipeline = plan(nb)
    names = generated_names(pipeline)
    identifiers = [names.pipeline_function, *names.volumes]
    for own in names.steps.values():
        identifiers += [own.function, own.component, own.task]
    assert len(identifiers) == len(set(identifiers))
    fixed = SCRIPT_GLOBALS | embedded_names() | set(pipeline.parameters)
    assert not fixed & set(identifiers)
    assert names.steps["a"].task == "a_task_2"  # the parameter 'a_task' keeps its name
    assert names.steps["_kale_run"].function == "_kale_run_step_2"  # the runtime's is kept
    spec = compiled_documents(write_script(nb, tmp_path, "collide.ipynb"))
    assert tasks_of(spec) == {kfp_name(name) for name in pipeline.steps} | {"createpvc", "createpvc-2"}


def test_parameters_named_like_the_scripts_own_names_work(tmp_path):
    """A notebook may call its parameters ``local``, ``kubernetes``, ``dsl`` or ``sys``:
    they are the pipeline function's arguments, and where its body needs
    ``build_pipeline``'s ``local`` or the kubernetes module it says them by another
    name. The values reach the steps, the volume and the label reach the YAML."""
    nb = make_notebook([
        ("import math", ["imports"]),
        ("local = 2\nkubernetes = 3\ndsl = 'x'\nsys = 5\nmetrics = True", ["pipeline-parameters"]),
        ("total = local + kubernetes + sys\nlabel = dsl * 2", ["step:first", "label:team:ml"]),
        ("score = total * 1.5 if metrics else 0.0\nprint(label)", ["step:second", "prev:first"]),
        ("print(score)\nprint(local)", ["pipeline-metrics"]),
    ], metadata={"volumes": [{"name": "data", "mount_point": "/data", "type": "new_pvc",
                              "size": 1, "size_type": "Gi"}]})
    script = write_script(nb, tmp_path, "params.ipynb")
    spec, platform = compiled_documents(script)
    assert "createpvc" in tasks_of([spec]) and "/data" in json.dumps(platform)
    assert '"team"' in json.dumps(platform)
    result = run_script(script, "--local", "--param", "dsl=yz")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = load_run(tmp_path / "kale-local-runs")
    assert run.outputs("first") == {"total": 10, "label": "yzyz"}
    assert run.metrics() == {"score": 15.0, "local": 2.0}


def test_the_script_defines_no_global_the_names_do_not_know(tmp_path):
    """``SCRIPT_GLOBALS`` must list what the template defines at module level, or a
    step function could silently replace one."""
    script = write_script(_chain(["a", "b"]), tmp_path, "globals.ipynb")
    tree = ast.parse(script.read_text(encoding="utf-8"))
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, ast.Assign):
            defined |= {t.id for target in node.targets for t in ast.walk(target) if isinstance(t, ast.Name)}
    known = SCRIPT_GLOBALS | embedded_names()
    steps = {"a_step", "b_step", "pipeline_metrics_step"}
    assert defined - known == steps
    build = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "build_pipeline")
    own = set()  # build_pipeline's own locals, the pipeline function's body aside
    for node in ast.walk(ast.Module(body=[s for s in build.body if not isinstance(s, ast.FunctionDef)])):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
    components = {"a_component", "b_component", "pipeline_metrics_component"}
    assert own - known == components


def test_steps_that_kubeflow_cannot_tell_apart_are_still_refused():
    nb = make_notebook([("x = 1", ["step:train_model"]), ("y = x", ["step:train__model"])])
    error = error_of(nb)
    assert "both become 'train-model' in Kubeflow" in str(error)
    fixed = retag(nb, 1, "step:train__model", suggested_tags(error.fix)[0])
    plan(fixed)


# -- 2. Rok-era metadata: clone volumes, snapshots -------------------------------------

ROK_METADATA = {
    "autosnapshot": True,
    "snapshot_volumes": True,
    "docker_image": "",
    "volumes": [
        {"annotations": [], "mount_point": "/home/jovyan", "name": "workspace-nb-abc12",
         "size": 5, "size_type": "Gi", "snapshot": False, "type": "clone"},
        {"annotations": [], "mount_point": "/home/jovyan/data", "name": "data-xyz",
         "size": 10, "size_type": "Gi", "snapshot": False, "type": "clone"},
        {"annotations": [{"key": "rok/origin", "value": "http://rok/snap/1"}], "mount_point": "/restored",
         "name": "restored", "size": 1, "size_type": "Gi", "snapshot": True, "snapshot_name": "s1",
         "type": "new_pvc"},
        {"annotations": [{"key": "", "value": ""}], "mount_point": "/shared", "name": "team-data",
         "snapshot": False, "type": "pvc"},
    ],
}
SMALL = [("import os", ["imports"]), ("files = sorted(os.listdir('.'))", ["step:load"]),
         ("count = len(files)", ["step:count", "prev:load"])]


def test_rok_volumes_and_keys_convert_with_one_warning_that_says_what_to_do(tmp_path):
    nb = make_notebook(SMALL, metadata=ROK_METADATA)
    _, pipeline = plan(nb)
    rok = [w for w in pipeline.warnings if "Rok" in w]
    assert len(rok) == 1, pipeline.warnings
    warning = rok[0]
    for fragment in ("metadata.kubeflow_notebook", "'workspace-nb-abc12' at '/home/jovyan'",
                     "'data-xyz'", "are not mounted", "no Rok snapshot is taken",
                     "'autosnapshot'", "'snapshot_volumes'", "of volume 'restored'",
                     "'restored' starts empty unless the cluster runs Rok", "'rok/origin'",
                     "type 'pvc'", "'new_pvc'"):
        assert fragment in warning, (fragment, warning)
    assert [v.name for v in pipeline.volumes] == ["restored", "team-data"]
    script = write_script(nb, tmp_path, "rok.ipynb")
    spec, platform = compiled_documents(script)
    text = json.dumps(platform)  # the Kubernetes platform spec
    assert "team-data" in text and "/restored" in text
    assert "workspace-nb-abc12" not in text and "/home/jovyan" not in text
    # the PVC the pipeline creates carries the volume's annotations, as Kale's did
    create = [task for name, task in spec["root"]["dag"]["tasks"].items() if "createpvc" in name]
    assert len(create) == 1
    annotations = create[0]["inputs"]["parameters"]["annotations"]["runtimeValue"]["constant"]
    assert annotations == {"rok/origin": "http://rok/snap/1"}


def test_following_the_rok_fix_mounts_a_pvc_of_ones_own(tmp_path):
    metadata = json.loads(json.dumps(ROK_METADATA))
    for key in ("autosnapshot", "snapshot_volumes"):
        del metadata[key]
    metadata["volumes"] = [dict(metadata["volumes"][0], type="pvc", name="my-workspace")]
    _, pipeline = plan(make_notebook(SMALL, metadata=metadata))
    assert not [w for w in pipeline.warnings if "Rok" in w]
    script = write_script(make_notebook(SMALL, metadata=metadata), tmp_path, "fixed.ipynb")
    text = json.dumps(compiled_documents(script)[1])
    assert "my-workspace" in text and "/home/jovyan" in text


@pytest.mark.parametrize("volume", [
    {"type": "clone"},
    {"type": "clone", "name": 7, "mount_point": None},
    {"type": "pvc", "name": "v", "mount_point": "/v", "snapshot": "yes", "snapshot_name": 3},
    {"type": "new_pvc", "name": "v", "mount_point": "/v", "annotations": {"rok/origin": "x"}},
    {"type": "pvc", "name": "v", "mount_point": "/v", "annotations": [{"key": "k"}, "junk"]},
], ids=["bare-clone", "clone-odd-fields", "odd-snapshot-fields", "annotations-as-dict", "odd-annotations"])
def test_rok_fields_in_any_shape_never_crash(volume):
    _, pipeline = plan(make_notebook(SMALL, metadata={"volumes": [volume], "katib_run": True,
                                                      "katib_metadata": {"parameters": []}}))
    assert any("katib_run" in w and "no Katib experiment" in w for w in pipeline.warnings)


# -- 3. a pipeline parameter listed in pipeline-metrics ---------------------------------

METRICS_NB = [
    ("import math", ["imports"]),
    ("epochs = 3\nrate = 0.5\nbalanced = True", ["pipeline-parameters"]),
    ("score = math.floor(epochs * rate * 10)", ["step:train"]),
    ("print(epochs)\nprint(score)\nrate\nprint(balanced)", ["pipeline-metrics"]),
]


def test_a_parameter_listed_as_a_metric_is_passed_to_the_metrics_step():
    script, pipeline = plan(make_notebook(METRICS_NB))
    metrics = [step for step in pipeline.steps.values() if step.is_metrics][0]
    assert sorted(metrics.parameters) == ["balanced", "epochs", "rate"]
    assert [a.name for a in metrics.inputs] == ["score"]
    assert "{'epochs': epochs, 'rate': rate, 'balanced': balanced}" in script


@pytest.mark.slow
def test_a_parameter_metric_reports_the_runs_value(tmp_path):
    script = write_script(make_notebook(METRICS_NB), tmp_path, "metrics.ipynb")
    result = run_script(script, "--local", "--param", "epochs=7")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert load_run(tmp_path / "kale-local-runs").metrics() == {
        "epochs": 7.0, "rate": 0.5, "balanced": 1.0, "score": 35.0,
    }


# -- 4. an empty step: / block: tag ---------------------------------------------------


def test_an_empty_block_tag_is_no_tag_with_a_warning_naming_the_cells():
    nb = make_notebook([
        ("y = 0", ["block:"]),
        ("x = 1", ["block:train"]),
        ("markdown", "notes"),
        ("x = x + 1", ["block:"]),
        ("x = x * 2", ["step:", "prev:train", "limit:cpu:1"]),
        ("z = x", ["block:test", "prev:train"]),
    ])
    _, pipeline = plan(nb)
    assert [cell.number for cell in pipeline.steps["train"].cells] == [2, 4, 5]
    assert pipeline.steps["train"].settings.limits == {}  # the cleared step's settings go too
    warnings = "\n".join(pipeline.warnings)
    assert ("nb.ipynb, cell 4: the tag 'block:' names no step, so it is ignored as in Kale: "
            "the cell joins step 'train' above") in warnings
    assert ("nb.ipynb, cell 5: the tag 'step:' names no step, so it is ignored as in Kale and so "
            "are its step settings 'prev:train', 'limit:cpu:1': the cell joins step 'train' above") in warnings
    assert "nb.ipynb, cell 1: the tag 'block:' names no step" in warnings
    assert "the cell is before the first tag, so not part of the pipeline" in warnings


def test_a_run_of_empty_block_tags_gives_one_warning():
    nb = make_notebook([("x = 1", ["block:a"])] + [(f"x += {i}", ["block:"]) for i in range(4)])
    _, pipeline = plan(nb)
    assert len(pipeline.warnings) == 1 and "nb.ipynb, cells 2, 3, 4, 5: " in pipeline.warnings[0]


# -- 5. skip and the sections win over other tags ---------------------------------------


def test_skip_wins_over_the_tags_kales_editor_leaves_behind():
    nb = make_notebook([
        ("x = 1", ["step:load"]),
        ("print('debug')", ["skip", "prev:load", "step:explore", "limit:cpu:1"]),
        ("import os", ["skip", "imports"]),
        ("y = x + 1", ["step:fit", "prev:load"]),
    ])
    _, pipeline = plan(nb)
    assert list(pipeline.steps) == ["load", "fit"]
    assert [cell.number for cell in pipeline.skipped_cells] == [2, 3]
    assert not pipeline.imports_cells
    warnings = "\n".join(pipeline.warnings)
    assert ("nb.ipynb, cell 2: the tag 'skip' wins over the cell's other tags (Kale's rule), so "
            "'prev:load', 'step:explore', 'limit:cpu:1' are ignored and the cell is left out") in warnings
    assert "nb.ipynb, cell 3: the tag 'skip' wins" in warnings and "'imports' is ignored" in warnings


def test_a_section_tag_wins_over_a_step_tag_on_its_cell():
    nb = make_notebook([
        ("import math", ["imports", "step:setup", "prev:nothing"]),
        ("x = math.pi", ["step:a"]),
    ])
    _, pipeline = plan(nb)
    assert list(pipeline.steps) == ["a"] and [c.number for c in pipeline.imports_cells] == [1]
    assert any("cell 1: the tag 'imports' wins" in w and "'step:setup', 'prev:nothing' are ignored"
               in w and "'imports' code" in w for w in pipeline.warnings), pipeline.warnings


def test_two_different_sections_on_one_cell_stay_an_error():
    error = error_of(make_notebook([("import os", ["imports", "functions"]), ("x = 1", ["step:a"])]))
    assert error.cell == 1 and "'imports' and 'functions' conflict" in str(error)


# -- 6. the parameters tag -----------------------------------------------------------


def test_the_parameters_tag_means_pipeline_parameters():
    nb = make_notebook([("alpha = 0.1\nname = 'x'", ["parameters"]), ("y = alpha * 2", ["step:a"])])
    _, pipeline = plan(nb)
    assert {name: p.type_name for name, p in pipeline.parameters.items()} == {"alpha": "float", "name": "str"}
    assert pipeline.steps["a"].parameters == ["alpha"]


# -- 7. messages that point at a fix that works ----------------------------------------


def test_a_name_defined_in_a_step_below_says_where_and_moving_the_step_works():
    cells = [
        ("import math", ["imports"]),
        ("data = [1, 2, 3]", ["step:load"]),
        ("score = model(data)", ["step:evaluation", "prev:load"]),
        ("model = lambda d: math.fsum(d)", ["step:training", "prev:load"]),
    ]
    error = error_of(make_notebook(cells))
    assert "step 'evaluation' reads 'model', which is defined in step 'training', cell 4, which runs after 'evaluation'" in str(error)
    assert "never defined" not in str(error)
    assert error.fix == ("move the cells of step 'training' above cell 3, where step 'evaluation' "
                         "starts, and add the tag 'prev:training' to step 'evaluation'")
    moved = [cells[0], cells[1], cells[3], (cells[2][0], cells[2][1] + suggested_tags(error.fix))]
    _, pipeline = plan(make_notebook(moved))
    assert {a.name: a.producer for a in pipeline.steps["evaluation"].inputs}["model"] == "training"


def test_a_name_a_later_step_sets_above_the_reading_cell_says_split_the_step():
    """Steps interleave: step 'a' continues in cell 4 and reads what step 'b' set in
    cell 3. In the notebook that works; in the pipeline 'a' runs before 'b'."""
    cells = [("x = 1", ["step:a"]), ("y = x + 1", ["step:b", "prev:a"]), ("z = y * 2", ["step:a"])]
    nb = make_notebook([("markdown", "m")] + cells)  # markdown counts
    error = error_of(nb)
    assert "step 'a' reads 'y', which is defined in step 'b', cell 3, which runs after 'a'" in str(error)
    assert error.fix == ("make cell 4 a step of its own that follows 'b': tag it "
                         "'step:a_after_b' and 'prev:b'")
    fixed = retag(nb, 3, "step:a", suggested_tags(error.fix)[0])
    fixed.cells[3].metadata["tags"].append(suggested_tags(error.fix)[1])
    _, pipeline = plan(fixed)
    assert pipeline.steps["a_after_b"].inputs[0].producer == "b"


def test_a_name_set_later_in_the_same_step_says_move_the_code():
    error = error_of(make_notebook([("x = 1", ["step:a"]), ("print(y)", []), ("y = x", [])]))
    assert "which is set only later in the same step, in cell 3" in str(error)
    assert error.fix == "move the code that sets 'y' (cell 3) above where cell 2 reads it"
    plan(make_notebook([("x = 1", ["step:a"]), ("y = x", []), ("print(y)", [])]))


def test_a_name_defined_in_a_skipped_cell_says_remove_the_skip():
    nb = make_notebook([("x = 1", ["step:a"]), ("y = 2", ["skip"]), ("z = y", ["step:b", "prev:a"])])
    error = error_of(nb)
    assert "is defined in cell 2, which is tagged 'skip'" in str(error)
    assert error.fix.startswith("remove the 'skip' tag from cell 2")
    plan(retag(nb, 1, "skip", None))  # the cell joins step 'a', which 'b' follows
    # With a prev: left behind by Kale's editor the same error does not come back.
    left_behind = make_notebook([("x = 1", ["step:a"]), ("y = 2", ["skip", "prev:a"]), ("z = y", ["step:b", "prev:a"])])
    assert "tagged 'skip'" in str(error_of(left_behind))
    plan(retag(left_behind, 1, "skip", None))  # its own prev:a is ignored, with a warning


@pytest.mark.parametrize("cells, cell, bad, expected", [
    ([("x = 1", ["step:train"]), ("y = x", ["step:test", "prev:trian"])],
     1, "prev:trian", "did you mean 'prev:train'?"),
    ([("x = 1", ["step:load"]), ("y = x", ["step:fit", "prev:load"]), ("z = x", ["step:test", "prev:zzz"])],
     2, "prev:zzz", "name a step that starts above it: 'prev:load', 'prev:fit'"),
    ([("x = 1", ["step:a"]), ("y = 2", ["step:b"]), ("z = 3", ["step:sum_cumsum", "prev:sum_cumsum_2"])],
     2, "prev:sum_cumsum_2", "name a step that starts above it: 'prev:a', 'prev:b'"),
    ([("x = 1", ["step:load"]), ("y = x", ["step:fit", "prev:Load"])],
     1, "prev:Load", "write 'prev:load'"),
    ([("x = 1", ["step:load"]), ("y = x", ["step:fit", "prev:"])],
     1, "prev:", "remove the tag, or name a step that starts above it: 'prev:load'"),
], ids=["close-match", "no-close-match", "never-itself", "invalid-name", "empty-name"])
def test_a_prev_naming_no_step_suggests_only_steps_above_and_the_suggestion_works(cells, cell, bad, expected):
    nb = make_notebook(cells)
    error = error_of(nb)
    assert expected in error.fix, error.fix
    own = [t.split(":", 1)[1] for t in cells[cell][1] if t.startswith("step:")][0]
    suggestions = [tag for tag in suggested_tags(error.fix) if tag.startswith("prev:")]
    assert suggestions and f"prev:{own}" not in suggestions
    for tag in suggestions:  # every suggestion converts once applied
        plan(retag(nb, cell, bad, tag))


def test_a_prev_on_the_first_step_says_there_is_nothing_above():
    nb = make_notebook([("x = 1", ["step:train", "prev:load"]), ("y = x", ["step:test", "prev:train"])])
    error = error_of(nb)
    assert "'train' is the first step" in error.fix and "remove 'prev:load'" in error.fix
    plan(retag(nb, 0, "prev:load", None))


# -- 8. what stays an error: a clear message naming the cell, with a fix that works ------


def test_a_hyphen_in_a_step_name_stays_an_error_and_its_fix_works():
    nb = make_notebook([("x = 1", ["step:train-model"]), ("y = x", ["step:test", "prev:train_model"])])
    error = error_of(nb)
    assert error.cell == 1 and "invalid step name 'train-model'" in str(error)
    plan(retag(nb, 0, "step:train-model", suggested_tags(error.fix)[0]))


def test_text_printed_in_the_metrics_cell_stays_an_error_and_its_fix_works():
    cells = [("acc = 0.9", ["step:train"]), ('print("accuracy:")\nprint(acc)', ["pipeline-metrics"])]
    error = error_of(make_notebook(cells))
    assert (error.cell, error.line, error.section) == (2, 1, "pipeline-metrics")
    assert "list only its variable" in error.fix
    plan(make_notebook([cells[0], ("print(acc)", ["pipeline-metrics"])]))


def test_a_call_in_the_parameters_cell_stays_an_error_and_its_fix_works():
    error = error_of(make_notebook([("n = int('3')", ["pipeline-parameters"]), ("x = n", ["step:a"])]))
    assert error.cell == 1 and "not a literal" in str(error) and "literal" in error.fix
    plan(make_notebook([("n = 3", ["pipeline-parameters"]), ("x = n", ["step:a"])]))


def test_a_notebook_without_step_tags_stays_an_error_and_its_fix_works():
    cells = [("import os", ["imports"]), ("x = os.sep", [])]
    error = error_of(make_notebook(cells))
    assert "no pipeline steps" in str(error) and "'step:NAME'" in error.fix
    plan(make_notebook([cells[0], (cells[1][0], ["step:main"])]))


# -- the notebooks the Kale project published --------------------------------------------

PUBLISHED = sorted(KALE_NOTEBOOKS.glob("*.ipynb")) if KALE_NOTEBOOKS.is_dir() else []
WHERE = re.compile(r"\.ipynb(, cells? [0-9]|: metadata\.kubeflow_notebook|: code cells before|: module ')")
"""A warning names its cell(s), its metadata key or the module it is about."""
WHAT = re.compile(
    r"ignored|left out|joins?|not part of the pipeline|not mounted|no Rok snapshot|"
    r"no Katib experiment|will not have it"
)
"""...and says what was done."""


def test_the_published_kale_notebooks_are_there():
    if not KALE_NOTEBOOKS.is_dir():
        pytest.skip(f"{KALE_NOTEBOOKS} is not there (the shared folder beside the clone)")
    assert len(PUBLISHED) >= 14


@pytest.mark.parametrize("notebook", PUBLISHED, ids=[n.stem for n in PUBLISHED])
def test_a_published_kale_notebook_converts_and_compiles(notebook, tmp_path):
    shutil.copy(notebook, tmp_path / notebook.name)
    files = notebook.with_suffix(".files")
    if files.is_dir():
        shutil.copytree(files, tmp_path, dirs_exist_ok=True)
    nb = nbformat.read(tmp_path / notebook.name, as_version=4)
    script, pipeline = plan(nb, notebook.name)
    for warning in pipeline.warnings:
        assert WHERE.search(warning), f"names no cell or key: {warning}"
        assert WHAT.search(warning), f"does not say what was done: {warning}"
    path = tmp_path / (notebook.stem + ".py")
    path.write_text(script, encoding="utf-8")
    spec = compiled_documents(path)
    steps = [step.name for step in pipeline.steps.values()]
    assert tasks_of(spec) == {kfp_name(name) for name in steps}


def test_the_documents_taken_from_the_built_specs_are_the_yaml_kfp_writes(tmp_path):
    """The default profile reads a compile's documents from the specs kfp built on
    import (``compiled_documents``); they must be what kfp's own YAML holds, platform
    spec included (Kale's serving example sets Kubernetes fields)."""
    notebook = KALE_NOTEBOOKS / "kale__examples__serving__sklearn__iris.ipynb"
    shutil.copy(notebook, tmp_path / notebook.name)
    script, _ = plan(nbformat.read(tmp_path / notebook.name, as_version=4), notebook.name)
    path = tmp_path / "iris.py"
    path.write_text(script, encoding="utf-8")
    from_specs = helpers.compiled_documents(path)
    assert len(from_specs) == 2  # the pipeline spec and the platform spec
    assert from_specs == yaml_documents(helpers.compile_script_in_process(path))


def test_a_long_notebook_name_still_gives_a_pipeline_kfp_compiles(tmp_path):
    """KFP refuses pipeline names over 128 characters; the name derived from the
    notebook's file name (or its pipeline_name) is cut to fit."""
    stem = "experiment-" + "very-long-title-" * 15
    nb = make_notebook([("x = 1", ["step:a"])], metadata={"pipeline_name": stem + "v2"})
    script = write_script(nb, tmp_path, "nb.ipynb")
    result = run_script(script)
    assert result.returncode == 0, result.stderr
    spec = yaml_documents(tmp_path / "nb.yaml")[0]
    name = spec["pipelineInfo"]["name"]
    assert len(name) <= 128 and name.startswith("experiment-very-long-title") and not name.endswith("-")
