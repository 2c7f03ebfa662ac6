"""A corpus of bad notebooks: each fails with ONE clear message and leaves no trace.

For every case: the error is a :class:`NotebookError` naming the notebook, the cell
(1-based, as Jupyter counts, markdown included) and the step or section where there is
one, saying what is wrong and how to fix it, on one line. Through the real CLI
(``jupyter nbconvert --to kale``): a non-zero exit code, stderr ending with that one
line and no traceback, no output file, and the notebook byte-identical afterwards.

Cases are built as raw file bytes, so broken JSON and non-UTF-8 files are covered too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

from helpers import convert, embedded_cells, make_notebook, run_nbconvert
from kale_nbconvert.errors import NotebookError
from kale_nbconvert.exporter import KaleExporter

# The malformed notebooks here have no cell ids, on purpose; nbformat warns of each.
# Matched by message, not class: under xdist a warning that reaches the report makes
# the controlling process import the class's module (nbformat: 2 s of CPU).
pytestmark = pytest.mark.filterwarnings("ignore:Cell is missing an id field")


def nb_bytes(cells, metadata=None) -> bytes:
    return nbformat.writes(make_notebook(cells, metadata)).encode("utf-8")


def raw_bytes(data) -> bytes:
    return json.dumps(data, indent=1).encode("utf-8")


def v4(cells, metadata=None) -> dict:
    """A v4 notebook dict whose cells may be malformed on purpose."""
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": metadata or {}, "cells": cells}


def code(source, tags=None, **extra) -> dict:
    cell = {"cell_type": "code", "source": source, "metadata": {"tags": tags or []},
            "outputs": [], "execution_count": None}
    cell.update(extra)
    return cell


GOOD = [("import math", ["imports"]), ("x = 1", ["step:a"]), ("y = x + 1", ["step:b", "prev:a"])]


@dataclass
class Case:
    id: str
    content: bytes
    expect: list[str]
    """Fragments the message must contain (what is wrong, and the fix)."""
    cell: int | None = None
    step: str | None = None
    section: str | None = None
    config: dict = field(default_factory=dict)


CASES = [
    # -- the file itself -----------------------------------------------------------
    Case("invalid-json", b'{"cells": [{"cell_type": "code",', ["not valid JSON at line 1", "restore it"]),
    Case(
        "merge-conflict",
        b'{\n<<<<<<< HEAD\n "nbformat": 4,\n=======\n "nbformat": 4,\n>>>>>>> other\n}',
        ["not valid JSON at line 2", "resolve the git merge conflict"],
    ),
    Case("empty-file", b"", ["the file is empty"]),
    Case("json-list", b"[1, 2, 3]", ["not a notebook: the JSON is list", "restore it"]),
    Case("no-nbformat", raw_bytes({"cells": []}), ["no integer 'nbformat' version"]),
    Case(
        "old-nbformat-3",
        raw_bytes({"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": []}),
        ["old nbformat 3", "jupyter nbconvert --to notebook --inplace"],
    ),
    Case(
        "future-nbformat-5",
        raw_bytes({"nbformat": 5, "nbformat_minor": 0, "metadata": {}, "cells": []}),
        ["nbformat 5, newer", "pip install -U nbformat"],
    ),
    Case(
        "latin-1-bytes",
        nb_bytes([("s = 'caf\u00e9'", ["step:a"])]).replace("caf\u00e9".encode(), b"caf\xe9"),
        ["not UTF-8 text (byte 0xe9", "line ", "iconv"],
    ),
    Case("utf-16-file", "\ufeff{}".encode("utf-16"), ["not UTF-8 text (byte 0xff at offset 0"]),
    Case("cells-not-a-list", raw_bytes(v4({"a": 1})), ["not a notebook: 'cells' is dict, not a list"]),
    Case(
        "source-not-text",
        raw_bytes(v4([code("x = 1", ["step:a"]), code(42)])),
        ["'source' is int, not text", "re-create the cell"],
        cell=2,
        step="a",
    ),
    Case(
        "metadata-not-object",
        raw_bytes(v4([code("x = 1", ["step:a"]), {"cell_type": "code", "source": "", "metadata": []}])),
        ["'metadata' is list, not an object"],
        cell=2,
    ),
    Case(
        "lone-surrogate-in-cell",
        raw_bytes(v4([code("x = 1", ["step:a"]), code("s = '\ud800'", [])])),
        ["'\\ud800', half of a UTF-16 pair", "delete it"],
        cell=2,
        step="a",
    ),
    Case(
        "tags-not-a-list",
        raw_bytes(v4([code("x = 1", "step:a")])),
        ["metadata.tags must be a list of strings, not a str", "property inspector"],
        cell=1,
    ),
    # -- tags ------------------------------------------------------------------------
    Case(
        "tag-not-a-string",
        raw_bytes(v4([code("x = 1", ["step:a"]), code("y = 2", [42])])),
        ["tag 42 is an int, not a string", "write it as text"],
        cell=2,
    ),
    Case(
        "tag-null",
        raw_bytes(v4([code("x = 1", [None, "step:a"])])),
        ["tag None is a NoneType, not a string"],
        cell=1, step="a",
    ),
    Case(
        "empty-tag",
        nb_bytes([("x = 1", ["step:a"]), ("y = x", ["", "step:b", "prev:a"])]),
        ["breaks the Jupyter notebook format at metadata/tags/0", "tags must be non-empty"],
        cell=2,
        step="b",
    ),
    Case(
        "tag-with-comma",
        nb_bytes([("x = 1", ["step:a", "annotation:owner:me,you"])]),
        ["breaks the Jupyter notebook format at metadata/tags/1", "contain no comma"],
        cell=1,
        step="a",
    ),
    Case(
        "unknown-tag-typo",
        nb_bytes([("markdown", "# title"), ("x = 1", ["setp:train"])]),
        ["unknown tag 'setp:train'", "did you mean 'step:train'?"],
        cell=2,
    ),
    Case(
        "unknown-tag-case",
        nb_bytes([("import os", ["Imports"]), ("x = 1", ["step:a"])]),
        ["unknown tag 'Imports'", "did you mean 'imports'?"],
        cell=1,
    ),
    Case(
        "unknown-tag-prefix",
        nb_bytes([("x = 1", ["step:a"]), ("y = 1", ["stage:b"])]),
        ["unknown tag 'stage:b'", "valid tags: imports"],
        cell=2,  # the cell only: the step above is not where a broken tag belongs
    ),
    Case(
        "unknown-tag-after-a-section-names-the-cells-own-step",
        nb_bytes([("import os", ["imports"]), ("y = 1", ["step:b", "pipeline-parameter"])]),
        ["unknown tag 'pipeline-parameter'", "did you mean 'pipeline-parameters'?"],
        cell=2,
        step="b",
    ),
    Case("bare-step-tag", nb_bytes([("x = 1", ["step"])]), ["tag 'step' has no value", "'step:NAME'"], cell=1),
    Case(
        "two-step-tags",
        nb_bytes([("x = 1", ["step:a", "step:b"])]),
        ["two step tags on one cell ('a' and 'b')", "split the cell"],
        cell=1, step="a",
    ),
    Case(
        "two-sections",
        nb_bytes([("import os", ["imports", "functions"])]),
        ["tags 'imports' and 'functions' conflict on one cell"],
        cell=1,
    ),
    Case(
        "step-name-uppercase",
        nb_bytes([("x = 1", ["step:Train"])]),
        ["invalid step name 'Train'", "use lowercase letters, digits and '_', not starting with a digit", "'step:train'"],
        cell=1,
    ),
    Case(
        "step-name-digit-first",
        nb_bytes([("x = 1", ["step:a"]), ("y = 1", ["step:1st"])]),
        ["invalid step name '1st'", "lowercase letters, digits and '_'"],
        cell=2,
    ),
    Case(
        "prev-name-empty",
        nb_bytes([("x = 1", ["step:a"]), ("y = x", ["step:b", "prev:"])]),
        ["empty step name in 'prev:'", "remove the tag, or name a step that starts above it: 'prev:a'"],
        cell=2, step="b",
    ),
    Case(
        "step-name-hyphen",
        nb_bytes([("x = 1", ["step:train-model"])]),
        ["invalid step name 'train-model'", "'step:train_model'"],
        cell=1,
    ),
    Case(
        "names-collide-after-normalisation",
        nb_bytes([("x = 1", ["step:train_model"]), ("y = x", ["step:train-model", "prev:train_model"])]),
        ["invalid step name 'train-model'", "write 'step:train_model' to continue the step of cell 1"],
        cell=2,
    ),
    Case(
        "names-collide-in-kubeflow",
        nb_bytes([("x = 1", ["step:train_model"]), ("y = x", ["step:train__model", "prev:train_model"])]),
        ["step name 'train__model' and step 'train_model' (cell 1) both become 'train-model'"],
        cell=2,
        step="train__model",
    ),
    Case("step-named-underscore", nb_bytes([("x = 1", ["step:_"])]), ["has no letter or digit"], cell=1, step="_"),
    Case(
        "prev-missing",
        nb_bytes([("x = 1", ["step:train"]), ("y = x", ["step:test", "prev:trian"])]),
        ["'prev:trian' names no step", "did you mean 'prev:train'?"],
        cell=2,
        step="test",
    ),
    Case(
        "prev-missing-on-the-first-step",
        nb_bytes([("x = 1", ["step:train", "prev:load"])]),
        ["'prev:load' names no step", "'train' is the first step", "remove 'prev:load'"],
        cell=1,
        step="train",
    ),
    Case(
        "prev-missing-no-close-match",
        nb_bytes([("x = 1", ["step:load"]), ("y = x", ["step:fit", "prev:load"]), ("z = y", ["step:test", "prev:zzz"])]),
        ["'prev:zzz' names no step", "name a step that starts above it: 'prev:load', 'prev:fit'"],
        cell=3,
        step="test",
    ),
    Case(
        "prev-later",
        nb_bytes([("x = 1", ["step:a", "prev:b"]), ("y = 2", ["step:b"])]),
        ["'prev:b' names step 'b', which starts later in the notebook (cell 2)", "only follow steps above"],
        cell=1,
        step="a",
    ),
    Case(
        "prev-cycle",
        nb_bytes([("x = 1", ["step:a"]), ("y = x", ["step:b", "prev:a"]), ("z = y", ["step:a", "prev:b"])]),
        ["'prev:b' makes a cycle: 'a', which waits for 'b', which waits for 'a'", "remove 'prev:b'"],
        cell=3,
        step="a",
    ),
    Case("prev-itself", nb_bytes([("x = 1", ["step:a", "prev:a"])]), ["lists itself in 'prev:'"], cell=1, step="a"),
    Case(
        "label-value-invalid",
        nb_bytes([("x = 1", ["step:a", "label:team:data science"])]),
        ["'data science' is not a valid Kubernetes label value", "annotation:KEY:VALUE"],
        cell=1, step="a",
    ),
    Case("label-no-value", nb_bytes([("x = 1", ["step:a", "label:team"])]), ["needs a key and a value", "'label:KEY:VALUE'"], cell=1, step="a"),
    Case("limit-bad-cpu", nb_bytes([("x = 1", ["step:a", "limit:cpu:lots"])]), ["'limit:cpu:lots': not a CPU quantity", "500m"], cell=1, step="a"),
    Case("limit-unknown-resource", nb_bytes([("x = 1", ["step:a", "limit:disk:1"])]), ["KFP can limit only cpu, memory"], cell=1, step="a"),
    # -- per-step settings (issue 13): the cell, the tag and a corrected example ---------
    Case("request-bad-memory", nb_bytes([("x = 1", ["step:a", "request:memory:lots"])]), ["tag 'request:memory:lots': not a memory quantity", "'request:memory:1Gi'"], cell=1, step="a"),
    Case("request-gpu", nb_bytes([("x = 1", ["step:a", "request:nvidia.com/gpu:1"])]), ["KFP can request only cpu and memory", "'limit:nvidia.com/gpu:1'"], cell=1, step="a"),
    Case("image-bad-ref", nb_bytes([("x = 1", ["step:a", "image:My Image"])]), ["tag 'image:My Image': 'My Image' is not a container image reference", "'image:python:3.12-slim'"], cell=1, step="a"),
    Case("retry-not-a-number", nb_bytes([("x = 1", ["step:a", "retry:three"])]), ["tag 'retry:three': the retry count must be a whole number", "'retry:3:30s'"], cell=1, step="a"),
    Case("retry-bad-backoff", nb_bytes([("x = 1", ["step:a", "retry:3:soon"])]), ["'soon' is not a backoff duration", "'retry:3:30s'"], cell=1, step="a"),
    Case("timeout-bad-duration", nb_bytes([("x = 1", ["step:a", "timeout:30 minutes"])]), ["tag 'timeout:30 minutes': not a duration", "'timeout:30m'"], cell=1, step="a"),
    Case("cache-off", nb_bytes([("x = 1", ["step:a", "cache:off"])]), ["tag 'cache:off': caching is 'enabled' or 'disabled'", "'cache:disabled'"], cell=1, step="a"),
    Case("env-bad-name", nb_bytes([("x = 1", ["step:a", "env:1MODE:fast"])]), ["'1MODE' is not a valid environment variable name", "'env:MODE:fast'"], cell=1, step="a"),
    Case("env-no-value", nb_bytes([("x = 1", ["step:a", "env:MODE"])]), ["tag 'env:MODE': needs 2 parts", "'env:MODE:fast'"], cell=1, step="a"),
    Case("env-twice", nb_bytes([("x = 1", ["step:a", "env:PW:x", "secret:creds:pw:PW"])]), ["environment variable 'PW' is set twice"], cell=1, step="a"),
    Case("secret-bad-name", nb_bytes([("x = 1", ["step:a", "secret:DB_Creds:password:DB_PASSWORD"])]), ["'DB_Creds' is not a valid Kubernetes secret name", "'secret:db-creds:password:DB_PASSWORD'"], cell=1, step="a"),
    Case("secret-missing-env", nb_bytes([("x = 1", ["step:a", "secret:db-creds:password"])]), ["needs 3 parts", "'secret:db-creds:password:DB_PASSWORD'"], cell=1, step="a"),
    Case("secret-volume-relative-path", nb_bytes([("x = 1", ["step:a", "secret-volume:gcp-key:secrets"])]), ["'secrets' is not an absolute mount path", "'secret-volume:gcp-key:/secrets/gcp'"], cell=1, step="a"),
    Case("configmap-bad-key", nb_bytes([("x = 1", ["step:a", "configmap:app-cfg:my key:CFG"])]), ["'my key' is not a valid config map key", "'configmap:app-cfg:mode:CFG_MODE'"], cell=1, step="a"),
    Case("configmap-volume-bad-name", nb_bytes([("x = 1", ["step:a", "configmap-volume:App:/etc/app"])]), ["'App' is not a valid Kubernetes config map name", "'configmap-volume:app-cfg:/etc/app'"], cell=1, step="a"),
    Case("node-selector-bad-value", nb_bytes([("x = 1", ["step:a", "node-selector:pool:big gpu"])]), ["is not a valid Kubernetes node label", "'node-selector:pool:gpu'"], cell=1, step="a"),
    Case("toleration-bad-effect", nb_bytes([("x = 1", ["step:a", "toleration:dedicated=gpu:Never"])]), ["the effect must be one of NoSchedule, PreferNoSchedule, NoExecute", "'toleration:dedicated=gpu:NoSchedule'"], cell=1, step="a"),
    Case("shm-bad-size", nb_bytes([("x = 1", ["step:a", "shm:2GB"])]), ["tag 'shm:2GB': not a memory quantity", "'shm:2Gi'"], cell=1, step="a"),
    Case("setting-on-second-cell", nb_bytes([("x = 1", ["step:a"]), ("y = 2", ["step:b", "prev:a", "timeout:1d"])]), ["tag 'timeout:1d': not a duration"], cell=2, step="b"),
    Case("setting-on-a-section", nb_bytes([("import os", ["imports"]), ("z = 3", ["env:MODE:fast"]), ("x = 1", ["step:a"])]), ["step settings on a cell of the 'imports' section"], cell=2, section="imports"),
    Case("steps-defaults-bad-setting", nb_bytes(GOOD, metadata={"steps_defaults": ["toleration:gpu:Sometimes"]}), ["steps_defaults: tag 'toleration:gpu:Sometimes': the effect must be one of"]),
    Case("kale-timeout-not-a-duration", nb_bytes(GOOD, metadata={"timeout": "soon"}), ["metadata.kubeflow_notebook.timeout is 'soon', not a duration", "3600"]),
    # -- cell code ---------------------------------------------------------------------
    Case(
        "syntax-error",
        nb_bytes([("import os", ["imports"]), ("x = 1", ["step:a"]), ("y = x\nz = (", ["step:b", "prev:a"])]),
        ["line 2: syntax error", "fix the cell"],
        cell=3,
        step="b",
    ),
    Case(
        "syntax-error-in-imports",
        nb_bytes([("import os,", ["imports"]), ("x = 1", ["step:a"])]),
        ["syntax error"],
        cell=1,
        section="imports",
    ),
    Case(
        "syntax-error-untagged-cell",
        nb_bytes([("x = 1", ["step:a"]), ("markdown", "text"), ("y = x +", [])]),
        ["syntax error"],
        cell=3,
        step="a",
    ),
    Case(
        "tabs-and-spaces-mixed",
        nb_bytes([("if True:\n\tx = 1\n        y = 2", ["step:a"])]),
        ["inconsistent use of tabs and spaces"],
        cell=1,
        step="a",
    ),
    Case("nul-byte", nb_bytes([("x = 1\x00", ["step:a"])]), ["null bytes"], cell=1, step="a"),
    Case(
        "nested-too-deeply",
        nb_bytes([("x = 1", ["step:a"]), ("y = " + "-" * 100_000 + "1", ["step:b"])]),
        ["nested too deeply", "simplify"],
        cell=2,
        step="b",
    ),
    Case(
        "star-import",
        nb_bytes([("from math import *\nx = pi", ["step:a"])]),
        ["import the names you use explicitly"],
        cell=1,
        step="a",
    ),
    Case(
        "undefined-variable",
        nb_bytes([("x = 1", ["step:a"]), ("y = w + 1", ["step:b", "prev:a"])]),
        ["step 'b' reads 'w', which is never defined in this notebook"],
        cell=2,
        step="b",
    ),
    Case(
        "missing-prev-for-data",
        nb_bytes([("x = 1", ["step:a"]), ("y = x + 1", ["step:b"])]),
        ["not an ancestor of 'b'", "add the tag 'prev:a' to step 'b'"],
        cell=2,
        step="b",
    ),
    # -- parameters --------------------------------------------------------------------
    Case(
        "parameters-not-literals",
        nb_bytes([("n = len([1, 2])", ["pipeline-parameters"]), ("x = n", ["step:a"])]),
        ["the value of parameter 'n' is not a literal", "keep only literals here"],
        cell=1,
        section="pipeline-parameters",
    ),
    Case(
        "parameters-call",
        nb_bytes([("n = int('3')", ["parameters"]), ("x = n", ["step:a"])]),
        ["the value of parameter 'n' is not a literal"],
        cell=1,
        section="pipeline-parameters",
    ),
    Case(
        "variable-only-old-kale-injected",
        nb_bytes([("import os", ["imports"]), ("files = os.listdir(_input_data_folder)", ["block:load"])]),
        ["step 'load' reads '_input_data_folder', which is never defined in this notebook"],
        cell=2,
        step="load",
    ),
    Case(
        "parameters-not-assignments",
        nb_bytes([("n = 1\nprint(n)", ["pipeline-parameters"]), ("x = n", ["step:a"])]),
        ["line 2: a parameters cell may only hold 'name = literal' lines"],
        cell=1,
        section="pipeline-parameters",
    ),
    Case(
        "duplicate-parameters",
        nb_bytes([("n = 1", ["pipeline-parameters"]), ("markdown", "m"), ("n = 2", ["pipeline-parameters"]), ("x = n", ["step:a"])]),
        ["parameter 'n' is defined twice (first in cell 1, line 1)", "keep one definition"],
        cell=3,
        section="pipeline-parameters",
    ),
    Case("parameter-none", nb_bytes([("n = None", ["pipeline-parameters"]), ("x = n", ["step:a"])]), ["no pipeline parameter type"], cell=1, section="pipeline-parameters"),
    Case("parameter-underscore", nb_bytes([("_n = 1", ["pipeline-parameters"]), ("x = 1", ["step:a"])]), ["starts with '_'"], cell=1, section="pipeline-parameters"),
    Case(
        "parameter-huge-int",
        nb_bytes([("n = 10 ** 30", ["pipeline-parameters"]), ("x = n", ["step:a"])]),
        ["not a literal"],
        cell=1,
        section="pipeline-parameters",
    ),
    Case(
        "parameter-int-too-large",
        nb_bytes([("n = 1000000000000000000000", ["pipeline-parameters"]), ("x = n", ["step:a"])]),
        ["integer too large for KFP"],
        cell=1,
        section="pipeline-parameters",
    ),
    Case(
        "parameter-infinite",
        nb_bytes([("lr = 1e999", ["pipeline-parameters"]), ("x = lr", ["step:a"])]),
        ["parameter 'lr': the value is inf, which JSON cannot carry"],
        cell=1,
        section="pipeline-parameters",
    ),
    Case(
        "parameter-dict-int-keys",
        nb_bytes([("m = {1: 'a'}", ["pipeline-parameters"]), ("x = m", ["step:a"])]),
        ["has the key 1; JSON keys are text"],
        cell=1,
        section="pipeline-parameters",
    ),
    Case(
        "step-changes-a-parameter",
        nb_bytes([("n = 1", ["pipeline-parameters"]), ("n = n + 1", ["step:a"])]),
        ["step 'a' changes pipeline parameter 'n'"],
        cell=2,
        step="a",
    ),
    Case(
        "variable-named-like-parameter-argument",
        nb_bytes([("x_in = 1", ["pipeline-parameters"]), ("x = 2", ["step:a"]), ("y = x + x_in", ["step:b", "prev:a"])]),
        ["two component arguments named 'x_in'", "rename the parameter or the variable"],
        cell=3,
        step="b",
    ),
    # -- metrics -----------------------------------------------------------------------
    Case(
        "metrics-unknown-variable",
        nb_bytes([("acc = 0.9", ["step:train"]), ("print(accuracy)", ["pipeline-metrics"])]),
        ["the pipeline-metrics cell reports 'accuracy', which is never defined", "compute 'accuracy' in a step"],
        cell=2,
        section="pipeline-metrics",
    ),
    Case(
        "metrics-not-a-name",
        nb_bytes([("acc = 0.9", ["step:train"]), ("print(acc * 100)", ["pipeline-metrics"])]),
        ["may only hold 'print(variable)' or 'variable' lines"],
        cell=2,
        section="pipeline-metrics",
    ),
    Case(
        "metrics-print-text",
        nb_bytes([("acc = 0.9", ["step:train"]), ('print("accuracy:")\nprint(acc)', ["pipeline-metrics"])]),
        ["may only hold 'print(variable)' or 'variable' lines", "list only its variable"],
        cell=2,
        section="pipeline-metrics",
    ),
    Case(
        "metrics-text-parameter",
        nb_bytes([("mode = 'fast'", ["pipeline-parameters"]), ("acc = 0.9", ["step:train"]), ("print(mode)", ["pipeline-metrics"])]),
        ["metric 'mode' is a str pipeline parameter; KFP metrics are numbers", "remove 'mode'"],
        cell=3,
        section="pipeline-metrics",
    ),
    Case(
        "steps-after-metrics",
        nb_bytes([("acc = 0.9", ["step:train"]), ("acc", ["pipeline-metrics"]), ("x = 1", ["step:late"])]),
        ["step 'late' comes after the pipeline-metrics cell", "move the pipeline-metrics cell to the end"],
        cell=3,
        step="late",
    ),
    # -- the pipeline as a whole ------------------------------------------------------------
    Case("no-steps", nb_bytes([("import os", ["imports"]), ("x = 1", [])]), ["no pipeline steps", "'step:NAME'"]),
    Case("no-cells", nb_bytes([]), ["no pipeline steps"]),
    Case(
        "untagged-first-cells-strict",
        nb_bytes([("x = 1", []), ("y = 2", ["step:a"])]),
        ["code cells before the first Kale tag", "tag them"],
        cell=1,
        config={"TagMergePreprocessor.strict_untagged": True},
    ),
    # -- notebook metadata -------------------------------------------------------------
    Case("kubeflow-metadata-not-object", nb_bytes(GOOD, metadata=["x"]), ["metadata.kubeflow_notebook must be an object"]),
    Case("pipeline-name-not-text", nb_bytes(GOOD, metadata={"pipeline_name": 7}), ["pipeline_name must be text, not int"]),
    Case("volumes-not-a-list", nb_bytes(GOOD, metadata={"volumes": "data"}), ["volumes must be a list"]),
    Case(
        "volume-bad-type",
        nb_bytes(GOOD, metadata={"volumes": [{"name": "v", "mount_point": "/d", "type": "nfs"}]}),
        ["volume 'v' has type 'nfs'", "pvc, new_pvc, pv"],
    ),
    Case(
        "volume-annotations-not-a-list",
        nb_bytes(GOOD, metadata={"volumes": [{"name": "v", "mount_point": "/d", "type": "pvc", "annotations": "rok/origin"}]}),
        ["the annotations of volume 'v' are str, not a list"],
    ),
    Case(
        "steps-defaults-with-step",
        nb_bytes(GOOD, metadata={"steps_defaults": ["step:x"]}),
        ["steps_defaults may hold only step settings"],
    ),
    Case(
        "steps-defaults-bad-tag",
        nb_bytes(GOOD, metadata={"steps_defaults": ["lable:team:ml"]}),
        ["steps_defaults: unknown tag 'lable:team:ml'", "did you mean 'label:team:ml'?"],
    ),
]


def _write(tmp_path: Path, case: Case) -> Path:
    folder = tmp_path / "nb"
    folder.mkdir()
    path = folder / f"{case.id}.ipynb"
    path.write_bytes(case.content)
    return path


def _exporter(case: Case) -> KaleExporter:
    from traitlets.config import Config

    config = Config()
    for key, value in case.config.items():
        section, _, trait = key.partition(".")
        config[section][trait] = value
    return KaleExporter(config=config)


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_notebook_gives_one_clear_error(tmp_path, case):
    path = _write(tmp_path, case)
    before = path.read_bytes()
    with pytest.raises(NotebookError) as caught:
        _exporter(case).from_filename(str(path))
    error = caught.value
    message = str(error)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"{case.id}.ipynb"), message
    for fragment in case.expect:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert error.fix, message
    assert " Fix: " in message
    assert error.cell == case.cell, message
    if case.cell is not None:
        assert f"cell {case.cell}" in message
    assert error.step == case.step, message
    if case.step:
        assert f"step {case.step}" in message
    if case.section:
        assert error.section == case.section, message
        assert f"({case.section})" in message
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def run_cli_many(jobs):
    """Run ``jupyter nbconvert`` once per job ({folder, args}); each run is its own
    process (forked from one that imported nbconvert once: ``run_nbconvert``).
    Returns [{rc, stdout, stderr}]."""
    results = []
    for job in jobs:
        done = run_nbconvert(Path(job["folder"]), *job["args"], timeout=120)
        results.append({"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr})
    return results


def _cli_case_shapes():
    """The first two cases of each shape of message (no cell, a cell in a step, a cell
    in a section, a bare cell, an exporter option): the CLI path each takes from the
    error to stderr is the same for every case of a shape."""
    seen, sample = {}, []
    for case in CASES:
        shape = (case.cell is None, bool(case.step), bool(case.section), bool(case.config))
        if seen.setdefault(shape, 0) < 2:
            seen[shape] += 1
            sample.append(case)
    return sample


def test_bad_notebooks_of_each_shape_through_the_cli(tmp_path):
    """``jupyter nbconvert --to kale`` on two cases of each shape of message (every case
    runs in the exhaustive profile; every case's message is checked in-process above)."""
    _assert_the_cli_refuses_cleanly(tmp_path, _cli_case_shapes())


@pytest.mark.exhaustive
def test_every_bad_notebook_through_the_cli(tmp_path):
    _assert_the_cli_refuses_cleanly(tmp_path, CASES)


def _assert_the_cli_refuses_cleanly(tmp_path, cases):
    """Each case through ``jupyter nbconvert --to kale``: exit code 1, stderr ending with
    the one-line message and no traceback, nothing written, the notebook unchanged."""
    paths, befores, jobs = [], [], []
    for case in cases:
        folder = tmp_path / case.id
        folder.mkdir()
        path = folder / f"{case.id}.ipynb"
        path.write_bytes(case.content)
        paths.append(path)
        befores.append(path.read_bytes())
        config = [f"--{key}={value}" for key, value in case.config.items()]
        jobs.append({"folder": str(folder), "args": ["--to", "kale", *config, path.name]})
    problems = []
    for case, path, before, result in zip(cases, paths, befores, run_cli_many(jobs)):
        lines = result["stderr"].strip().splitlines()
        last = lines[-1] if lines else ""
        checks = {
            "exit code 1": result["rc"] == 1,
            "last line is our message": f"ERROR | {case.id}.ipynb" in last
            and all(fragment in last for fragment in case.expect),
            "no traceback": "Traceback" not in result["stderr"],
            "nothing on stdout": result["stdout"] == "",
            "notebook unchanged": path.read_bytes() == before,
            "no file written": sorted(p.name for p in path.parent.iterdir()) == [path.name],
        }
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            problems.append(f"{case.id}: {', '.join(failed)}\n{result['stderr']}")
    assert not problems, "\n\n".join(problems)


def test_debug_keeps_the_traceback(tmp_path):
    path = _write(tmp_path, CASES[0])
    result = run_nbconvert(path.parent, "--to", "kale", "--debug", path.name, timeout=120)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "not valid JSON" in result.stderr


def test_a_failed_conversion_leaves_an_earlier_script_alone(tmp_path):
    """nbconvert writes only after a successful export: a failure never truncates or
    half-writes the output of an earlier conversion."""
    folder = tmp_path / "nb"
    folder.mkdir()
    good = folder / "nb.ipynb"
    good.write_bytes(nb_bytes(GOOD))
    run = lambda: run_nbconvert(folder, "--to", "kale", "nb.ipynb", timeout=120)  # noqa: E731
    assert run().returncode == 0
    script = (folder / "nb.py").read_bytes()
    good.write_bytes(nb_bytes(GOOD[:-1] + [("y = x +", ["step:b", "prev:a"])]))
    result = run()
    assert result.returncode != 0 and "cell 3, step b" in result.stderr
    assert (folder / "nb.py").read_bytes() == script
    assert sorted(p.name for p in folder.iterdir()) == ["nb.ipynb", "nb.py"]


def test_stdin_input_gets_the_same_messages(tmp_path):
    result = run_nbconvert(tmp_path, "--to", "kale", "--stdin", "--stdout", stdin="{not json",
                           timeout=120)
    assert result.returncode != 0
    assert "not valid JSON at line 1" in result.stderr
    assert "Traceback" not in result.stderr


# -- inputs that look odd but are fine ------------------------------------------------


def _embedded_cells(script: str) -> dict[int, str]:
    """cell number -> code, from every ``(number, 'code')`` tuple in the script."""
    import ast

    return {number: codes[-1] for number, codes in embedded_cells(ast.parse(script)).items()}


def _convert_file(tmp_path: Path, content: bytes, name="nb.ipynb") -> str:
    path = tmp_path / name
    path.write_bytes(content)
    before = path.read_bytes()
    output, _ = KaleExporter().from_filename(str(path))
    assert path.read_bytes() == before
    return output


def test_crlf_line_endings_in_the_file_and_in_cells(tmp_path):
    source = "x = 1\r\nif x:\r\n    y = 2\r\n"
    content = nb_bytes([(source, ["step:a"]), ("z = y\r\n", ["step:b", "prev:a"])])
    content = content.replace(b"\n", b"\r\n")  # the JSON file itself written on Windows
    script = _convert_file(tmp_path, content)
    cells = _embedded_cells(script)
    assert cells[1] == source and cells[2] == "z = y\r\n"
    compile(script, "nb.py", "exec")


def test_tabs_for_indentation(tmp_path):
    source = "def f(a):\n\tif a:\n\t\treturn 1\n\treturn 2\nx = f(1)"
    script = _convert_file(tmp_path, nb_bytes([(source, ["step:a"]), ("print(x)", ["step:b", "prev:a"])]))
    assert _embedded_cells(script)[1] == source


def test_a_utf8_bom_is_accepted(tmp_path):
    script = _convert_file(tmp_path, b"\xef\xbb\xbf" + nb_bytes(GOOD))
    assert _embedded_cells(script)[3] == "y = x + 1"


def test_a_5_mb_cell(tmp_path):
    import time

    blob = "".join(chr(32 + (i * 7919) % 95) for i in range(5_000_000))
    source = f"data = {blob!r}\nsize = len(data)\n# done ''' \"\"\""
    content = nb_bytes([(source, ["step:a"]), ("print(size)", ["step:b", "prev:a"])])
    assert len(content) > 5_000_000
    started = time.perf_counter()
    script = _convert_file(tmp_path, content)
    assert time.perf_counter() - started < 60
    assert _embedded_cells(script)[1] == source
    compile(script, "nb.py", "exec")


def test_non_ascii_names_and_text(tmp_path):
    source = "données = 'ünïcödé ✓ \U0001f600'\n# コメント"
    script = _convert_file(
        tmp_path,
        nb_bytes([(source, ["step:a"]), ("print(données)", ["step:b", "prev:a"])]),
        name="café ☕.ipynb",
    )
    assert _embedded_cells(script)[1] == source
    script.encode("utf-8")


def test_lone_surrogates_in_metadata_stay_escaped(tmp_path):
    """JSON's "\\ud800" escape gives Python a lone surrogate; in metadata it must reach
    the script escaped (raw, the script could not even be written as UTF-8)."""
    metadata = {"kubeflow_notebook": {"pipeline_description": "\udfff \ud800" + "'" * 3,
                                      "experiment_name": "\ud800"}}
    source = "s = '\\ud800'"  # the escape as text is fine
    content = raw_bytes(v4([code(source, ["step:a"]), code("t = s", ["step:b", "prev:a"])], metadata))
    script = _convert_file(tmp_path, content)
    script.encode("utf-8")  # FilesWriter can write it
    assert _embedded_cells(script)[1] == source
    compile(script, "nb.py", "exec")


def test_old_nbformat_minor_versions_convert(tmp_path):
    nb = make_notebook(GOOD)
    data = json.loads(nbformat.writes(nb))
    data["nbformat_minor"] = 0
    for cell in data["cells"]:
        cell.pop("id", None)
    script = _convert_file(tmp_path, raw_bytes(data))
    assert "def build_pipeline" in script


def test_conversion_is_byte_identical_across_processes(tmp_path):
    """Same notebook, a fresh interpreter and this one, with different hash seeds: same
    bytes (one new process, not two: this worker's seed is another one already)."""
    path = tmp_path / "nb.ipynb"
    path.write_bytes(
        nb_bytes(
            [
                ("import math, os, json", ["imports"]),
                ("n = 3\nname = 'x'\nopts = {'b': 1, 'a': [1, 2]}", ["pipeline-parameters"]),
                ("a = {i: math.sqrt(i) for i in range(n)}\nb = set(range(n))\nc = 1", ["step:one", "label:team:ml", "annotation:z:1", "annotation:a:2"]),
                ("d = len(a) + len(b) + c\ne = len(opts)", ["step:two", "prev:one", "limit:memory:1Gi", "limit:cpu:1"]),
                ("f = d + 1\ng = name", ["step:three", "prev:one", "prev:two"]),
                ("f", ["pipeline-metrics"]),
            ],
            metadata={"steps_defaults": ["label:env:dev"], "volumes": [{"name": "data", "mount_point": "/data", "type": "pvc"}]},
        )
    )
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    result = subprocess.run(
        [sys.executable, "-m", "nbconvert", "--to", "kale", "--output-dir", str(tmp_path / "out"), "nb.ipynb"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONHASHSEED": seed},
    )
    assert result.returncode == 0, result.stderr
    nb = nbformat.reads(path.read_text(), as_version=4)
    assert convert(nb, "nb.ipynb")[0] == convert(nb, "nb.ipynb")[0]
    assert convert(nb, "nb.ipynb")[0].encode() == (tmp_path / "out" / "nb.py").read_bytes()


# -- run-time faults, through generated scripts run with --local ------------------------
# A fault must fail its step with a message naming the step (and the cell where the
# runtime knows it), and nothing downstream may run on a stale or partial value.


def _marker_cell(folder: Path, name: str) -> str:
    return f"import pathlib\npathlib.Path({str(folder / name)!r}).write_text('ran')"


def _local(tmp_path: Path, cells, name="rt.ipynb", *args):
    from helpers import run_script, write_script

    script = write_script(make_notebook(cells), tmp_path / "run", name)
    result = run_script(script, "--local", *args)
    return script, result, result.stdout + result.stderr


@pytest.mark.slow
def test_a_failing_cell_names_step_cell_and_line_and_stops_downstream(tmp_path):
    _, result, output = _local(
        tmp_path,
        [
            ("x = 1", ["step:a"]),
            ("markdown", "m"),
            ("y = x\nz = y / 0", ["step:b", "prev:a"]),
            (_marker_cell(tmp_path, "c-ran") + "\nw = z", ["step:c", "prev:b"]),
        ],
    )
    assert result.returncode != 0
    assert 'File "rt.ipynb cell 3, step b", line 2' in output
    assert "kale: step 'b' failed in rt.ipynb cell 3, step b, line 2: ZeroDivisionError" in output
    assert not (tmp_path / "c-ran").exists()


@pytest.mark.slow
def test_an_output_that_cannot_be_serialized_fails_its_step(tmp_path):
    _, result, output = _local(
        tmp_path,
        [
            ("gen = (i for i in range(3))", ["step:a"]),
            (_marker_cell(tmp_path, "b-ran") + "\nitems = list(gen)", ["step:b", "prev:a"]),
        ],
    )
    assert result.returncode != 0
    assert "step 'a' failed" in output and "'gen'" in output, output[-3000:]
    assert not (tmp_path / "b-ran").exists()


@pytest.mark.slow
def test_a_step_killed_while_writing_its_output_stops_downstream(tmp_path):
    """SIGKILL in the middle of writing an artifact: no complete artifact is left and
    the consumer never runs (kfp.local names the failed task)."""
    bomb = (
        "import os, signal\n"
        "class Bomb:\n"
        "    def __reduce__(self):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "data = ['x' * 1_000_000, Bomb()]"
    )
    script, result, output = _local(
        tmp_path,
        [(bomb, ["step:a"]), (_marker_cell(tmp_path, "b-ran") + "\nn = len(data)", ["step:b", "prev:a"])],
    )
    assert result.returncode != 0
    assert "'a'" in output or "task a" in output.lower() or " a " in output, output[-2000:]
    assert not (tmp_path / "b-ran").exists()


@pytest.mark.slow
def test_a_failed_rerun_never_feeds_downstream_the_previous_runs_value(tmp_path):
    cells = [
        ("fail = False", ["pipeline-parameters"]),
        ("if fail:\n    raise RuntimeError('upstream broke')\nx = 41", ["step:a"]),
        (_marker_cell(tmp_path, "b-ran") + "\ny = x + 1", ["step:b", "prev:a"]),
    ]
    script, result, output = _local(tmp_path, cells)
    assert result.returncode == 0, output[-3000:]
    assert (tmp_path / "b-ran").exists()
    (tmp_path / "b-ran").unlink()
    from helpers import run_script

    again = run_script(script, "--local", "--param", "fail=true")
    assert again.returncode != 0
    assert "upstream broke" in again.stdout + again.stderr
    assert not (tmp_path / "b-ran").exists()


def _call_step(script: Path, step: str, **paths) -> subprocess.CompletedProcess:
    """Run one step function of the generated script (step ``b`` is ``b_step``) as a
    container would, with the given artifact paths (``x_in=...``, ``y_out=...``) and its
    HTML report beside the script."""
    paths.setdefault("report", str(script.parent / f"{step}-report.html"))
    program = (
        "import importlib.util, sys, types\n"
        f"spec = importlib.util.spec_from_file_location('generated', {str(script)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        f"paths = {paths!r}\n"
        f"getattr(module, {step + '_step'!r})(**{{k: types.SimpleNamespace(path=v) for k, v in paths.items()}})\n"
    )
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_missing_or_truncated_input_artifact_fails_the_step_by_name(tmp_path):
    from helpers import write_script

    nb = make_notebook(
        [("x = [1, 2, 3]", ["step:a"]), (_marker_cell(tmp_path, "b-ran") + "\ny = x + [4]", ["step:b", "prev:a"])]
    )
    script = write_script(nb, tmp_path / "run", "art.ipynb")
    missing = _call_step(script, "b", x_in=str(tmp_path / "nowhere" / "x"))
    assert missing.returncode != 0
    assert "step 'b' failed" in missing.stderr and "'x'" in missing.stderr, missing.stderr
    assert "step 'a'" in missing.stderr or "from 'a'" in missing.stderr, missing.stderr
    assert not (tmp_path / "b-ran").exists()

    produced = _call_step(script, "a", x_out=str(tmp_path / "x"))
    assert produced.returncode == 0, produced.stderr
    artifact = tmp_path / "x"
    files = [p for p in artifact.rglob("*") if p.is_file()] if artifact.is_dir() else [artifact]
    for file in files:  # as if the producer had been killed mid-write
        data = file.read_bytes()
        file.write_bytes(data[: len(data) // 2])
    partial = _call_step(script, "b", x_in=str(tmp_path / "x"))
    assert partial.returncode != 0
    assert "step 'b' failed" in partial.stderr and "'x'" in partial.stderr, partial.stderr
    assert not (tmp_path / "b-ran").exists()


# -- papermill's injected-parameters cell, prev: on the step's own first cell ---------------
# (run by the same checks as CASES: one line naming cell, step or section, and a fix)


def _injected(source: str) -> dict:
    """papermill's cell as it writes it: tags exactly ['injected-parameters']."""
    return code("# Parameters\n" + source, ["injected-parameters"])


MORE_CASES = [
    Case(
        "prev-itself-on-the-first-cell-of-a-continued-step",
        nb_bytes([("x = 1", ["step:a", "prev:a"]), ("y = x", ["prev:a"])]),
        ["step 'a' lists itself in 'prev:'", "remove 'prev:a'"],
        cell=1,
        step="a",
    ),
    Case(
        "injected-parameter-none",
        raw_bytes(v4([code("seed = 42", ["parameters"]), _injected("seed = None\n"), code("print(seed)", ["step:a"])])),
        ["parameter 'seed' has the value None", "run papermill with a value of type int", "delete the 'injected-parameters' cell"],
        cell=2,
        section="pipeline-parameters",
    ),
    Case(
        "injected-parameter-not-a-literal",
        raw_bytes(v4([code("rate = 0.5", ["parameters"]), _injected("rate = float('nan')\n"), code("print(rate)", ["step:a"])])),
        ["the value of parameter 'rate' is not a literal"],
        cell=2,
        section="pipeline-parameters",
    ),
    Case(
        "injected-cell-also-tagged-imports",
        raw_bytes(v4([code("x = 1", ["step:a"]), code("seed = 1", ["injected-parameters", "imports"])])),
        ["tags 'imports' and 'injected-parameters' conflict on one cell", "keep one of them"],
        cell=2,
    ),
]


@pytest.mark.parametrize("case", MORE_CASES, ids=[case.id for case in MORE_CASES])
def test_more_bad_notebooks_give_one_clear_error(tmp_path, case):
    test_bad_notebook_gives_one_clear_error(tmp_path, case)


def test_more_bad_notebooks_through_the_cli(tmp_path):
    jobs = []
    for case in MORE_CASES:
        folder = tmp_path / case.id
        folder.mkdir()
        (folder / f"{case.id}.ipynb").write_bytes(case.content)
        jobs.append({"folder": str(folder), "args": ["--to", "kale", f"{case.id}.ipynb"]})
    for case, result in zip(MORE_CASES, run_cli_many(jobs)):
        last = result["stderr"].strip().splitlines()[-1]
        assert result["rc"] == 1, result["stderr"]
        assert f"ERROR | {case.id}.ipynb" in last and all(f in last for f in case.expect), result["stderr"]
        assert "Traceback" not in result["stderr"]
        assert sorted(p.name for p in (tmp_path / case.id).iterdir()) == [f"{case.id}.ipynb"]
