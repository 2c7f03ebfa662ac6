"""Which KFP artifact type each output gets, and which outputs cannot travel at all.

A producer declares ``Output[Dataset]`` or ``Output[Model]`` where the code makes the
type evident (``pd.read_csv``, ``np.array``, an estimator constructor, ``.fit``), else
``Output[Artifact]``; consumers declare the same type (``Input[Model]``). The in-step
runtime still picks the serializer from the value's actual type: the kind is what the
KFP UI and compiler see. Pure, beside ``analysis.py``: the cells in notebook order in,
the kinds and warnings out. Runs at conversion (``MarshalInjectionPreprocessor``).
"""

from __future__ import annotations

import ast

from . import syntax
from .analysis import import_bindings
from .model import Pipeline, Step

DATA_MODULES = ("pandas", "numpy", "polars", "pyarrow", "torch")
DATA_FUNCTIONS = {
    "DataFrame", "Series", "Index", "Categorical", "concat", "merge", "get_dummies",
    "pivot_table", "crosstab", "array", "asarray", "zeros", "ones", "empty", "full",
    "arange", "linspace", "concatenate", "stack", "vstack", "hstack", "column_stack",
    "where", "load", "loadtxt", "genfromtxt", "fromfile", "rand", "randn", "random",
    "normal", "uniform", "integers", "randint", "choice", "tensor", "from_numpy",
    "zeros_like", "ones_like", "empty_like", "full_like", "table", "from_pandas", "eye",
}
"""Calls of these (in a module of DATA_MODULES, or ``read_*``) return tables or arrays."""
MODEL_MODULES = ("sklearn", "xgboost", "lightgbm", "catboost", "torch.nn", "keras", "tensorflow.keras", "tf_keras")
MODEL_FUNCTIONS = {"make_pipeline", "make_union", "make_column_transformer"}
MODEL_BASES = {"Module", "Model", "BaseEstimator", "Sequential"}
"""A notebook class deriving from one of these builds models."""
DATA_METHODS = {
    "fit_transform", "transform", "inverse_transform", "predict", "predict_proba",
    "decision_function", "to_numpy", "copy", "dropna", "drop", "fillna", "reset_index",
    "set_index", "sort_values", "astype", "head", "tail", "sample", "query", "assign",
    "merge", "join", "rename", "apply", "reshape", "flatten", "ravel", "numpy", "to_frame",
    "drop_duplicates", "select_dtypes", "replace", "clip", "round", "abs",
}
"""Methods of a table, array or model that return a table or an array."""
UNTRAVELLING_CALLS = {
    "open": "an open file",
    "sqlite3.connect": "a database connection",
    "psycopg2.connect": "a database connection",
    "psycopg.connect": "a database connection",
    "pymysql.connect": "a database connection",
    "mysql.connector.connect": "a database connection",
    "sqlalchemy.create_engine": "a database engine",
    "socket.socket": "a socket",
    "socket.create_connection": "a socket",
    "threading.Lock": "a lock",
    "threading.RLock": "a lock",
    "threading.Thread": "a thread",
    "subprocess.Popen": "a running process",
    "pyspark.SparkContext": "a Spark context",
}
"""Calls whose result cannot travel between steps (warned about at conversion)."""


def _all_nodes(codes, keyword):
    """Every AST node of every code string that parses (the others are reported by
    name analysis, which runs first) and contains ``keyword``."""
    for code in codes:
        yield from syntax.nodes_if(code, keyword)


def import_aliases(codes) -> dict[str, str]:
    """Names bound by imports anywhere in ``codes`` -> the dotted name they stand for."""
    aliases: dict[str, str] = {}
    for node in _all_nodes(codes, "import"):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
            aliases.update(import_bindings(node))
    return aliases


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Call):  # SparkSession.builder.appName(...).getOrCreate()
        inner = _dotted(node.func, aliases)
        return None if inner is None else ".".join([inner, *reversed(parts)])
    if not isinstance(node, ast.Name):
        return None
    return ".".join([aliases.get(node.id, node.id), *reversed(parts)])


def _in_modules(name: str, modules) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


