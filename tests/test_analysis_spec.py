"""Table-driven specification of the data-dependency analysis (analysis.py + dataflow.py).

Each case is a tiny notebook: shared ``imports``/``functions`` cells, a
``pipeline-parameters`` cell, then steps in notebook order, each with its ``prev:``
edges and cells (a :class:`Skip` cell is tagged ``skip`` and excluded). Cells are
numbered 1, 2, ... in exactly that order (imports, functions, parameters, step cells),
so an expected error's cell number can be read off the table.

A case expects either, per step, some of ``inputs`` (name -> producer step),
``outputs``, ``parameters``, ``imports`` (replayed import statements) and ``upstream``
(compared exactly; keys left out are not checked), or an :class:`Err`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from kale_nbconvert.analysis import DEFAULT_RULES
from kale_nbconvert.dataflow import plan_dataflow
from kale_nbconvert.errors import NotebookError
from kale_nbconvert.magics import ipython_to_python
from kale_nbconvert.model import Cell, Parameter, Pipeline, Step


@dataclass(frozen=True)
class Skip:
    """A cell tagged ``skip`` sitting at this position in the notebook."""

    source: str


@dataclass(frozen=True)
class Err:
    """The expected :class:`NotebookError`: message substrings and where it points."""

    text: str | tuple[str, ...]
    step: str | None
    cell: int
    line: int | None = None
    fix: str | None = None


@dataclass
class Case:
    steps: list
    expect: dict = field(default_factory=dict)
    error: Err | None = None
    imports: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)
    rules: dict = field(default_factory=dict)
    """Options of ``CallRules.extended`` (the ``--NameAnalysisPreprocessor`` lists)."""


def step(name, *cells, prev=()):
    return (name, list(prev), list(cells))


def ok(id, steps, expect, **options):
    return pytest.param(Case(steps, expect=expect, **options), id=id)


def err(id, steps, error, **options):
    return pytest.param(Case(steps, error=error, **options), id=id)


def build(case: Case) -> Pipeline:
    pipeline = Pipeline(notebook="spec.ipynb")
    numbers = itertools.count(1)

    def cell(source):
        return Cell(next(numbers), source, ipython_to_python(source))

    pipeline.imports_cells = [cell(source) for source in case.imports]
    pipeline.functions_cells = [cell(source) for source in case.functions]
    if case.params:
        parameters_cell = cell("\n".join(f"{k} = {v!r}" for k, v in case.params.items()))
        pipeline.parameters_cells = [parameters_cell]
        for line, (name, value) in enumerate(case.params.items(), 1):
            pipeline.parameters[name] = Parameter(
                name, type(value).__name__, value, parameters_cell.number, line
            )
    for name, prev, sources in case.steps:
        new = Step(name=name, prev=prev)
        for source in sources:
            if isinstance(source, Skip):
                pipeline.skipped_cells.append(cell(source.source))
            else:
                new.cells.append(cell(source))
        pipeline.steps[name] = new
    return pipeline


# A chain a -> b -> c used by many cases: step(..., prev=A) etc.
A, B, C = ("a",), ("b",), ("c",)

BASICS = [
    ok("read_from_parent", [step("a", "x = 1"), step("b", "y = x + 1", prev=A)],
       {"a": {"outputs": {"x"}, "inputs": {}}, "b": {"inputs": {"x": "a"}, "outputs": set()}}),
    ok("read_before_rebind_is_input", [step("a", "x = 1"), step("b", "x = x + 1", prev=A)],
       {"b": {"inputs": {"x": "a"}}, "a": {"outputs": {"x"}}}),
    ok("bound_before_read_is_not_input", [step("a", "x = 1"), step("b", "x = 2\nprint(x)", prev=A)],
       {"b": {"inputs": {}}, "a": {"outputs": set()}}),
    ok("last_writer_in_chain_wins",
       [step("a", "x = 1"), step("b", "x = 2", prev=A), step("c", "print(x)", prev=B)],
       {"c": {"inputs": {"x": "b"}}, "a": {"outputs": set()}, "b": {"outputs": {"x"}}}),
    ok("grandparent_value_skips_generation",
       [step("a", "x = 1"), step("b", "y = x", prev=A), step("c", "print(x, y)", prev=B)],
       {"c": {"inputs": {"x": "a", "y": "b"}}, "a": {"outputs": {"x"}}, "b": {"outputs": {"y"}}}),
    ok("transitive_ancestor_through_prev",
       [step("a", "x = 1"), step("b", "pass", prev=A), step("c", "print(x)", prev=B)],
       {"c": {"inputs": {"x": "a"}, "upstream": ["a", "b"]}, "b": {"inputs": {}}}),
    ok("join_gets_bag_from_kid2",
       [step("kid1", "bag = []"), step("kid2", "bag.append(2)", prev=("kid1",)),
        step("kid3", "z = 1", prev=("kid2",)),
        step("join", "print(bag)", prev=("kid1", "kid3"))],
       {"join": {"inputs": {"bag": "kid2"}, "upstream": ["kid1", "kid2", "kid3"]},
        "kid2": {"inputs": {"bag": "kid1"}, "outputs": {"bag"}},
        "kid1": {"outputs": {"bag"}}, "kid3": {"outputs": set()}}),
    err("join_without_path_to_last_mutator",
        [step("kid1", "bag = []"), step("kid2", "bag.append(2)", prev=("kid1",)),
         step("join", "print(bag)", prev=("kid1",))],
        Err(("'kid2'", "cell 2", "not an ancestor"), "join", 3, 1, fix="prev:kid2")),
    err("sibling_rebound_earlier_in_notebook_order",
        [step("a", "x = 1"), step("b", "x = 2", prev=A), step("c", "print(x)", prev=A)],
        Err(("'b'", "'x'"), "c", 3, 1, fix="add the tag 'prev:b'")),
    ok("several_cells_in_one_step",
       [step("a", "x = 1", "y = x * 2"), step("b", "print(y)", prev=A)],
       {"a": {"inputs": {}, "outputs": {"y"}}, "b": {"inputs": {"y": "a"}}}),
    ok("outputs_are_exactly_what_descendants_read",
       [step("a", "x = 1\ny = 2\nz = 3"), step("b", "print(x)", prev=A), step("c", "print(z)", prev=B)],
       {"a": {"outputs": {"x", "z"}}, "b": {"outputs": set()}, "c": {"inputs": {"z": "a"}}}),
    ok("nothing_read_nothing_output",
       [step("a", "x = 1"), step("b", "y = 2", prev=A)],
       {"a": {"outputs": set()}, "b": {"inputs": {}, "upstream": ["a"]}}),
    ok("diamond",
       [step("a", "x = 1"), step("b", "y = x", prev=A), step("c", "z = x", prev=A),
        step("d", "print(y, z)", prev=("b", "c"))],
       {"d": {"inputs": {"y": "b", "z": "c"}}, "a": {"outputs": {"x"}},
        "b": {"outputs": {"y"}}, "c": {"outputs": {"z"}}}),
    ok("data_edge_in_upstream",
       [step("a", "x = 1"), step("b", "y = 2", prev=A), step("c", "print(x)", prev=B)],
       {"c": {"upstream": ["a", "b"], "inputs": {"x": "a"}}}),
]

MUTATION = [
    ok("subscript_assign",
       [step("a", "df = {}"), step("b", "df['x'] = 1", prev=A), step("c", "print(df)", prev=B)],
       {"b": {"inputs": {"df": "a"}, "outputs": {"df"}}, "c": {"inputs": {"df": "b"}}}),
    ok("loc_assign",
       [step("a", "def make():\n    return 1", "df = make()"), step("b", "df.loc[df.a > 0, 'b'] = 0", prev=A),
        step("c", "print(df)", prev=B)],
       {"c": {"inputs": {"df": "b"}}}),
    ok("attribute_assign",
       [step("a", "class O:\n    pass\nobj = O()"), step("b", "obj.attr = 3", prev=A),
        step("c", "print(obj.attr)", prev=B)],
       {"c": {"inputs": {"obj": "b"}}, "b": {"inputs": {"obj": "a"}}}),
    ok("list_append",
       [step("a", "lst = []"), step("b", "lst.append(3)", prev=A), step("c", "print(lst)", prev=B)],
       {"c": {"inputs": {"lst": "b"}}, "a": {"outputs": {"lst"}}}),
    ok("dict_update",
       [step("a", "d = {}"), step("b", "d.update({'k': 1})", prev=A), step("c", "print(d)", prev=B)],
       {"c": {"inputs": {"d": "b"}}}),
    ok("dropna_inplace",
       [step("a", "def load():\n    return 1", "df = load()"), step("b", "df.dropna(inplace=True)", prev=A),
        step("c", "print(df)", prev=B)],
       {"c": {"inputs": {"df": "b"}}, "b": {"outputs": {"df"}}}),
    ok("dropna_without_inplace_is_a_read",
       [step("a", "df = 1"), step("b", "clean = df.dropna()", prev=A), step("c", "print(df, clean)", prev=B)],
       {"c": {"inputs": {"df": "a", "clean": "b"}}, "b": {"outputs": {"clean"}}}),
    ok("instance_of_notebook_class_carries_the_globals_its_methods_read",
       [step("a", "class Bag:\n    def add(self, k):\n        self.items = [k * factor]", "factor = 2\nbag = Bag()"),
        step("b", "bag.add(1)", prev=A)],
       {"b": {"inputs": {"bag": "a", "factor": "a"}}, "a": {"outputs": {"bag", "factor"}}}),
    ok("builtin_passed_as_argument_is_not_a_variable",
       [step("a", "import functools\nto_number = functools.partial(float)\nz = sorted([3], key=len)"),
        step("b", "x = float('1') + to_number('2') + len(z)", prev=A)],
       {"a": {"outputs": {"to_number", "z"}}, "b": {"inputs": {"to_number": "a", "z": "a"}}}),
    ok("model_fit",
       [step("a", "model = 1\nX = 2\ny = 3"), step("b", "model.fit(X, y)", prev=A),
        step("c", "print(model)", prev=B)],
       {"c": {"inputs": {"model": "b"}}, "b": {"inputs": {"model": "a", "X": "a", "y": "a"}}}),
    ok("augmented_assignment",
       [step("a", "x = 1"), step("b", "x += 1", prev=A), step("c", "print(x)", prev=B)],
       {"b": {"inputs": {"x": "a"}, "outputs": {"x"}}, "c": {"inputs": {"x": "b"}}}),
    ok("augmented_attribute",
       [step("a", "obj = 1"), step("b", "obj.count += 1", prev=A), step("c", "print(obj)", prev=B)],
       {"c": {"inputs": {"obj": "b"}}}),
    ok("method_on_nested_attribute",
       [step("a", "obj = 1"), step("b", "obj.items.append(1)", prev=A), step("c", "print(obj)", prev=B)],
       {"c": {"inputs": {"obj": "b"}}}),
    ok("nested_item_assign",
       [step("a", "cfg = {'a': {}}"), step("b", "cfg['a']['b'] = 1", prev=A), step("c", "print(cfg)", prev=B)],
       {"c": {"inputs": {"cfg": "b"}}}),
    ok("del_item_mutates",
       [step("a", "d = {'k': 1}"), step("b", "del d['k']", prev=A), step("c", "print(d)", prev=B)],
       {"c": {"inputs": {"d": "b"}}}),
    ok("passed_to_unknown_call_may_mutate",
       [step("a", "deck = [1, 2, 3]"), step("b", "import random\nrandom.shuffle(deck)", prev=A),
        step("c", "print(deck)", prev=B)],
       {"c": {"inputs": {"deck": "b"}}, "b": {"inputs": {"deck": "a"}}}),
    ok("unknown_method_may_mutate",
       [step("a", "df = 1"), step("b", "df.custom_thing()", prev=A), step("c", "print(df)", prev=B)],
       {"c": {"inputs": {"df": "b"}}}),
    ok("mutation_inside_if",
       [step("a", "lst = []\nflag = True"), step("b", "if flag:\n    lst.append(1)", prev=A),
        step("c", "print(lst)", prev=B)],
       {"c": {"inputs": {"lst": "b"}}, "b": {"inputs": {"lst": "a", "flag": "a"}}}),
    ok("mutation_in_loop_body",
       [step("a", "acc = []"), step("b", "for v in range(3):\n    acc.append(v)", prev=A),
        step("c", "print(acc)", prev=B)],
       {"c": {"inputs": {"acc": "b"}}}),
    ok("mutation_through_notebook_function",
       [step("a", "cache = {}\ndef remember(k):\n    cache[k] = 1"), step("b", "remember('x')", prev=A),
        step("c", "print(cache)", prev=B)],
       {"b": {"inputs": {"cache": "a", "remember": "a"}}, "c": {"inputs": {"cache": "b"}}}),
    ok("mutated_then_read_in_parallel_child_needs_prev",
       [step("a", "lst = []"), step("b", "lst.append(1)", prev=A), step("c", "print(lst)", prev=B)],
       {"c": {"inputs": {"lst": "b"}}}),
]

# Reads that must NOT count as changing ``df`` (c gets df from a, b outputs nothing).
READ_ONLY_FORMS = {
    "print_attribute": "print(df.shape)",
    "len": "n = len(df)",
    "isinstance_type": "ok_ = isinstance(df, list) and type(df) is list",
    "item_read": "col = df['a']",
    "arithmetic_comparison": "v = df.a + 1 > 0 and df == 0",
    "fstring": "s = f'{df} {df.a!r}'",
    "head_describe": "h = df.head()\nd = df.describe()",
    "predict": "p = df.predict(df)",
    "display": "display(df)",
    "read_only_method_chain": "m = df['a'].mean()",
}
READ_ONLY = [
    ok(f"read_only_{key}",
       [step("a", "df = 1"), step("b", code, prev=A), step("c", "print(df)", prev=B)],
       {"c": {"inputs": {"df": "a"}}, "b": {"inputs": {"df": "a"}, "outputs": set()}})
    for key, code in READ_ONLY_FORMS.items()
]

FUNCTIONS = [
    ok("function_used_later",
       [step("a", "def f(v):\n    return v * 2"), step("b", "y = f(3)", prev=A)],
       {"b": {"inputs": {"f": "a"}}, "a": {"outputs": {"f"}}}),
    ok("function_free_variable_travels",
       [step("s0", "K = 10"), step("a", "def f():\n    return K", prev=("s0",)),
        step("b", "f()", prev=A)],
       {"b": {"inputs": {"f": "a", "K": "s0"}}, "a": {"inputs": {}, "outputs": {"f"}},
        "s0": {"outputs": {"K"}}}),
    ok("free_variables_transitively",
       [step("a", "K = 1\ndef g():\n    return K\ndef f():\n    return g()"), step("b", "f()", prev=A)],
       {"b": {"inputs": {"f": "a", "g": "a", "K": "a"}}}),
    ok("free_variable_bound_after_def",
       [step("a", "def f():\n    return K", "K = 3"), step("b", "f()", prev=A)],
       {"b": {"inputs": {"f": "a", "K": "a"}}}),
    ok("free_variable_value_from_last_writer",
       [step("a", "K = 1\ndef f():\n    return K"), step("b", "K = 2", prev=A), step("c", "f()", prev=B)],
       {"c": {"inputs": {"f": "a", "K": "b"}}, "a": {"outputs": {"f"}}}),
    ok("unused_function_body_read_is_not_an_input",
       [step("a", "def f():\n    return MISSING"), step("b", "y = 1", prev=A)],
       {"a": {"inputs": {}}, "b": {"inputs": {}}}),
    err("called_function_reads_undefined_global",
        [step("a", "def f():\n    return MISSING"), step("b", "y = 1\nf()", prev=A)],
        Err(("'MISSING'", "is never defined in this notebook"), "b", 2, 2)),
    ok("class_method_reads_global",
       [step("a", "SCALE = 2\nclass M:\n    def go(self):\n        return SCALE"), step("b", "m = M()", prev=A)],
       {"b": {"inputs": {"M": "a", "SCALE": "a"}}}),
    ok("function_passed_as_value",
       [step("a", "OFF = 1\ndef f(v):\n    return v + OFF\nxs = [1]"), step("b", "ys = list(map(f, xs))", prev=A)],
       {"b": {"inputs": {"f": "a", "OFF": "a", "xs": "a"}}}),
    ok("lambda_bound_to_name_is_a_function",
       [step("a", "g = lambda v: v + OFFSET", "OFFSET = 5"), step("b", "g(1)", prev=A)],
       {"a": {"inputs": {}}, "b": {"inputs": {"g": "a", "OFFSET": "a"}}}),
    ok("default_argument_read_at_definition",
       [step("a", "D = 1"), step("b", "def f(v=D):\n    return v", prev=A), step("c", "f()", prev=B)],
       {"b": {"inputs": {"D": "a"}}, "c": {"inputs": {"f": "b"}}}),
    ok("decorator_read_at_definition",
       [step("a", "def deco(fn):\n    return fn"), step("b", "@deco\ndef f():\n    return 1", prev=A)],
       {"b": {"inputs": {"deco": "a"}}}),
    ok("recursive_function",
       [step("a", "def fact(n):\n    return 1 if n < 2 else n * fact(n - 1)"), step("b", "fact(3)", prev=A)],
       {"b": {"inputs": {"fact": "a"}}}),
    ok("redefined_function_drops_old_free_names",
       [step("a", "K = 1\ndef f():\n    return K"), step("b", "def f():\n    return 1", prev=A),
        step("c", "f()", prev=B)],
       {"c": {"inputs": {"f": "b"}}, "a": {"outputs": set()}}),
    ok("rebinding_function_name_forgets_body",
       [step("a", "def f():\n    return MISSING"), step("b", "f = 3\nprint(f)", prev=A)],
       {"b": {"inputs": {}}}),
    ok("mutated_function_keeps_its_free_names",
       [step("a", "K = 1\ndef f():\n    return K"), step("b", "f.cache_clear()", prev=A), step("c", "f()", prev=B)],
       {"c": {"inputs": {"f": "b", "K": "a"}}}),
    ok("method_free_names_read_when_class_used",
       [step("a", "class M:\n    def go(self):\n        return RATE"), step("b", "RATE = 2", prev=A),
        step("c", "M().go()", prev=B)],
       {"a": {"inputs": {}}, "c": {"inputs": {"M": "a", "RATE": "b"}}}),
    ok("function_mutating_its_argument",
       [step("a", "def add(l):\n    l.append(1)\nitems = []"), step("b", "add(items)", prev=A),
        step("c", "print(items)", prev=B)],
       {"c": {"inputs": {"items": "b"}}}),
]

SCOPING = [
    err("list_comprehension_variable_does_not_leak",
        [step("a", "sq = [i * i for i in range(3)]"), step("b", "print(i)", prev=A)],
        Err("is never defined", "b", 2, 1)),
    err("generator_variable_does_not_leak",
        [step("a", "t = sum(j for j in range(3))"), step("b", "print(j)", prev=A)],
        Err("is never defined", "b", 2, 1)),
    err("dict_comprehension_variables_do_not_leak",
        [step("a", "m = {k: v for k, v in [(1, 2)]}"), step("b", "print(k)", prev=A)],
        Err("'k'", "b", 2, 1)),
    err("lambda_argument_does_not_leak",
        [step("a", "f = lambda q: q"), step("b", "print(q)", prev=A)],
        Err("is never defined", "b", 2, 1)),
    err("function_local_does_not_leak",
        [step("a", "def f():\n    loc = 1"), step("b", "print(loc)", prev=A)],
        Err("is never defined", "b", 2, 1)),
    ok("comprehension_free_names_are_inputs",
       [step("a", "SCALE = 2\nxs = [1]"), step("b", "ys = [v * SCALE for v in xs]", prev=A)],
       {"b": {"inputs": {"SCALE": "a", "xs": "a"}}}),
    ok("global_in_called_function_binds",
       [step("a", "def setup():\n    global CONFIG\n    CONFIG = {'a': 1}\nsetup()"),
        step("b", "print(CONFIG)", prev=A)],
       {"a": {"inputs": {}}, "b": {"inputs": {"CONFIG": "a"}}}),
    ok("global_augmented_reads_and_binds",
       [step("s0", "counter = 0"), step("a", "def bump():\n    global counter\n    counter += 1\nbump()", prev=("s0",)),
        step("b", "print(counter)", prev=A)],
       {"a": {"inputs": {"counter": "s0"}}, "b": {"inputs": {"counter": "a"}}}),
    ok("global_read_in_function",
       [step("s0", "total = 5"), step("a", "def get():\n    global total\n    return total", prev=("s0",)),
        step("b", "get()", prev=A)],
       {"b": {"inputs": {"get": "a", "total": "s0"}}}),
    ok("for_target_binds",
       [step("a", "for item in range(3):\n    pass"), step("b", "print(item)", prev=A)],
       {"b": {"inputs": {"item": "a"}}}),
    ok("with_as_binds",
       [step("a", "with open(__file__) as fh:\n    text = fh.read()"), step("b", "print(text, fh)", prev=A)],
       {"b": {"inputs": {"text": "a", "fh": "a"}}}),
    ok("except_body_binds",
       [step("a", "try:\n    1 / 0\nexcept ZeroDivisionError as exc:\n    msg = str(exc)"),
        step("b", "print(msg)", prev=A)],
       {"b": {"inputs": {"msg": "a"}}, "a": {"inputs": {}}}),
    err("except_as_name_is_unbound_after_handler",
        [step("a", "try:\n    1 / 0\nexcept ZeroDivisionError as exc:\n    pass"), step("b", "print(exc)", prev=A)],
        Err("is never defined", "b", 2, 1)),
    ok("walrus_binds",
       [step("a", "if (n := 10) > 5:\n    pass"), step("b", "print(n)", prev=A)],
       {"b": {"inputs": {"n": "a"}}}),
    ok("walrus_in_comprehension_binds_outside",
       [step("a", "vals = [last := v for v in range(3)]"), step("b", "print(last)", prev=A)],
       {"b": {"inputs": {"last": "a"}}}),
    ok("tuple_and_star_unpacking_bind",
       [step("a", "p, q = 1, 2\nfirst, *rest = [1, 2, 3]"), step("b", "print(p, q, first, rest)", prev=A)],
       {"b": {"inputs": {"p": "a", "q": "a", "first": "a", "rest": "a"}}}),
    ok("match_capture_binds",
       [step("a", "point = (1, 2)\nmatch point:\n    case (px, py):\n        pass"), step("b", "print(px)", prev=A)],
       {"b": {"inputs": {"px": "a"}}}),
    err("del_then_read_names_deleting_step",
        [step("a", "x = 1"), step("b", "del x", prev=A), step("c", "print(x)", prev=B)],
        Err(("'b'", "deleted"), "c", 3, 1)),
    ok("del_reads_the_name",
       [step("a", "x = 1"), step("b", "del x", prev=A)],
       {"b": {"inputs": {"x": "a"}}}),
    ok("del_then_rebind",
       [step("a", "x = 1"), step("b", "del x\nx = 2", prev=A), step("c", "print(x)", prev=B)],
       {"c": {"inputs": {"x": "b"}}}),
    err("del_in_same_step_then_read",
        [step("a", "x = 1\ndel x\nprint(x)")],
        Err("'x'", "a", 1, 3)),
    ok("conditional_binding_counts",
       [step("s0", "flag = True"), step("a", "if flag:\n    x = 1", prev=("s0",)), step("b", "print(x)", prev=A)],
       {"b": {"inputs": {"x": "a"}}, "a": {"inputs": {"flag": "s0"}, "outputs": {"x"}}}),
    ok("conditional_binding_passes_older_value_through",
       [step("s0", "x = 0\nflag = True"), step("a", "if flag:\n    x = 1", prev=("s0",)), step("b", "print(x)", prev=A)],
       {"b": {"inputs": {"x": "a"}}, "a": {"inputs": {"flag": "s0", "x": "s0"}, "outputs": {"x"}},
        "s0": {"outputs": {"x", "flag"}}}),
    ok("conditional_binding_without_reader_needs_nothing",
       [step("s0", "x = 0"), step("a", "for x in range(3):\n    pass", prev=("s0",))],
       {"a": {"inputs": {}}, "s0": {"outputs": set()}}),
    ok("read_after_conditional_bind_in_same_branch",
       [step("s0", "flag = True\ny = 0"), step("a", "if flag:\n    y = 1\n    print(y)", prev=("s0",))],
       {"a": {"inputs": {"flag": "s0"}}}),
    ok("read_after_conditional_bind_takes_upstream_too",
       [step("s0", "flag = True\ny = 0"), step("a", "if flag:\n    y = 1\nprint(y)", prev=("s0",))],
       {"a": {"inputs": {"flag": "s0", "y": "s0"}}}),
    ok("read_after_conditional_bind_without_upstream",
       [step("s0", "flag = True"), step("a", "if flag:\n    y = 1\nprint(y)", prev=("s0",))],
       {"a": {"inputs": {"flag": "s0"}}}),
    ok("conditional_pass_through_chain",
       [step("s0", "x = 0\nflag = True"), step("a", "if flag:\n    x = 1", prev=("s0",)),
        step("b", "while flag:\n    x = 2\n    break", prev=A), step("c", "print(x)", prev=B)],
       {"c": {"inputs": {"x": "b"}}, "b": {"inputs": {"flag": "s0", "x": "a"}},
        "a": {"inputs": {"flag": "s0", "x": "s0"}, "upstream": ["s0"]}}),
    err("conditional_pass_through_needs_prev_too",
        [step("s0", "x = 0\nflag = True"), step("b", "x = 5", prev=("s0",)),
         step("c", "if flag:\n    x = 1", prev=("s0",)), step("d", "print(x)", prev=("c",))],
        Err(("step 'c'", "step 'b'", "'x'"), "c", 3, 2, fix="prev:b")),
    ok("conditional_global_bind_by_called_function",
       [step("s0", "LEVEL = 0"), step("a", "def maybe():\n    global LEVEL\n    if 1:\n        LEVEL = 3\nmaybe()", prev=("s0",)),
        step("b", "print(LEVEL)", prev=A)],
       {"b": {"inputs": {"LEVEL": "a"}}, "a": {"inputs": {"LEVEL": "s0"}}}),
    err("class_attribute_does_not_leak",
        [step("a", "class K:\n    z = 1"), step("b", "print(z)", prev=A)],
        Err("is never defined", "b", 2, 1)),
]

IMPORTS = [
    ok("import_replayed",
       [step("a", "import math"), step("b", "y = math.sqrt(4)", prev=A)],
       {"b": {"imports": {"import math"}, "inputs": {}}, "a": {"outputs": set()}}),
    ok("import_as_replayed",
       [step("a", "import numpy as np"), step("b", "np.zeros(3)", prev=A)],
       {"b": {"imports": {"import numpy as np"}, "inputs": {}, "outputs": set()}}),
    ok("from_import_replayed",
       [step("a", "from os import path"), step("b", "path.join('a')", prev=A)],
       {"b": {"imports": {"from os import path"}}}),
    ok("from_import_as_replayed",
       [step("a", "from collections import OrderedDict as OD"), step("b", "OD()", prev=A)],
       {"b": {"imports": {"from collections import OrderedDict as OD"}}}),
    ok("dotted_import_replayed",
       [step("a", "import os.path"), step("b", "os.getcwd()", prev=A)],
       {"b": {"imports": {"import os.path"}}}),
    ok("module_mutation_is_not_an_artifact",
       [step("a", "import random"), step("b", "random.seed(1)", prev=A), step("c", "random.random()", prev=B)],
       {"b": {"imports": {"import random"}, "outputs": set(), "inputs": {}},
        "c": {"imports": {"import random"}, "inputs": {}}}),
    ok("import_used_in_same_step_not_replayed",
       [step("a", "import math\nv = math.pi"), step("b", "print(v)", prev=A)],
       {"a": {"imports": set()}, "b": {"imports": set(), "inputs": {"v": "a"}}}),
    ok("unused_import_not_replayed",
       [step("a", "import math"), step("b", "y = 1", prev=A)],
       {"b": {"imports": set()}}),
    ok("module_used_inside_called_function",
       [step("a", "import math\ndef f():\n    return math.pi"), step("b", "f()", prev=A)],
       {"b": {"inputs": {"f": "a"}, "imports": {"import math"}}}),
    ok("rebound_module_name_becomes_artifact",
       [step("a", "import json"), step("b", "json = {'a': 1}", prev=A), step("c", "print(json)", prev=B)],
       {"c": {"inputs": {"json": "b"}, "imports": set()}}),
    err("star_import_in_step",
        [step("a", "x = 1", "from math import *")],
        Err(("from math import *",), "a", 2, 1, fix="import the names you use explicitly")),
    err("star_import_in_shared_imports",
        [step("a", "x = 1")],
        Err("import *", None, 1, 1), imports=("from os.path import *",)),
]

IPYTHON = [
    ok("line_magic", [step("a", "%matplotlib inline\nx = 1"), step("b", "print(x)", prev=A)],
       {"b": {"inputs": {"x": "a"}}, "a": {"inputs": {}}}),
    ok("cell_magic_bash", [step("a", "%%bash\necho $HOME\n")], {"a": {"inputs": {}}}),
    ok("shell_line", [step("a", "!ls -l\ny = 1"), step("b", "print(y)", prev=A)],
       {"b": {"inputs": {"y": "a"}}}),
    ok("shell_output_binds", [step("a", "files = !ls"), step("b", "print(files)", prev=A)],
       {"b": {"inputs": {"files": "a"}}}),
    ok("help_suffix_is_not_a_missing_name", [step("a", "len?")], {"a": {"inputs": {}}}),
    ok("help_suffix_reads_the_object",
       [step("a", "df = [1]"), step("b", "df.append?\ndf??", prev=A)],
       {"b": {"inputs": {"df": "a"}}}),
    ok("ipython_builtins", [step("a", "ip = get_ipython()\ndisplay(ip)\nprint(In, Out)")],
       {"a": {"inputs": {}}}),
    ok("time_line_magic_binds", [step("a", "%time x = 1"), step("b", "print(x)", prev=A)],
       {"b": {"inputs": {"x": "a"}}}),
    ok("time_cell_magic_reads_and_binds",
       [step("s0", "z = 1"), step("a", "%%time\ny = z + 1\n", prev=("s0",)), step("b", "print(y)", prev=A)],
       {"a": {"inputs": {"z": "s0"}}, "b": {"inputs": {"y": "a"}}}),
    ok("capture_cell_magic_binds_output_and_body",
       [step("a", "%%capture out\nw = 2\nprint(w)\n"), step("b", "print(out, w)", prev=A)],
       {"b": {"inputs": {"out": "a", "w": "a"}}}),
    err("cell_magic_line_numbers_are_cell_lines",
        [step("a", "%%time\ny = 1\nz = nope\n")],
        Err("'nope'", "a", 1, 3)),
    ok("time_magic_inside_if_is_conditional",
       [step("s0", "x = 0\nflag = True"), step("a", "if flag:\n    %time x = 1", prev=("s0",)),
        step("b", "print(x)", prev=A)],
       {"a": {"inputs": {"flag": "s0", "x": "s0"}}, "b": {"inputs": {"x": "a"}}}),
    ok("timeit_reads",
       [step("a", "def f(v):\n    return v\nx = 1"), step("b", "%timeit -n1 f(x)", prev=A)],
       {"b": {"inputs": {"f": "a", "x": "a"}}}),
    err("timeit_does_not_bind",
        [step("a", "%timeit t = 1"), step("b", "print(t)", prev=A)],
        Err("is never defined", "b", 2, 1)),
    ok("shell_braces_expand_variables",
       [step("s0", "fname = 'a.csv'"), step("a", "!echo {fname.upper()}", prev=("s0",))],
       {"a": {"inputs": {"fname": "s0"}}}),
    ok("shell_dollar_expands_variables",
       [step("s0", "fname = 'a.csv'"), step("a", "!wc -l $fname", prev=("s0",))],
       {"a": {"inputs": {"fname": "s0"}}}),
    ok("shell_dollar_environment_is_not_missing", [step("a", "!echo $HOME")], {"a": {"inputs": {}}}),
    ok("magic_error_analysis_on_transformed_code",
       [step("a", "%env A=1\n%store\nx = 1"), step("b", "x += 1", prev=A)],
       {"b": {"inputs": {"x": "a"}}}),
]

SHARED = [
    ok("shared_import_is_not_input_or_replayed",
       [step("a", "y = math.pi"), step("b", "print(math.e)", prev=A)],
       {"a": {"inputs": {}}, "b": {"inputs": {}, "imports": set()}}, imports=("import math",)),
    ok("shared_function_is_not_input",
       [step("a", "y = helper(1)")],
       {"a": {"inputs": {}}}, functions=("def helper(v):\n    return v + 1",)),
    ok("shared_function_global_from_step",
       [step("s0", "FACTOR = 3"), step("a", "y = scaled(2)", prev=("s0",)), step("b", "z = 1", prev=("s0",))],
       {"a": {"inputs": {"FACTOR": "s0"}}, "b": {"inputs": {}}, "s0": {"outputs": {"FACTOR"}}},
       functions=("def scaled(v):\n    return v * FACTOR",)),
    err("shared_function_global_never_defined",
        [step("a", "y = scaled(2)")],
        Err(("'FACTOR'", "is never defined"), "a", 2, 1),
        functions=("def scaled(v):\n    return v * FACTOR",)),
    ok("shared_function_global_unused_is_fine",
       [step("a", "y = 1")], {"a": {"inputs": {}}},
       functions=("def scaled(v):\n    return v * FACTOR",)),
    ok("shared_constant_is_not_input",
       [step("a", "print(THRESHOLD)")], {"a": {"inputs": {}}}, functions=("THRESHOLD = 0.5",)),
    ok("shared_function_mutating_step_global",
       [step("s0", "LOG = []"), step("a", "log('x')", prev=("s0",)), step("b", "print(LOG)", prev=A)],
       {"a": {"inputs": {"LOG": "s0"}, "outputs": {"LOG"}}, "b": {"inputs": {"LOG": "a"}}},
       functions=("def log(m):\n    LOG.append(m)",)),
    ok("step_redefining_shared_function_is_producer",
       [step("a", "def helper(v):\n    return 0"), step("b", "helper(1)", prev=A)],
       {"b": {"inputs": {"helper": "a"}}}, functions=("def helper(v):\n    return v + 1",)),
    ok("shared_function_calling_shared_function",
       [step("s0", "K = 1"), step("a", "outer()", prev=("s0",))],
       {"a": {"inputs": {"K": "s0"}}},
       functions=("def inner():\n    return K", "def outer():\n    return inner()")),
]

PARAMS = {"lr": 0.1, "epochs": 3}
PARAMETERS = [
    ok("parameter_read", [step("a", "print(lr)")],
       {"a": {"parameters": {"lr"}, "inputs": {}, "outputs": set()}}, params=PARAMS),
    ok("each_step_only_its_parameters",
       [step("a", "x = lr * 2"), step("b", "y = epochs + x", prev=A)],
       {"a": {"parameters": {"lr"}}, "b": {"parameters": {"epochs"}, "inputs": {"x": "a"}}}, params=PARAMS),
    ok("parameter_through_step_function",
       [step("a", "def f():\n    return lr * 2"), step("b", "f()", prev=A)],
       {"a": {"parameters": set()}, "b": {"parameters": {"lr"}, "inputs": {"f": "a"}}}, params=PARAMS),
    ok("parameter_through_shared_function",
       [step("a", "y = 1"), step("b", "train()", prev=A)],
       {"a": {"parameters": set()}, "b": {"parameters": {"epochs"}}}, params=PARAMS,
       functions=("def train():\n    return epochs",)),
    ok("parameter_in_comprehension_and_fstring",
       [step("a", "v = [lr * i for i in range(3)]\ns = f'{epochs}'")],
       {"a": {"parameters": {"lr", "epochs"}}}, params=PARAMS),
    ok("parameter_never_an_artifact",
       [step("a", "print(lr)"), step("b", "print(lr)", prev=A)],
       {"a": {"outputs": set()}, "b": {"inputs": {}, "parameters": {"lr"}}}, params=PARAMS),
    ok("scalar_parameter_passed_to_call_is_fine",
       [step("a", "import math\nv = math.log(lr)")],
       {"a": {"parameters": {"lr"}}}, params=PARAMS),
    err("assigning_parameter_is_error",
        [step("a", "x = 1\nlr = 0.5")],
        Err(("changes pipeline parameter", "'lr'"), "a", 2, 2, fix="new variable"), params=PARAMS),
    err("augmenting_parameter_is_error",
        [step("a", "epochs += 1")],
        Err("changes pipeline parameter 'epochs'", "a", 2, 1), params=PARAMS),
    err("mutating_list_parameter_is_error",
        [step("a", "layers.append(3)")],
        Err("changes pipeline parameter 'layers'", "a", 2, 1), params={"layers": [1, 2]}),
]

PARALLEL = [
    err("parallel_branches_both_mutate",
        [step("a", "x = []"), step("b", "x.append(1)", prev=A), step("c", "x.append(2)", prev=A)],
        Err(("step 'c'", "step 'b'", "'x'"), "c", 3, 1, fix="prev:b")),
    ok("parallel_rebinds_join_takes_later",
       [step("a", "y = 0"), step("b", "x = 1", prev=A), step("c", "x = 2", prev=A),
        step("j", "print(x)", prev=("b", "c"))],
       {"j": {"inputs": {"x": "c"}}, "b": {"outputs": set()}}),
    err("parallel_rebinds_join_missing_later_branch",
        [step("a", "y = 0"), step("b", "x = 1", prev=A), step("c", "x = 2", prev=A),
         step("j", "print(x)", prev=("b",))],
        Err(("step 'j'", "step 'c'"), "j", 4, 1, fix="prev:c")),
    ok("parallel_rebinds_without_reader",
       [step("a", "y = 0"), step("b", "x = 1", prev=A), step("c", "x = 2", prev=A)],
       {"b": {"outputs": set()}, "c": {"outputs": set()}}),
    err("parallel_branch_reads_what_sibling_rebound",
        [step("a", "x = 0"), step("b", "x = 1", prev=A), step("c", "print(x)", prev=A)],
        Err(("step 'c'", "step 'b'"), "c", 3, 1, fix="prev:b")),
    ok("parallel_loops_same_variable_no_reader",
       [step("a", "n = 3"), step("b", "for i in range(n):\n    pass", prev=A),
        step("c", "for i in range(n):\n    pass", prev=A)],
       {"b": {"inputs": {"n": "a"}}, "c": {"inputs": {"n": "a"}}}),
]

ERRORS = [
    err("defined_in_skipped_cell",
        [step("a", Skip("x = 1"), "y = 2"), step("b", "print(x)", prev=A)],
        Err("is defined in cell 1, which is tagged 'skip'", "b", 3, 1)),
    err("defined_only_later_step",
        [step("a", "print(y)"), step("b", "y = 1", prev=A)],
        Err("is defined in step 'b', cell 2, which runs after 'a'", "a", 1, 1,
            fix="move the cells of step 'b' above cell 1")),
    err("defined_only_later_in_same_step",
        [step("a", "print(y)", "y = 1")],
        Err("is set only later in the same step, in cell 2", "a", 1, 1,
            fix="above where cell 1 reads it")),
    err("never_defined",
        [step("a", "x = 1"), step("b", "print(nope)", prev=A)],
        Err(("step 'b' reads 'nope'", "is never defined in this notebook"), "b", 2, 1,
            fix="define 'nope'")),
    err("never_defined_line_number",
        [step("a", "x = 1\n\nz = nope + 1")],
        Err("'nope'", "a", 1, 3)),
    err("cell_numbers_count_shared_cells",
        [step("a", "print(nope)")],
        Err("'nope'", "a", 3, 1), imports=("import os",), functions=("def f():\n    pass",)),
    err("later_mutation_is_not_a_definition",
        [step("a", "print(q)"), step("b", "q.append(1)", prev=A)],
        Err("is never defined", "a", 1, 1)),
    err("syntax_error",
        [step("a", "x = 1"), step("b", "y = (", prev=A)],
        Err("syntax error", "b", 2, 1)),
    err("missing_prev_names_producer_and_cell",
        [step("a", "x = 1"), step("b", "z = 2"), step("c", "print(x)", prev=B)],
        Err(("step 'a' in cell 1", "'x'"), "c", 3, 1, fix="add the tag 'prev:a' to step 'c'")),
    err("error_points_at_first_reading_cell",
        [step("a", "x = 1", "y = 2", "w = nope")],
        Err("'nope'", "a", 3, 1)),
]

# Passing a value to a call. Fan-out: 'a' makes df and y, siblings 'b' and 'c' both
# follow 'a'; 'b' does the form below, 'c' reads df. A call that only reads df leaves
# the siblings parallel (c gets df from a); one that changes df in place makes c's
# value b's in the notebook, which the pipeline can only honour with 'prev:b'.
ARGUMENT_READS = {
    "estimator_fit": "from sklearn.ensemble import RandomForestClassifier\nm = RandomForestClassifier()\nm.fit(df, y)",
    "train_test_split": "from sklearn.model_selection import train_test_split\nparts = train_test_split(df, y)",
    "accuracy_score": "from sklearn.metrics import accuracy_score\nacc = accuracy_score(y, df)",
    "plt_plot": "import matplotlib.pyplot as plt\nplt.plot(df)",
    "sns_heatmap": "import seaborn as sns\nsns.heatmap(df)",
    "json_dumps": "import json\ntext = json.dumps(df)",
    "tqdm_loop": "from tqdm import tqdm\nfor v in tqdm(df):\n    pass",
    "np_mean": "import numpy as np\nm = np.mean(df)",
    "np_concatenate": "import numpy as np\nz = np.concatenate([df, df])",
    "np_ufunc_without_out": "import numpy as np\nz = np.add(df, 1)",
    "np_save": "import numpy as np\nnp.save('f.npy', df)",
    "pd_concat": "import pandas as pd\nz = pd.concat([df, df])",
    "pd_dataframe": "import pandas as pd\nz = pd.DataFrame(df)",
    "copy_deepcopy": "import copy\nz = copy.deepcopy(df)",
    "torch_tensor": "import torch\nt = torch.tensor(df)",
    "random_choice": "import random\nr = random.choice(df)",
    "generator_choice": "import numpy as np\nrng = np.random.default_rng(0)\nr = rng.choice(df)",
    "builtin_sorted": "z = sorted(df)",
    "appended_to_other_list": "other = []\nother.append(df)",
    "other_dict_update_from_it": "d = {}\nd.update(df)",
    "keyword_argument": "import xgboost\nm = xgboost.XGBClassifier()\nm.fit(X=df, y=y)",
    "helper_that_reads": "def show(v):\n    print(v.shape)\nshow(df)",
    "helper_that_returns_summary": "def summary(v):\n    return v.describe()\ns = summary(df)",
    "helper_fitting_its_own_model": (
        "from sklearn.linear_model import LinearRegression\ndef fit_on(v, target):\n"
        "    m = LinearRegression()\n    m.fit(v, target)\n    return m\nm = fit_on(df, y)"
    ),
    "helper_copies_then_changes": "def grown(v):\n    v = list(v)\n    v.append(1)\n    return v\nz = grown(df)",
    "lambda_that_reads": "size = lambda v: len(v)\nn = size(df)",
    "class_init_that_reads": "class Wrapper:\n    def __init__(self, data):\n        self.n = len(data)\nw = Wrapper(df)",
    "method_of_notebook_class_that_reads": (
        "class Scorer:\n    def score_on(self, data):\n        return len(data)\ns = Scorer()\nn = s.score_on(df)"
    ),
    "nested_function_in_helper": (
        "import functools\ndef total(xs):\n    def add(a, b):\n        return a + b\n"
        "    return functools.reduce(add, xs)\nt = total(df)"
    ),
}
ARGUMENT_CHANGES = {
    "random_shuffle": "import random\nrandom.shuffle(df)",
    "from_random_import_shuffle": "from random import shuffle\nshuffle(df)",
    "np_random_shuffle": "import numpy as np\nnp.random.shuffle(df)",
    "numpy_random_shuffle_unaliased": "import numpy\nnumpy.random.shuffle(df)",
    "from_numpy_import_random_as": "from numpy import random as npr\nnpr.shuffle(df)",
    "generator_shuffle": "import numpy as np\nrng = np.random.default_rng(0)\nrng.shuffle(df)",
    "np_copyto": "import numpy as np\nnp.copyto(df, 0)",
    "np_fill_diagonal": "import numpy as np\nnp.fill_diagonal(df, 0)",
    "np_put": "import numpy as np\nnp.put(df, [0], 1)",
    "np_place": "import numpy as np\nnp.place(df, df > 0, 1)",
    "out_argument": "import numpy as np\nnp.add(y, 1, out=df)",
    "ufunc_at": "import numpy as np\nnp.add.at(df, [0], 1)",
    "heapq_heappush": "import heapq\nheapq.heappush(df, 1)",
    "heapq_heapify": "import heapq\nheapq.heapify(df)",
    "bisect_insort": "import bisect\nbisect.insort(df, 1)",
    "operator_setitem": "import operator\noperator.setitem(df, 0, 1)",
    "unbound_dict_update": "dict.update(df, {'a': 1})",
    "setattr": "setattr(df, 'a', 1)",
    "exec_with_namespace": "exec('z = 1', df)",
    "torch_in_place_init": "import torch.nn as nn\nnn.init.zeros_(df)",
    "method_inplace_true": "df.drop(columns=['a'], inplace=True)",
    "method_append": "df.append(1)",
    "helper_sets_item": "def clean(v):\n    v['x'] = 1\nclean(df)",
    "helper_appends": "def grow(v):\n    v.append(1)\ngrow(df)",
    "helper_fits_its_argument": "def refit(m):\n    m.fit([[0]], [0])\nrefit(df)",
    "helper_augmented_assignment": "def grow(v):\n    v += [1]\ngrow(df)",
    "helper_by_keyword": "def clean(v, flag=False):\n    v['x'] = 1\nclean(v=df)",
    "helper_through_star_args": "def clean(*vs):\n    for v in vs:\n        v.clear()\nclean(df)",
    "helper_transitively": "def inner(v):\n    v.append(1)\ndef outer(w):\n    inner(w)\nouter(df)",
    "lambda_that_changes": "f = lambda v: v.update(a=1)\nf(df)",
    "class_init_changes_argument": "class Bag:\n    def __init__(self, items):\n        items.append(0)\nb = Bag(df)",
    "method_of_notebook_class_changes_argument": (
        "class Sink:\n    def put(self, items):\n        items.clear()\ns = Sink()\ns.put(df)"
    ),
}


def _fan_out(code):
    return [step("a", "df = [3, 1, 2]\ny = [0, 1, 0]"), step("b", code, prev=A), step("c", "print(df)", prev=A)]


ARGUMENTS = [
    ok(f"argument_read_{key}", _fan_out(code),
       {"c": {"inputs": {"df": "a"}, "upstream": ["a"]}, "b": {"outputs": set()}})
    for key, code in ARGUMENT_READS.items()
] + [
    err(f"argument_changed_{key}", _fan_out(code),
        Err(("step 'c' reads 'df'", "step 'b'", "not an ancestor"), "c", 3, 1, fix="add the tag 'prev:b'"))
    for key, code in ARGUMENT_CHANGES.items()
] + [
    ok("argument_changed_then_read_downstream_in_order",
       [step("a", "df = [3, 1, 2]"), step("b", "import random\nrandom.shuffle(df)", prev=A),
        step("c", "print(df)", prev=B)],
       {"c": {"inputs": {"df": "b"}}, "b": {"outputs": {"df"}}}),
    ok("alias_from_the_imports_cell_resolves",
       [step("a", "df = [3, 1, 2]"), step("b", "np.random.shuffle(df)", prev=A), step("c", "print(df)", prev=B)],
       {"c": {"inputs": {"df": "b"}}}, imports=("import numpy as np",)),
    ok("helper_from_the_functions_cell_changes_argument",
       [step("a", "df = [3, 1, 2]"), step("b", "clean(df)", prev=A), step("c", "print(df)", prev=B)],
       {"c": {"inputs": {"df": "b"}}}, functions=("def clean(v):\n    v.sort()",)),
    ok("fit_still_changes_the_model",
       [step("a", "m = []\ndf = 1"), step("b", "m.fit(df)", prev=A), step("c", "print(m, df)", prev=B)],
       {"c": {"inputs": {"m": "b", "df": "a"}}, "b": {"outputs": {"m"}}}),
    err("user_mutating_function",
        _fan_out("import mylib\nmylib.fill(df)"),
        Err("step 'b'", "c", 3, 1, fix="prev:b"), rules={"mutating_functions": ["mylib.fill"]}),
    err("user_mutating_function_by_bare_name_on_a_method",
        _fan_out("loader = object()\nloader.fill(df)"),
        Err("step 'b'", "c", 3, 1, fix="prev:b"), rules={"mutating_functions": ["fill"]}),
    ok("user_read_only_function_wins_over_the_table",
       _fan_out("import random\nrandom.shuffle(df)"),
       {"c": {"inputs": {"df": "a"}}}, rules={"read_only_functions": ["random.shuffle"]}),
    ok("user_read_only_function_wins_over_a_helper",
       _fan_out("def clean(v):\n    v.sort()\nclean(df)"),
       {"c": {"inputs": {"df": "a"}}}, rules={"read_only_functions": ["clean"]}),
]

CASES = ARGUMENTS + BASICS + MUTATION + READ_ONLY + FUNCTIONS + SCOPING + IMPORTS + IPYTHON + SHARED + PARAMETERS + PARALLEL + ERRORS


def test_there_are_enough_cases():
    assert len(CASES) >= 150
    assert len(ARGUMENTS) >= 40


@pytest.mark.parametrize("case", CASES)
def test_dataflow(case: Case):
    pipeline = build(case)
    if case.error is not None:
        with pytest.raises(NotebookError) as caught:
            plan_dataflow(pipeline, DEFAULT_RULES.extended(**case.rules))
        error, expected = caught.value, case.error
        texts = (expected.text,) if isinstance(expected.text, str) else expected.text
        for text in texts:
            assert text in error.message, error
        assert (error.step, error.cell) == (expected.step, expected.cell), error
        if expected.line is not None:
            assert error.line == expected.line, error
        if expected.fix is not None:
            assert expected.fix in (error.fix or ""), error
        return
    plan_dataflow(pipeline, DEFAULT_RULES.extended(**case.rules))
    for name, expected in case.expect.items():
        got = pipeline.steps[name]
        actual = {
            "inputs": {a.name: a.producer for a in got.inputs},
            "outputs": set(got.outputs),
            "parameters": set(got.parameters),
            "imports": set(got.replayed_imports),
            "upstream": got.upstream,
        }
        for key, value in expected.items():
            assert actual[key] == value, f"step {name!r} {key}"
