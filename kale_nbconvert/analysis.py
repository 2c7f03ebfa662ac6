"""What a piece of notebook code reads and changes: source in, facts out.

Module-level statements are walked in order (order matters: ``x = x + 1`` reads the
upstream ``x``); nested scopes (functions, lambdas, classes' methods, comprehensions)
are handed to pyflakes, whose scope rules are Python's, to get their free names.

The mutation rule (correctness first, since Python cannot be known statically):

* binding ``x`` (assignment, ``for``/``with``/``except ... as``, walrus, ``def``,
  ``class``, ``import``, ``global x`` in a called function) changes ``x``; a binding
  made only on some paths (inside ``if``/``for``/``try``, or by a called function) is
  *conditional*: afterwards ``x`` may still hold the upstream value;
* ``x[...] = v``, ``x.attr = v``, ``del x[...]``, ``x += v`` and ``x.attr += v`` change
  ``x``;
* a method call ``x.m(...)`` changes ``x`` unless ``m`` is a known read-only method
  (:data:`READ_ONLY_METHODS`) called without ``inplace=True``;
* passing ``x`` (or ``x.a``, ``x[i]``) to a call only reads it (``model.fit(X, y)``,
  ``plt.plot(x)``, ``train_test_split(X, y)``), except where Python or the library
  says the callee changes it: the table :data:`MUTATING_FUNCTIONS` (resolved through
  the notebook's imports: ``np.random.shuffle``, ``from random import shuffle``),
  ``out=``, ``inplace=True``, and functions and classes defined in the notebook whose
  body changes that parameter (``def clean(df): df["x"] = 0``), transitively;
* using a function or class defined in the notebook reads its free names and changes
  what its body may change.

What static analysis cannot see (a change through a third-party object's method,
``exec`` of computed text, aliasing) is caught when the pipeline runs: each step checks
that the inputs later steps also read are unchanged when its cells end.

A change of ``x`` means later steps must receive ``x`` from this step.

IPython: cells arrive as the code IPython runs (``get_ipython().run_line_magic(...)``
and friends). Magics that run their argument as code in the user namespace
(``%time``/``%%time``, ``%%capture``) are analysed as that code; ``%timeit`` only
reads. ``{expr}`` and ``$name`` in shell commands and line magics are expanded by
IPython from the user namespace, so they are optional reads.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import functools
import re
from dataclasses import dataclass, field, replace

from . import syntax
from .problems import Problem

READ_ONLY_METHODS = frozenset(
    """head tail describe info copy sum mean median mode std var sem min max idxmin
    idxmax count value_counts unique nunique isnull isna notnull notna any all astype
    to_numpy to_list tolist to_dict to_records to_string to_csv to_json to_parquet
    to_pickle to_markdown to_html items keys values get index find rfind startswith
    endswith split rsplit strip lstrip rstrip lower upper title capitalize format join
    replace predict predict_proba predict_log_proba decision_function score transform
    inverse_transform get_params reshape flatten ravel dot round abs apply map applymap
    filter query merge pivot pivot_table agg aggregate corr cov quantile groupby
    rolling resample cumsum cumprod diff pct_change shift nlargest nsmallest
    sort_values sort_index drop drop_duplicates dropna fillna rename reset_index
    set_index select_dtypes where mask clip melt explode sample equals isin between
    duplicated first_valid_index memory_usage argmax argmin argsort nonzero
    searchsorted squeeze transpose conjugate item encode decode hex bit_length
    is_integer isdigit isalpha isalnum isspace islower isupper zfill center ljust
    rjust partition rpartition splitlines expandtabs casefold swapcase translate
    issubset issuperset isdisjoint union intersection difference symmetric_difference
    most_common elements total fromkeys as_integer_ratio conjugate""".split()
)
"""Methods that do not change their receiver (unless called with ``inplace=True``).
Any other method call ``x.m(...)`` may change ``x`` (``model.fit``, ``lst.append``)."""

_IN_PLACE_OPERATORS = (
    "iadd iand iconcat ifloordiv ilshift imatmul imod imul ior ipow irshift isub "
    "itruediv ixor setitem delitem"
).split()
_CONTAINER_METHODS = {
    "dict": "update setdefault pop popitem clear",
    "list": "append extend insert remove pop clear sort reverse",
    "set": "add discard remove pop clear update difference_update "
    "intersection_update symmetric_difference_update",
}

MUTATING_FUNCTIONS: dict[str, tuple[int, ...]] = {
    # Python
    "setattr": (0,),
    "delattr": (0,),
    "object.__setattr__": (0,),
    "exec": (1, 2),
    "eval": (1, 2),
    "random.shuffle": (0,),
    "heapq.heappush": (0,),
    "heapq.heappop": (0,),
    "heapq.heapify": (0,),
    "heapq.heappushpop": (0,),
    "heapq.heapreplace": (0,),
    "bisect.insort": (0,),
    "bisect.insort_left": (0,),
    "bisect.insort_right": (0,),
    **{f"operator.{name}": (0,) for name in _IN_PLACE_OPERATORS},
    **{
        f"{kind}.{method}": (0,)
        for kind, methods in _CONTAINER_METHODS.items()
        for method in methods.split()
    },
    # NumPy
    "numpy.random.shuffle": (0,),
    "numpy.copyto": (0,),
    "numpy.put": (0,),
    "numpy.put_along_axis": (0,),
    "numpy.place": (0,),
    "numpy.putmask": (0,),
    "numpy.fill_diagonal": (0,),
    "numpy.ndarray.sort": (0,),
    "numpy.ndarray.fill": (0,),
}
"""Functions (by qualified name, resolved through the notebook's imports) that change
arguments in place: argument positions. Every other function only reads what it is
passed (``model.fit(X, y)`` reads ``X``; ``plt.plot(x)``, ``json.dumps(cfg)``,
``train_test_split(X, y)`` read). Besides this table: ``out=`` arguments and
``inplace=True`` calls change their target; a NumPy ufunc's ``.at`` (``np.add.at(a,
...)``) and functions named like PyTorch's in-place ones (``nn.init.zeros_(w)``: one
trailing underscore) change their first argument; a function or class defined in the
notebook changes what its body changes of its parameters (``def clean(df): df["x"] =
...``), transitively; the user adds to it with
``--NameAnalysisPreprocessor.mutating_functions``."""

MUTATING_METHODS: dict[str, tuple[int, ...]] = {"shuffle": (0,)}
"""Methods of any object that change an ARGUMENT in place (``rng.shuffle(x)`` for
``random.Random``, NumPy's ``Generator`` and ``RandomState``)."""

_UNMISTAKABLE = frozenset(
    """shuffle heappush heappop heapify heappushpop heapreplace insort insort_left
    insort_right copyto putmask fill_diagonal put_along_axis""".split()
)
"""Names of mutating functions no read-only function shares, matched even unresolved."""

ALL_ARGUMENTS = (-1,)
"""Positions meaning "every argument" (the user's ``mutating_functions``)."""


@dataclass(frozen=True)
class CallRules:
    """What analysis assumes calls do to their receiver and arguments.

    ``read_only_functions`` never change what they are passed and
    ``read_only_methods`` never change their receiver (the user's lists win over the
    tables); ``mutating_functions`` change every argument they are passed (matched by
    qualified or bare name, and by method name for method calls).
    """

    read_only_functions: frozenset[str] = frozenset()
    read_only_methods: frozenset[str] = READ_ONLY_METHODS
    mutating_functions: frozenset[str] = frozenset()

    def extended(self, read_only_functions=(), read_only_methods=(), mutating_functions=()) -> "CallRules":
        """These rules plus a user's own (``--NameAnalysisPreprocessor.*`` options)."""
        return CallRules(
            self.read_only_functions | set(read_only_functions),
            self.read_only_methods | set(read_only_methods),
            self.mutating_functions | set(mutating_functions),
        )

    def argument_positions(self, qualified: str, bare: str, is_method: bool) -> tuple[int, ...]:
        """Which arguments a call of ``qualified`` (``bare``: its last part) changes."""
        if qualified in self.read_only_functions or bare in self.read_only_functions:
            return ()
        if qualified in self.mutating_functions or bare in self.mutating_functions:
            return ALL_ARGUMENTS
        if is_method:
            return MUTATING_METHODS.get(bare, ())
        if qualified in MUTATING_FUNCTIONS:
            return MUTATING_FUNCTIONS[qualified]
        if qualified.startswith("numpy.") and qualified.endswith(".at"):
            return (0,)  # ufunc.at: unbuffered in-place operation on its first argument
        if bare.endswith("_") and not bare.endswith("__") and bare.strip("_"):
            return (0,)  # PyTorch's naming of in-place functions (torch.nn.init.zeros_)
        if qualified == bare and bare in _UNMISTAKABLE:
            return (0,)  # e.g. ``shuffle(x)`` whose import this code cannot see
        return ()


DEFAULT_RULES = CallRules()


IPYTHON_BUILTINS = frozenset(
    {"display", "get_ipython", "In", "Out", "exit", "quit", "_", "__", "___", "_ih", "_oh", "_dh"}
)
BUILTIN_NAMES = frozenset(dir(builtins)) | IPYTHON_BUILTINS | {"__file__", "__name__", "__builtins__", "__doc__"}


class StarImportError(Problem):
    """``from module import *``: the names it binds cannot be known statically."""

    def __init__(self, module: str, line: int):
        super().__init__(
            f"'from {module} import *' hides which names the step defines",
            f"import the names you use explicitly: 'from {module} import a, b'",
            line=line,
            name=module,
        )
        self.module = module


@dataclass(frozen=True)
class Use:
    """A name read before this code bound it, so it must come from upstream."""

    name: str
    cell: int
    line: int
    optional: bool = False
    """Take it from upstream only if one exists: the read follows a conditional
    binding, or is an IPython ``$name``/``{expr}`` expansion (left as is when undefined)."""


@dataclass(frozen=True)
class Change:
    """The last thing this code did to a name."""

    name: str
    cell: int
    line: int
    kind: str
    """``bind``, ``mutate``, ``import`` or ``delete``."""
    import_source: str = ""
    """For ``import``: the statement that binds the name, to replay downstream."""
    conditional: bool = False
    """A binding made only on some paths: the name may still hold the value it had
    before this code ran, so whoever produced that value must hand it through."""
    reason: str = ""
    """For ``mutate``: the code that may change the value (``model.fit(X, y)``)."""


@dataclass(frozen=True)
class Signature:
    """A notebook function's parameters, and which of them its body changes in place."""

    positional: tuple[str, ...] = ()
    keyword_only: tuple[str, ...] = ()
    varargs: str | None = None
    varkw: str | None = None
    changed: frozenset[str] = frozenset()

    @classmethod
    def of(cls, arguments: ast.arguments, changed=frozenset(), drop_first=False) -> "Signature":
        positional = tuple(a.arg for a in arguments.posonlyargs + arguments.args)
        return cls(
            positional[1:] if drop_first else positional,
            tuple(a.arg for a in arguments.kwonlyargs),
            arguments.vararg.arg if arguments.vararg else None,
            arguments.kwarg.arg if arguments.kwarg else None,
            frozenset(changed),
        )

    def changed_arguments(self, call: ast.Call) -> list[ast.AST]:
        """The argument expressions of ``call`` bound to a parameter the body changes."""
        if not self.changed:
            return []
        found = []
        for index, argument in enumerate(call.args):
            if isinstance(argument, ast.Starred):
                found.append(argument.value)  # cannot tell which parameters it fills
                continue
            name = self.positional[index] if index < len(self.positional) else self.varargs
            if name in self.changed:
                found.append(argument)
        for keyword in call.keywords:
            if keyword.arg is None:
                found.append(keyword.value)
            elif keyword.arg in self.positional or keyword.arg in self.keyword_only:
                if keyword.arg in self.changed:
                    found.append(keyword.value)
            elif self.varkw in self.changed:
                found.append(keyword.value)
        return found


@dataclass
class Callable_:
    """Free names a function or class body reads and may change when used."""

    reads: frozenset[str]
    changes: frozenset[str]
    binds: frozenset[str] = frozenset()
    """Module names the body assigns through ``global``."""
    is_class: bool = False
    """A class: an instance made from it (``bag = Bag()``) reads the same free names
    when its methods run, so it carries these facts too."""
    signature: Signature = Signature()
    """Calling it (for a class: its ``__init__``): which arguments it changes."""
    methods: dict[str, Signature] = field(default_factory=dict)
    """A class's methods (without ``self``), for ``obj.method(arg)`` calls."""


@dataclass
class CodeFacts:
    """Facts about one step's (or the shared cells') code, in notebook order."""

    uses: list[Use] = field(default_factory=list)
    changes: dict[str, Change] = field(default_factory=dict)
    callables: dict[str, Callable_] = field(default_factory=dict)
    bound: set[str] = field(default_factory=set)
    """Names surely bound at the end of the code."""
    maybe_bound: set[str] = field(default_factory=set)
    """Names bound only on some paths (inside ``if``/``for``/``try``...)."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Names this code's imports bind -> what they name (``np`` -> ``numpy``,
    ``shuffle`` -> ``random.shuffle``), to look calls up in the mutation table."""


@functools.lru_cache(maxsize=4096)
def _free_names_of(source: str) -> frozenset[str]:
    """Names a snippet reads that it does not define (pyflakes' UndefinedName)."""
    from pyflakes import checker, messages

    tree = ast.parse(source)
    found = checker.Checker(tree, builtins=IPYTHON_BUILTINS)
    return frozenset(
        message.message_args[0]
        for message in found.messages
        if isinstance(message, messages.UndefinedName)
    )


def free_names(node: ast.AST) -> frozenset[str]:
    """Free names of a nested scope (function, lambda, class, comprehension).

    pyflakes treats a ``global x`` declaration as a definition of ``x``, so names read
    through ``global`` are added back here: the function needs their module value.
    """
    if isinstance(node, ast.expr):
        node = ast.Expr(node)
    module = node if isinstance(node, ast.Module) else ast.Module(body=[node], type_ignores=[])
    read_globals, _ = _global_names(module)
    return (_free_names_of(ast.unparse(module)) | read_globals) - BUILTIN_NAMES


def _body_free_names(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> frozenset[str]:
    """Free names the body reads when called; decorators and defaults are evaluated
    once, at definition, so the defining code reads those."""
    arguments = ast.arguments(
        **{**node.args.__dict__, "defaults": [], "kw_defaults": [None] * len(node.args.kwonlyargs)}
    )
    fields = {**node.__dict__, "args": arguments}
    if not isinstance(node, ast.Lambda):
        fields["decorator_list"] = []
    return free_names(type(node)(**fields))


def _global_names(node: ast.AST) -> tuple[frozenset[str], frozenset[str]]:
    """Names declared ``global`` inside ``node``, as (read, assigned).

    Read: augmented (``x += 1`` needs the old value) or loaded but never assigned. A
    name both loaded and assigned is taken as assigned first, so it needs no upstream.
    """
    declared = {name for child in ast.walk(node) if isinstance(child, ast.Global) for name in child.names}
    if not declared:
        return frozenset(), frozenset()
    loaded, stored, augmented = set(), set(), set()
    for child in ast.walk(node):
        if isinstance(child, ast.AugAssign) and isinstance(child.target, ast.Name):
            augmented.add(child.target.id)
        elif isinstance(child, ast.Name) and child.id in declared:
            (loaded if isinstance(child.ctx, ast.Load) else stored).add(child.id)
    reads = ((loaded - stored) | augmented) & declared
    return frozenset(reads), frozenset(stored & declared)


def _base_name(node: ast.AST) -> str | None:
    """``x`` for ``x``, ``x.a.b``, ``x[i].c``; None for anything else."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _has_inplace(call: ast.Call) -> bool:
    return any(
        kw.arg == "inplace"
        and not (isinstance(kw.value, ast.Constant) and kw.value.value is False)
        for kw in call.keywords
    )


def _shown_call(call: ast.Call, limit: int = 60) -> str:
    """The call as written, shortened for the explanation of a change."""
    text = ast.unparse(call)
    return text if len(text) <= limit else ast.unparse(call.func)[:limit] + "(...)"


_TYPE_ROOTS = frozenset({"dict", "list", "set", "object", "operator"})
"""Builtin names whose attributes are called as functions (``dict.update(d, ...)``)."""


@dataclass
class CallContext:
    """What a call's callee may refer to where the call is: the call rules, the
    imports in scope and the notebook's own functions and classes."""

    rules: CallRules = DEFAULT_RULES
    aliases: dict[str, str] = field(default_factory=dict)
    callables: dict[str, Callable_] = field(default_factory=dict)

    def qualified(self, func: ast.AST) -> str | None:
        """``numpy.random.shuffle`` for ``np.random.shuffle``; the bare name for a plain
        name; None for a method of a value (``model.fit``, ``rng.shuffle``)."""
        parts = []
        while isinstance(func, ast.Attribute):
            parts.append(func.attr)
            func = func.value
        if not isinstance(func, ast.Name):
            return None
        root = self.aliases.get(func.id)
        if root is None:
            if parts and func.id not in _TYPE_ROOTS:
                return None
            root = func.id
        return ".".join([root] + parts[::-1])

    def method_signature(self, method: str) -> Signature | None:
        """A method of that name in a notebook class, if one changes its arguments."""
        for callable_ in self.callables.values():
            signature = callable_.methods.get(method)
            if signature is not None and signature.changed:
                return signature
        return None


def _shown_target(node: ast.AST, limit: int = 60) -> str:
    text = ast.unparse(node)
    return text if len(text) <= limit else text[:limit] + "..."


def _positional(call: ast.Call, positions: tuple[int, ...]) -> list[ast.AST]:
    if positions == ALL_ARGUMENTS:
        return list(call.args) + [keyword.value for keyword in call.keywords]
    return [call.args[i] for i in positions if i < len(call.args)]


def _call_changes(call: ast.Call, context: CallContext) -> dict[str, str]:
    """Names a call may change in place -> why (the call as written)."""
    why = _shown_call(call)
    targets: list[ast.AST] = []
    rules = context.rules
    func = call.func
    qualified = context.qualified(func)
    if qualified is None and isinstance(func, ast.Attribute):  # a method of a value
        method = func.attr
        if method not in rules.read_only_methods or _has_inplace(call) or method in rules.mutating_functions:
            targets.append(func.value)
        targets += _positional(call, rules.argument_positions(method, method, is_method=True))
        signature = context.method_signature(method)
        if signature is not None:
            targets += signature.changed_arguments(call)
    elif qualified is not None:
        bare = qualified.rsplit(".", 1)[-1]
        callable_ = context.callables.get(qualified) if isinstance(func, ast.Name) else None
        trusted = qualified in rules.read_only_functions or bare in rules.read_only_functions
        if callable_ is not None and not trusted:
            targets += callable_.signature.changed_arguments(call)
        else:
            targets += _positional(call, rules.argument_positions(qualified, bare, is_method=False))
        if _has_inplace(call) and call.args:
            targets.append(call.args[0])
    for keyword in call.keywords:
        if keyword.arg == "out":  # NumPy/PyTorch: the result is written into it
            value = keyword.value
            targets += list(value.elts) if isinstance(value, ast.Tuple) else [value]
    changed: dict[str, str] = {}
    for target in targets:
        name = _base_name(target)
        if name:
            changed.setdefault(name, why)
    return changed


def _scope_names(node: ast.AST) -> tuple[set[str], set[str], dict[str, str]]:
    """(names bound anywhere inside ``node``, names declared ``global``, its imports).

    Nested functions and classes, imports, ``except ... as``, ``match`` captures and
    comprehension variables are local too: they are never module-level names.
    """
    local: set[str] = set()
    declared_global: set[str] = set()
    aliases: dict[str, str] = {}
    for child in ast.walk(node):
        if isinstance(child, ast.Global):
            declared_global.update(child.names)
        elif isinstance(child, ast.arg):
            local.add(child.arg)
        elif isinstance(child, ast.Name) and isinstance(child.ctx, (ast.Store, ast.Del)):
            local.add(child.id)
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and child is not node:
            local.add(child.name)
        elif isinstance(child, ast.ExceptHandler) and child.name:
            local.add(child.name)
        elif isinstance(child, (ast.MatchAs, ast.MatchStar)) and child.name:
            local.add(child.name)
        elif isinstance(child, ast.MatchMapping) and child.rest:
            local.add(child.rest)
        elif isinstance(child, (ast.Import, ast.ImportFrom)):
            for name, target in import_bindings(child):
                local.add(name)
                aliases[name] = target
    return local, declared_global, aliases


def import_bindings(node: ast.Import | ast.ImportFrom) -> list[tuple[str, str]]:
    """``import numpy as np`` -> [("np", "numpy")]; ``from random import shuffle`` ->
    [("shuffle", "random.shuffle")]; ``import os.path`` -> [("os", "os")]."""
    if isinstance(node, ast.Import):
        return [
            (alias.asname, alias.name) if alias.asname else (alias.name.split(".")[0],) * 2
            for alias in node.names
        ]
    module = "." * node.level + (node.module or "")
    return [
        (alias.asname or alias.name, f"{module}.{alias.name}" if module.strip(".") else alias.name)
        for alias in node.names
        if alias.name != "*"
    ]


def _body_changes(node: ast.AST, context: CallContext) -> tuple[frozenset[str], frozenset[str]]:
    """(free names a function/class body may change in place, the function's own
    parameters it changes in place before rebinding them).

    Names assigned through ``global`` are bindings, not changes. ``param += v`` counts
    as a change of the caller's value (lists and arrays extend in place).
    """
    local, declared_global, own_aliases = _scope_names(node)
    context = replace(context, aliases={**context.aliases, **own_aliases})
    arguments = getattr(node, "args", None)
    parameters = (
        {a.arg for a in ast.walk(arguments) if isinstance(a, ast.arg)}
        if isinstance(arguments, ast.arguments)
        else set()
    )
    changed: list[tuple[str, int]] = []
    augmented = set()
    for child in ast.walk(node):
        if isinstance(child, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = child.targets if isinstance(child, (ast.Assign, ast.Delete)) else [child.target]
            for target in targets:
                if isinstance(target, (ast.Attribute, ast.Subscript)):
                    name = _base_name(target)
                    if name:
                        changed.append((name, child.lineno))
            if isinstance(child, ast.AugAssign) and isinstance(child.target, ast.Name):
                augmented.add(id(child.target))
                if child.target.id in parameters:
                    changed.append((child.target.id, child.lineno))
        elif isinstance(child, ast.Call):
            changed += [(name, child.lineno) for name in _call_changes(child, context)]
    aliases = _parameter_aliases(node, parameters)
    changed += [(aliases[name], line) for name, line in changed if name in aliases]
    first_rebinding: dict[str, int] = {}
    for child in ast.walk(node):
        if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store) and id(child) not in augmented:
            first_rebinding[child.id] = min(child.lineno, first_rebinding.get(child.id, child.lineno))
    free = frozenset(name for name, _ in changed if name not in local or name in declared_global)
    changed_parameters = frozenset(
        name
        for name, line in changed
        if name in parameters and name not in declared_global and line < first_rebinding.get(name, line + 1)
    )
    return free, changed_parameters


def _parameter_aliases(node: ast.AST, parameters: set[str]) -> dict[str, str]:
    """Local names that refer to (part of) a parameter's value: ``v = param``,
    ``for v in param`` (its elements: ``for v in args: v.clear()`` changes what the
    caller passed)."""
    aliases: dict[str, str] = {}
    for child in ast.walk(node):
        if isinstance(child, (ast.For, ast.AsyncFor, ast.comprehension)):
            source, targets = child.iter, [child.target]
        elif isinstance(child, ast.Assign):
            source, targets = child.value, child.targets
        else:
            continue
        root = _base_name(source)
        root = aliases.get(root, root)
        if root not in parameters:
            continue
        for target in targets:
            for name in ast.walk(target):
                if isinstance(name, ast.Name) and name.id not in parameters:
                    aliases[name.id] = root
    return aliases


def _callable_facts(node, reads: frozenset[str], own_name: str, context: CallContext) -> Callable_:
    """What using a function or lambda reads, changes (its free names, and the
    arguments it is given) and binds."""
    changes, changed_parameters = _body_changes(node, context)
    binds = _global_names(node)[1]
    return Callable_(
        reads - {own_name}, changes - binds, binds,
        signature=Signature.of(node.args, changed_parameters),
    )


def _class_facts(node: ast.ClassDef, reads: frozenset[str], context: CallContext) -> Callable_:
    """A class: what its methods read and change; ``Cls(arg)`` runs ``__init__``."""
    methods = [s for s in node.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))]
    changes, binds, signatures = frozenset(), frozenset(), {}
    for method in methods:
        free, changed_parameters = _body_changes(method, context)
        changes |= free
        binds |= _global_names(method)[1]
        static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in method.decorator_list)
        signatures[method.name] = Signature.of(method.args, changed_parameters, drop_first=not static)
    return Callable_(
        reads - {node.name}, changes - binds, binds, is_class=True,
        signature=signatures.get("__init__", Signature()), methods=signatures,
    )