class _KindTracker:
    """Follows, in notebook order, which names hold tables/arrays or models."""

    def __init__(self, aliases: dict[str, str], model_classes: set[str]):
        self.aliases = aliases
        self.model_classes = model_classes
        self.kinds: dict[str, str] = {}

    def kind_of(self, value: ast.AST) -> str:
        if isinstance(value, ast.Call):
            func = value.func
            if isinstance(func, ast.Attribute) and not self._is_module(func.value):
                own = self.kind_of(func.value)
                if func.attr == "fit" and own == "Model":
                    return "Model"
                if func.attr in DATA_METHODS and own != "Artifact":
                    return "Dataset"
            name = _dotted(func, self.aliases) or ""
            last = name.rpartition(".")[2]
            if name in self.model_classes or last in MODEL_FUNCTIONS:
                return "Model"
            if _in_modules(name, MODEL_MODULES) and last[:1].isupper():
                return "Model"
            if _in_modules(name, DATA_MODULES) and (last in DATA_FUNCTIONS or last.startswith("read_")):
                return "Dataset"
            return "Artifact"
        if isinstance(value, ast.Subscript):
            return "Dataset" if self.kind_of(value.value) == "Dataset" else "Artifact"
        if isinstance(value, ast.Attribute) and value.attr in ("values", "T", "loc", "iloc"):
            return "Dataset" if self.kind_of(value.value) == "Dataset" else "Artifact"
        if isinstance(value, ast.BinOp):
            kinds = {self.kind_of(value.left), self.kind_of(value.right)}
            return "Dataset" if "Dataset" in kinds else "Artifact"
        if isinstance(value, ast.Name):
            return self.kinds.get(value.id, "Artifact")
        return "Artifact"

    def _is_module(self, node: ast.AST) -> bool:
        return isinstance(node, ast.Name) and node.id in self.aliases and node.id not in self.kinds

    def assign(self, targets, value: ast.AST) -> None:
        split = isinstance(value, ast.Call) and (_dotted(value.func, self.aliases) or "").endswith("train_test_split")
        for target in targets:
            if isinstance(target, ast.Name):
                self._set(target.id, self.kind_of(value))
            elif isinstance(target, (ast.Tuple, ast.List)):
                values = value.elts if isinstance(value, (ast.Tuple, ast.List)) else None
                for index, element in enumerate(target.elts):
                    if not isinstance(element, ast.Name):
                        continue
                    if split:
                        self._set(element.id, "Dataset")
                    elif values is not None and len(values) == len(target.elts):
                        self._set(element.id, self.kind_of(values[index]))
                    else:
                        self._set(element.id, "Artifact")

    def _set(self, name: str, kind: str) -> None:
        if kind == "Artifact":
            self.kinds.pop(name, None)
        else:
            self.kinds[name] = kind

    def run(self, code: str) -> None:
        try:
            tree = syntax.parse(code)
        except SyntaxError:
            return
        for node in _module_statements(tree.body):
            if isinstance(node, ast.Assign):
                self.assign(node.targets, node.value)
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                self.assign([node.target], node.value)


def _module_statements(body):
    """Statements run at module level, in order (into if/for/with/try bodies)."""
    for node in body:
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for field in ("body", "orelse", "finalbody"):
            yield from _module_statements(getattr(node, field, []) or [])
        for handler in getattr(node, "handlers", []) or []:
            yield from _module_statements(handler.body)


def model_classes(codes, aliases: dict[str, str]) -> set[str]:
    """Classes defined in the notebook that build models (torch/keras/scikit-learn)."""
    found = set()
    for node in _all_nodes(codes, "class"):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                name = _dotted(base, aliases) or ""
                if name.rpartition(".")[2] in MODEL_BASES or name in found:
                    found.add(node.name)
    return found


def untravelling_outputs(step: Step, aliases: dict[str, str]) -> list[tuple[str, int, int, str, str]]:
    """Outputs whose value evidently cannot travel: ``(name, cell, line, call, what)``."""
    found = []
    for cell in step.cells:
        try:
            tree = syntax.parse(cell.code)
        except SyntaxError:
            continue
        for node in _module_statements(tree.body):
            if not isinstance(node, ast.Assign):
                continue
            names = [t.id for t in node.targets if isinstance(t, ast.Name) and t.id in step.outputs]
            if not names:
                continue
            value = node.value
            if isinstance(value, ast.GeneratorExp):
                call, what = "(... for ...)", "a generator"
            elif isinstance(value, ast.Call):
                call = _dotted(value.func, aliases) or ""
                what = UNTRAVELLING_CALLS.get(call)
                if what is None and call.endswith(".getOrCreate") and "Spark" in call:
                    what = "a Spark session"
                if what is None:
                    continue
                call += "(...)"
            else:
                continue
            for name in names:
                found.append((name, cell.number, node.lineno, call, what))
    return found


def plan_artifacts(pipeline: Pipeline) -> list[str]:
    """Fill each step's ``output_kinds``; returns warnings about
    outputs that evidently cannot travel between steps."""
    codes = [c.code for c in pipeline.shared_cells]
    for step in pipeline.step_list():
        codes += [c.code for c in step.cells]
    aliases = import_aliases(codes)
    tracker = _KindTracker(aliases, model_classes(codes, aliases))
    for cell in pipeline.shared_cells:
        tracker.run(cell.code)
    warnings = []
    for step in pipeline.step_list():
        for cell in step.cells:
            tracker.run(cell.code)
        step.output_kinds = {
            name: tracker.kinds[name] for name in step.outputs if name in tracker.kinds
        }
        for name, cell, line, call, what in untravelling_outputs(step, aliases):
            warnings.append(
                f"{pipeline.notebook} cell {cell}, line {line}: step {step.name!r} hands on "
                f"{name!r} = {call}, {what}, which cannot travel between steps (the step "
                "will fail when it ends). Fix: re-create it in the step that uses it, or "
                "move its creation into the 'functions' or 'imports' cells"
            )
    return warnings
