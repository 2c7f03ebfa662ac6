"""Per-step settings from tags, steps_defaults and volumes reach the compiled pipeline."""

from __future__ import annotations

import pytest

from helpers import convert, make_notebook, run_script, write_script, yaml_documents
from kale_nbconvert.errors import NotebookError

NOTEBOOK = make_notebook(
    [
        ("x = 1", ["step:a", "limit:memory:4Gi", "limit:cpu:500m", "label:team:ml", "annotation:owner:me:you"]),
        ("y = x + 1", ["step:b", "prev:a", "limit:nvidia.com/gpu:1", "label:team:override"]),
    ],
    {
        "steps_defaults": ["label:team:default", "label:env:dev", "limit:memory:1Gi"],
        "volumes": [
            {"name": "data", "mount_point": "/data", "type": "pvc"},
            {"name": "scratch", "mount_point": "/scratch", "type": "new_pvc", "size": 5, "size_type": "Gi"},
        ],
        "docker_image": "python:3.11-slim",
        "katib_run": False,
        "autosnapshot": True,
    },
)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("settings")
    script = write_script(NOTEBOOK, folder, "settings.ipynb")
    result = run_script(script)
    assert result.returncode == 0, result.stderr
    pipeline_spec, platform_spec = yaml_documents(folder / "settings.yaml")
    return pipeline_spec, platform_spec


def test_limits_and_image_reach_the_containers(compiled):
    executors = compiled[0]["deploymentSpec"]["executors"]
    a = executors["exec-a"]["container"]
    b = executors["exec-b"]["container"]
    assert a["image"] == b["image"] == "python:3.11-slim"
    assert a["resources"]["resourceMemoryLimit"] == "4Gi"  # the step's own value wins
    assert a["resources"]["resourceCpuLimit"] == "500m"
    assert b["resources"]["resourceMemoryLimit"] == "1Gi"  # from steps_defaults
    assert b["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"


def test_labels_annotations_and_volumes_reach_the_pods(compiled):
    executors = compiled[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    a, b = executors["exec-a"], executors["exec-b"]
    assert a["podMetadata"]["labels"] == {"team": "ml", "env": "dev"}
    assert a["podMetadata"]["annotations"] == {"owner": "me:you"}
    assert b["podMetadata"]["labels"] == {"team": "override", "env": "dev"}
    for executor in (a, b):
        assert sorted(m["mountPath"] for m in executor["pvcMount"]) == ["/data", "/scratch"]
    assert "exec-createpvc" in compiled[0]["deploymentSpec"]["executors"]


def test_data_edges_and_prev_edges_are_the_task_dependencies(compiled):
    tasks = compiled[0]["root"]["dag"]["tasks"]
    assert sorted(tasks["b"]["dependentTasks"]) == ["a", "createpvc"]
    assert "dependentTasks" not in tasks["a"] or tasks["a"]["dependentTasks"] == ["createpvc"]


@pytest.mark.parametrize(
    "tag, message",
    [
        ("limit:memory:lots", "not a memory quantity"),
        ("limit:cpu:fast", "not a CPU quantity"),
        ("limit:ephemeral-storage:1Gi", "KFP can limit only cpu, memory and accelerators"),
        ("limit:nvidia.com/gpu:half", "whole number"),
    ],
)
def test_settings_kfp_cannot_apply_are_refused(tag, message):
    nb = make_notebook([("x = 1", ["step:a", tag])])
    with pytest.raises(NotebookError, match=message) as error:
        convert(nb)
    assert error.value.step == "a" and error.value.cell == 1