def _ipython_method(call: ast.Call) -> str | None:
    """``m`` for ``get_ipython().m(...)``, else None."""
    func = call.func
    if (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Call)
        and isinstance(func.value.func, ast.Name)
        and func.value.func.id == "get_ipython"
    ):
        return func.attr
    return None


_DOLLAR_NAME = re.compile(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)")
_BRACED = re.compile(r"(?<!\{)\{([^{}]+)\}(?!\})")


def _expanded_names(text: str) -> frozenset[str]:
    """Names IPython's variable expansion would look up in ``text``."""
    names = set(_DOLLAR_NAME.findall(text))
    for expression in _BRACED.findall(text):
        try:
            names |= free_names(ast.parse(expression, mode="eval").body)
        except SyntaxError:
            continue
    return frozenset(names) - BUILTIN_NAMES


def _strip_options(line: str) -> str:
    """``%timeit -n1 -r 3 f(x)`` -> ``f(x)`` (only the statement is user code)."""
    words = line.split()
    while words and words[0].startswith("-"):
        option = words.pop(0)
        if option in ("-n", "-r", "-p") and words:
            words.pop(0)
    return " ".join(words)


class _ModuleWalker(ast.NodeVisitor):
    """Walks module-level statements of one cell, updating shared :class:`CodeFacts`."""

    def __init__(
        self, facts: CodeFacts, cell: int, known_callables: dict[str, Callable_],
        rules: CallRules, known_aliases: dict[str, str],
    ):
        self.facts = facts
        self.cell = cell
        self.known_callables = known_callables
        self.rules = rules
        self.known_aliases = known_aliases
        self.branches: list[set[str]] = []
        """Names bound in each enclosing branch (``if`` body, loop body...), innermost
        last: surely bound while still inside it, only maybe bound after it."""
        self.maybe_bound = facts.maybe_bound
        self._context: CallContext | None = None

    def context(self) -> CallContext:
        """The callees calls here may refer to: imports and notebook functions in scope
        (cached until the next binding)."""
        if self._context is not None:
            return self._context
        aliases = {
            name: target
            for name, target in self.known_aliases.items()
            if name not in self.facts.changes
        }
        aliases.update(self.facts.aliases)
        callables = {
            name: callable_
            for name, callable_ in self.known_callables.items()
            if self._callable(name) is callable_
        }
        callables.update(self.facts.callables)
        self._context = CallContext(self.rules, aliases, callables)
        return self._context

    def define(self, name: str, callable_: Callable_) -> None:
        """``name`` now refers to a notebook function or class (or an instance of one)."""
        self.facts.callables[name] = callable_
        self._context = None

    # -- recording -------------------------------------------------------------
    def read(
        self, name: str, line: int, seen: frozenset[str] = frozenset(), optional: bool = False
    ) -> None:
        """``name`` is read now; using a notebook function also runs its body."""
        facts = self.facts
        bound_here = name in facts.bound or any(name in names for names in self.branches)
        if not bound_here and not any(use.name == name for use in facts.uses):
            optional = optional or name in self.maybe_bound
            facts.uses.append(Use(name, self.cell, line, optional=optional))
        callable_ = self._callable(name)
        if callable_ and name not in seen:
            seen = seen | {name}
            for free in sorted(callable_.reads):
                self.read(free, line, seen)
            for changed in sorted(callable_.changes):
                self.change(changed, line, "mutate", f"uses {name}, which changes {changed}")
            with self.branch():  # the body may or may not reach its assignment
                for bound in sorted(callable_.binds):
                    self.bind(bound, line)

    def _callable(self, name: str) -> Callable_ | None:
        """The function or class ``name`` refers to now, if the notebook defines it."""
        if name in self.facts.callables:
            return self.facts.callables[name]
        change = self.facts.changes.get(name)
        if change is not None and change.kind != "mutate":
            return None  # rebound in this code: no longer the upstream definition
        return self.known_callables.get(name)

    def bind(
        self, name: str, line: int, kind: str = "bind", import_source: str = "", import_target: str = ""
    ) -> None:
        self._context = None
        conditional = bool(self.branches) and name not in self.facts.bound
        self.facts.changes[name] = Change(name, self.cell, line, kind, import_source, conditional)
        if conditional:
            self.maybe_bound.add(name)
            self.branches[-1].add(name)
        elif not self.branches:
            self.facts.bound.add(name)
        if kind != "callable":
            self.facts.callables.pop(name, None)
        if kind == "import":
            self.facts.aliases[name] = import_target
        else:
            self.facts.aliases.pop(name, None)

    def change(self, name: str, line: int, kind: str = "mutate", reason: str = "") -> None:
        """``name``'s object may be changed in place: a read, then a new value."""
        self.read(name, line)
        previous = self.facts.changes.get(name)
        if previous and previous.kind == "import":
            return  # modules are re-imported downstream, never shipped
        self.facts.changes[name] = Change(name, self.cell, line, kind, reason=reason)

    def delete(self, name: str, line: int) -> None:
        self.read(name, line)
        self._context = None
        self.facts.changes[name] = Change(name, self.cell, line, "delete")
        self.facts.bound.discard(name)
        self.maybe_bound.discard(name)
        for names in self.branches:
            names.discard(name)
        self.facts.callables.pop(name, None)

    # -- expressions -----------------------------------------------------------
    def expression(self, node: ast.AST | None) -> None:
        """Record the reads and changes of an expression evaluated now."""
        if node is None:
            return
        for child in self._walk_expression(node):
            if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Load):
                self.read(child.id, child.lineno)
            elif isinstance(child, ast.Call):
                self._ipython_call(child)
                for name, why in sorted(_call_changes(child, self.context()).items()):
                    self.change(name, child.lineno, reason=why)
            elif isinstance(child, ast.NamedExpr):
                self.expression(child.value)
                self.bind(child.target.id, child.lineno)

    def _ipython_call(self, call: ast.Call) -> None:
        """``get_ipython().system(...)``, ``.run_line_magic(...)``...: the code and the
        ``{expr}``/``$name`` references hidden in their string arguments."""
        method = _ipython_method(call)
        if method is None:
            return
        strings = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None for a in call.args]
        line = call.lineno
        if method in ("system", "getoutput") and strings and strings[0] is not None:
            self._expanded(strings[0], line)
        elif method == "run_line_magic" and len(strings) == 2 and None not in strings:
            magic, argument = strings
            self._expanded(argument, line)
            self._magic_code(magic, argument, line - 1)
            if magic in ("pinfo", "pinfo2"):  # `obj?` shows obj: a read, harmless if absent
                root = argument.strip().split(".")[0]
                if root.isidentifier():
                    self.read(root, line, optional=True)
        elif method == "run_cell_magic" and len(strings) == 3 and None not in strings:
            magic, argument, body = strings
            self._expanded(argument, line)
            self._magic_code(magic, body, line)
            if magic == "capture" and argument.split() and argument.split()[-1].isidentifier():
                self.bind(argument.split()[-1], line)

    def _expanded(self, text: str, line: int) -> None:
        """IPython expands ``{expr}`` and ``$name`` from the user namespace, leaving
        them as they are when undefined: optional reads."""
        for name in sorted(_expanded_names(text)):
            self.read(name, line, optional=True)

    def _magic_code(self, magic: str, code: str, offset: int) -> None:
        """Magics whose argument is Python run in the user namespace; ``offset`` maps
        the code's line numbers to the cell's."""
        if magic not in ("time", "timeit", "capture"):
            return
        if magic == "timeit":
            code = _strip_options(code)
        try:
            tree = ast.parse(code)
        except SyntaxError:
            return  # IPython reports it when the cell runs
        ast.increment_lineno(tree, offset)
        if magic == "timeit":  # runs in a throw-away namespace: reads only
            for name in sorted(free_names(tree)):
                self.read(name, offset + 1)
        else:
            self.statements(tree.body)

    def _walk_expression(self, node: ast.AST):
        """Yield nodes evaluated now; nested scopes yield their free names instead."""
        stack = [node]
        while stack:
            child = stack.pop()
            if isinstance(child, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
                line = child.lineno
                for name in sorted(free_names(child)):
                    yield ast.Name(id=name, ctx=ast.Load(), lineno=line)
                for walrus in ast.walk(child):
                    if isinstance(walrus, ast.NamedExpr) and not isinstance(child, ast.Lambda):
                        self.bind(walrus.target.id, walrus.lineno)
                continue
            if isinstance(child, ast.NamedExpr):
                yield child
                continue
            yield child
            stack.extend(reversed(list(ast.iter_child_nodes(child))))

    # -- targets ---------------------------------------------------------------
    def target(self, node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            self.bind(node.id, node.lineno)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for element in node.elts:
                self.target(element)
        elif isinstance(node, ast.Starred):
            self.target(node.value)
        elif isinstance(node, (ast.Attribute, ast.Subscript)):
            inner = node.value
            self.expression(node.slice if isinstance(node, ast.Subscript) else None)
            name = _base_name(inner)
            if name:
                self.change(name, node.lineno, reason=f"{_shown_target(node)} = ...")
            else:
                self.expression(inner)

    # -- statements ------------------------------------------------------------
    @contextlib.contextmanager
    def branch(self):
        """Code that may or may not run: what it binds is only maybe bound after it."""
        self.branches.append(set())
        try:
            yield
        finally:
            self.branches.pop()

    def statements(self, body: list[ast.stmt], conditional: bool = False) -> None:
        with self.branch() if conditional else contextlib.nullcontext():
            for statement in body:
                self.visit(statement)

    def visit_Expr(self, node):
        self.expression(node.value)

    def visit_Assign(self, node):
        value, targets = node.value, node.targets
        if isinstance(value, ast.Lambda) and len(targets) == 1 and isinstance(targets[0], ast.Name):
            # ``f = lambda ...`` is ``def f``: its body reads globals when called
            self._defaults(value.args)
            name = targets[0].id
            self.bind(name, node.lineno, "callable")
            self.define(name, _callable_facts(value, _body_free_names(value), name, self.context()))
            return
        self.expression(value)
        for target in targets:
            self.target(target)
        self._instance_of_notebook_class(value, targets)

    def _instance_of_notebook_class(self, value, targets) -> None:
        """``bag = Bag(...)``: whoever uses ``bag`` runs Bag's methods, which read globals."""
        if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)):
            return
        if len(targets) != 1 or not isinstance(targets[0], ast.Name):
            return
        cls = self.facts.callables.get(value.func.id) or self.known_callables.get(value.func.id)
        if cls is None or not cls.is_class:
            return
        name = targets[0].id
        self.facts.changes[name] = replace(self.facts.changes[name], kind="callable")
        self.define(name, cls)

    def visit_AnnAssign(self, node):
        self.expression(node.value)
        if node.value is not None:
            self.target(node.target)

    def visit_AugAssign(self, node):
        self.expression(node.value)
        if isinstance(node.target, ast.Name):
            self.read(node.target.id, node.lineno)
            self.bind(node.target.id, node.lineno)
        else:
            self.target(node.target)

    def visit_Delete(self, node):
        for target in node.targets:
            if isinstance(target, ast.Name):
                self.delete(target.id, node.lineno)
            elif isinstance(target, (ast.Tuple, ast.List)):
                for element in target.elts:
                    self.visit_Delete(ast.Delete(targets=[element], lineno=node.lineno))
            else:
                self.target(target)

    def visit_Import(self, node):
        for alias, (name, target) in zip(node.names, import_bindings(node)):
            source = f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
            self.bind(name, node.lineno, "import", source, target)

    def visit_ImportFrom(self, node):
        module = "." * node.level + (node.module or "")
        if any(alias.name == "*" for alias in node.names):
            raise StarImportError(module, node.lineno)
        for alias, (name, target) in zip(node.names, import_bindings(node)):
            source = f"from {module} import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
            self.bind(name, node.lineno, "import", source, target)

    def _defaults(self, arguments: ast.arguments) -> None:
        """Default values are evaluated once, where the function is defined."""
        for default in arguments.defaults + [d for d in arguments.kw_defaults if d]:
            self.expression(default)

    def visit_FunctionDef(self, node):
        for decorator in node.decorator_list:
            self.expression(decorator)
        self._defaults(node.args)
        self.bind(node.name, node.lineno, "callable")
        self.define(node.name, _callable_facts(node, _body_free_names(node), node.name, self.context()))

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        for expression in node.decorator_list + node.bases + [kw.value for kw in node.keywords]:
            self.expression(expression)
        methods = [s for s in node.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))]
        others = [s for s in node.body if s not in methods]
        if others:
            for name in sorted(free_names(ast.Module(body=others, type_ignores=[]))):
                self.read(name, node.lineno)
        reads = frozenset().union(*(free_names(method) for method in methods))
        self.bind(node.name, node.lineno, "callable")
        self.define(node.name, _class_facts(node, reads, self.context()))

    def visit_If(self, node):
        self.expression(node.test)
        self.statements(node.body, conditional=True)
        self.statements(node.orelse, conditional=True)

    def visit_While(self, node):
        self.expression(node.test)
        self.statements(node.body, conditional=True)
        self.statements(node.orelse, conditional=True)

    def visit_For(self, node):
        self.expression(node.iter)
        with self.branch():
            self.target(node.target)
            self.statements(node.body)
        self.statements(node.orelse, conditional=True)

    visit_AsyncFor = visit_For

    def visit_With(self, node):
        for item in node.items:
            self.expression(item.context_expr)
            if item.optional_vars is not None:
                self.target(item.optional_vars)
        self.statements(node.body)

    visit_AsyncWith = visit_With

    def visit_Try(self, node):
        self.statements(node.body, conditional=True)
        for handler in node.handlers:
            self.expression(handler.type)
            previous = self.facts.changes.get(handler.name)
            with self.branch():
                if handler.name:
                    self.bind(handler.name, handler.lineno)
                self.statements(handler.body)
            if handler.name:  # Python unbinds the name when the handler ends
                self._unbind_handler_name(handler.name, previous)
        self.statements(node.orelse, conditional=True)
        self.statements(node.finalbody)

    visit_TryStar = visit_Try

    def _unbind_handler_name(self, name: str, previous: Change | None) -> None:
        """``except E as e`` leaves ``e`` as it was before the ``try`` (or unbound, which
        a later reader learns as "never defined"), so the binding does not escape."""
        if previous is None:
            self.facts.changes.pop(name, None)
            self.maybe_bound.discard(name)
        else:
            self.facts.changes[name] = previous

    def visit_Match(self, node):
        self.expression(node.subject)
        for case in node.cases:
            with self.branch():
                for child in ast.walk(case.pattern):
                    for attribute in ("name", "rest"):
                        bound = getattr(child, attribute, None)
                        if isinstance(bound, str):
                            self.bind(bound, case.pattern.lineno)
                    if isinstance(child, ast.MatchValue):
                        self.expression(child.value)
                self.expression(case.guard)
                self.statements(case.body)

    def visit_Return(self, node):
        self.expression(node.value)

    def visit_Raise(self, node):
        self.expression(node.exc)
        self.expression(node.cause)

    def visit_Assert(self, node):
        self.expression(node.test)
        self.expression(node.msg)

    def visit_Global(self, node):
        pass

    visit_Nonlocal = visit_Global

    def generic_visit(self, node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                self.visit(child)
            elif isinstance(child, ast.expr):
                self.expression(child)


def analyse_cells(
    cells: list[tuple[int, str]],
    known_callables: dict[str, Callable_] | None = None,
    rules: CallRules = DEFAULT_RULES,
    known_aliases: dict[str, str] | None = None,
) -> CodeFacts:
    """Facts of code cells run in order in one namespace: ``[(cell_number, code)]``.

    ``known_callables`` are functions and classes defined elsewhere (the shared
    ``functions`` cells, upstream steps): using one reads its free names.
    ``rules`` say what calls do to their arguments; ``known_aliases`` are the imports
    made elsewhere (``np`` -> ``numpy``), to resolve calls against the mutation table.
    Raises ``SyntaxError`` (with ``.cell`` set) and :class:`StarImportError`.
    """
    facts = CodeFacts()
    for number, code in cells:
        try:
            tree = syntax.parse(code)
        except SyntaxError as error:
            error.cell = number
            raise
        walker = _ModuleWalker(facts, number, known_callables or {}, rules, known_aliases or {})
        try:
            walker.statements(tree.body)
        except StarImportError as error:
            error.cell = number
            raise
    return facts
