"""The code a generated script embeds: it runs in a step's container or in the script's
own command line, never at conversion time.

Each module here does one job and is pasted, function by function, into every script,
which must need nothing from this project. Two parts, by where the code runs:

- ``IN_STEP`` runs INSIDE a pipeline step: ``step.py`` (run the cells), ``report.py``
  (the step's HTML report of its cells' outputs), ``marshal.py`` (save and load the
  values that cross a step boundary), ``divergence.py`` (the run-time check for
  in-place changes). The script ships these functions with every
  component: the list it passes to ``dsl.component(additional_funcs=...)``.
- ``COMMAND_LINE`` runs in ``python pipeline.py ...``: ``cli.py`` (the flags),
  ``local_run.py`` (``--local`` with kfp.local: progress and ``kale-run.json``),
  ``worker.py`` (the warm fork worker of a local run), ``cluster.py`` (``--host``
  submission and ``--wait``).

The rules, which ``tests/test_embedded.py`` enforces on every module: only top-level
functions named ``_kale_*`` (besides the module docstring and ``from __future__``
imports), each importing what it uses inside its body, no import of ``kale_nbconvert``,
and every other name a function uses is a builtin or a function its part ships.
``shipped`` reads the functions by syntax tree; no list of them is kept by hand.

What a script carries is the code, not its commentary: comments are left out and each
docstring is cut to its first paragraph (``_compact``), so the machinery takes fewer
lines than the notebook's own code would deserve; the full text is here.
"""

import functools

IN_STEP = ("step", "report", "marshal", "divergence")
"""The modules whose functions run inside a step (kfp's ``additional_funcs``)."""
COMMAND_LINE = ("cli", "local_run", "worker", "cluster")
"""The modules of the script's command line."""


@functools.lru_cache(maxsize=4)
def _definitions(folder):
    """Every embedded function in ``folder``: name -> (module, exact source, names it
    uses). Every conversion needs them, and parsing and compacting the ~120 functions
    takes about 0.3 s, a tenth of a ``jupyter nbconvert --to kale`` run: so they are
    worked out once per process, and kept between processes beside the folder's
    bytecode (``__pycache__``, or ``sys.pycache_prefix``), as Python keeps a module's.
    The cache is keyed by the exact bytes of every module here, this one included, and
    by Python's bytecode version: any change to the code, or another Python, reads the
    sources again. Where the cache cannot be written (a read-only install,
    ``PYTHONDONTWRITEBYTECODE``) every process works them out itself."""
    sources = {path.name: path.read_bytes() for path in sorted(folder.glob("*.py"))}
    cache = _definitions_cache(folder, sources)
    try:
        return _marshal_loads(cache.read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        pass
    definitions = _parse_definitions(sources)
    _write_definitions_cache(cache, definitions)
    return definitions


def _definitions_cache(folder, sources):
    """Where the definitions of ``sources`` (file name -> bytes) are kept."""
    import hashlib
    import importlib.util
    import pathlib

    digest = hashlib.sha256(importlib.util.MAGIC_NUMBER)
    for name, data in sources.items():
        digest.update(b"%d:%s\0%d:" % (len(name), name.encode(), len(data)) + data)
    bytecode = pathlib.Path(importlib.util.cache_from_source(str(folder / "__init__.py")))
    return bytecode.parent / f"kale_embedded.{digest.hexdigest()[:24]}.marshal"


def _marshal_loads(data):
    import marshal

    definitions = marshal.loads(data)
    if not isinstance(definitions, dict):
        raise ValueError("not a definitions cache")
    return definitions


def _write_definitions_cache(cache, definitions):
    """Write ``cache`` whole or not at all (processes converting at once each write
    their own file, then rename it), and remove the caches of earlier sources."""
    import marshal
    import os
    import sys

    if sys.dont_write_bytecode:
        return
    partial = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(marshal.dumps(definitions))
        os.replace(partial, cache)
        for old in cache.parent.glob("kale_embedded.*.marshal"):
            if old != cache:
                old.unlink(missing_ok=True)
    except OSError:
        try:
            partial.unlink(missing_ok=True)
        except OSError:
            pass


def _parse_definitions(sources):
    """The definitions of ``sources`` (file name -> bytes), read by syntax tree."""
    import ast
    import io

    definitions = {}
    for file_name, data in sources.items():
        if file_name == "__init__.py":
            continue
        module = file_name[: -len(".py")]
        text = data.decode("utf-8")
        lines = io.StringIO(text, newline="").readlines()  # the parser's lines, not str's
        tree = ast.parse(text, file_name)
        docstring = ast.get_docstring(tree) is not None
        for index, node in enumerate(tree.body):
            function = isinstance(node, ast.FunctionDef) and not node.decorator_list
            if function and node.name.startswith("_kale_"):
                if node.name in definitions:
                    other = definitions[node.name][0]
                    raise ValueError(f"{file_name}: {node.name} is also defined in {other}.py")
                used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                # get_source_segment splits the text it is given on every call: give it
                # the function's own lines, and the node numbered from them
                own = "".join(lines[node.lineno - 1 : node.end_lineno])
                ast.increment_lineno(node, 1 - node.lineno)
                source = _compact(ast.get_source_segment(own, node), node)
                definitions[node.name] = (module, source, used)
            elif index == 0 and docstring:
                continue
            elif isinstance(node, ast.ImportFrom) and node.module == "__future__":
                continue
            else:
                raise ValueError(
                    f"kale_nbconvert/embedded/{file_name} line {node.lineno}: only top-level "
                    "functions named _kale_* can be embedded in a script (import inside them)"
                )
    return definitions


def _compact(source, node):
    """``source`` of the function ``node`` (numbered from line 1) without its comments
    and with its docstring cut to the first paragraph: the summary stays readable in
    the script, the explanation stays in this package."""
    import ast
    import io
    import tokenize

    lines = source.splitlines(keepends=True)
    drop = set()
    first = node.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
        and first.end_lineno > first.lineno
    ):
        start, end = first.lineno - 1, first.end_lineno - 1
        blank = next((i for i in range(start + 1, end) if not lines[i].strip()), None)
        if blank is not None:
            quote = lines[start].lstrip()[:3]
            lines[blank - 1] = lines[blank - 1].rstrip() + quote + "\n"
            drop.update(range(blank, end + 1))
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row, column = token.start[0] - 1, token.start[1]
            code = lines[row][:column].rstrip()
            if code:
                lines[row] = code + "\n"
            else:
                drop.add(row)
    return "".join(line for i, line in enumerate(lines) if i not in drop).rstrip("\n")


def shipped(part):
    """The functions a part of the script ships (``IN_STEP``, ``COMMAND_LINE`` or any
    tuple of module names here): name -> its exact source, in module order.

    That is every function of the part's modules, then each function of another
    module here that they use, directly or not (the command line's progress line
    measures outputs with the marshaller's ``_kale_path_size``), so a part's list is
    complete on its own. Raises ``ValueError`` for a module that holds anything else
    than ``_kale_`` functions, its docstring and ``from __future__`` imports.
    """
    import pathlib

    definitions = _definitions(pathlib.Path(__file__).parent)
    unknown = set(part) - {module for module, _, _ in definitions.values()}
    if unknown:
        raise ValueError(f"no embedded module named {sorted(unknown)[0]!r}")
    names = [name for module in part for name, (home, _, _) in definitions.items()
             if home == module]
    for name in names:  # grows while it is walked: what the added functions use, too
        names += sorted(n for n in definitions[name][2] if n in definitions and n not in names)
    return {name: definitions[name][1] for name in names}
