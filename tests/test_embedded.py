"""The code every generated script embeds (``kale_nbconvert/embedded/``) keeps the rules
that let it be pasted: a step's container and the script's command line need nothing
from this project, and each part ships every function it calls."""

import ast
from pathlib import Path

import pytest
from pyflakes import api as pyflakes_api
from pyflakes import messages as pyflakes_messages
from pyflakes import reporter as pyflakes_reporter

from kale_nbconvert.embedded import COMMAND_LINE, IN_STEP, shipped

EMBEDDED = Path(__file__).resolve().parent.parent / "kale_nbconvert" / "embedded"
MODULES = sorted(path.stem for path in EMBEDDED.glob("*.py") if path.name != "__init__.py")


class _Collect(pyflakes_reporter.Reporter):
    def __init__(self):
        super().__init__(None, None)
        self.messages = []

    def flake(self, message):
        self.messages.append(message)

    def syntaxError(self, *args):  # noqa: N802 - pyflakes' name
        raise AssertionError(args)


def test_every_module_belongs_to_exactly_one_part():
    assert sorted(IN_STEP + COMMAND_LINE) == MODULES


@pytest.mark.parametrize("module", MODULES)
def test_module_keeps_the_embedding_rules(module):
    path = EMBEDDED / f"{module}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), "say where it runs: inside a step or in the command line"
    for node in tree.body[1:]:
        assert isinstance(node, ast.FunctionDef) and node.name.startswith("_kale_"), (
            f"{path.name} line {node.lineno}: only top-level _kale_ functions"
        )
        assert not node.decorator_list, f"{path.name}: {node.name} is decorated"
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
            assert not any(name.startswith("kale_nbconvert") for name in names), ast.dump(node)
            assert not getattr(node, "level", 0), f"{path.name} line {node.lineno}: relative import"

    # Every free name is a builtin, imported inside the function, or shipped in the
    # same part of the script: pyflakes over the part's source, as the script has it.
    part = IN_STEP if module in IN_STEP else COMMAND_LINE
    functions = shipped(part)
    own = {node.name for node in tree.body[1:]}
    assert own <= set(functions)
    source, lines = "", {}
    for name, text in functions.items():
        start = source.count("\n") + 1
        source += text + "\n\n\n"
        lines.update(dict.fromkeys(range(start, source.count("\n") + 1), name))
    collect = _Collect()
    pyflakes_api.check(source, f"{module} part", collect)
    problems = [
        f"{lines[message.lineno]}: {message.message % message.message_args}"
        for message in collect.messages
        if lines.get(message.lineno) in own and isinstance(
            message, (pyflakes_messages.UndefinedName, pyflakes_messages.UndefinedLocal,
                      pyflakes_messages.UndefinedExport)
        )
    ]
    assert not problems


def test_the_shipped_lists_are_derived_and_complete():
    in_step = shipped(IN_STEP)
    assert "_kale_run_step" in in_step and "_kale_marshal_save" in in_step
    assert not set(in_step) & {"_kale_main", "_kale_worker_start"}  # a step needs no command line
    command_line = shipped(COMMAND_LINE)
    assert "_kale_path_size" in command_line  # the progress line's, from the marshaller
    assert list(command_line)[0] == "_kale_main"
    # the exact source of each function, as written in its module
    text = (EMBEDDED / "marshal.py").read_text(encoding="utf-8")
    assert in_step["_kale_path_size"] in text and in_step["_kale_path_size"].startswith("def ")


def test_anything_but_functions_is_refused(tmp_path, monkeypatch):
    import kale_nbconvert.embedded as embedded

    folder = tmp_path / "embedded"
    folder.mkdir()
    (folder / "__init__.py").write_text((EMBEDDED / "__init__.py").read_text(encoding="utf-8"))
    (folder / "extra.py").write_text('"""Doc."""\nimport os\n\n\ndef _kale_x():\n    return os\n')
    monkeypatch.setattr(embedded, "__file__", str(folder / "__init__.py"))
    with pytest.raises(ValueError, match="extra.py line 2: only top-level functions"):
        shipped(("extra",))


def _embedded_copy(tmp_path):
    import shutil

    folder = tmp_path / "embedded"
    shutil.copytree(EMBEDDED, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def test_the_definitions_are_kept_between_processes_and_read_again_when_a_module_changes(
    tmp_path, monkeypatch
):
    """A second process reads the first one's definitions instead of parsing every
    module again (0.3 s of each conversion); editing a function gives its new text."""
    import kale_nbconvert.embedded as embedded

    monkeypatch.setattr("sys.dont_write_bytecode", False)
    folder = _embedded_copy(tmp_path)
    read = embedded._definitions.__wrapped__  # a new process: nothing in memory
    first = read(folder)
    assert first == embedded._parse_definitions(
        {path.name: path.read_bytes() for path in sorted(folder.glob("*.py"))}
    )
    (cache,) = (folder / "__pycache__").glob("kale_embedded.*.marshal")

    def no_parsing(sources):
        raise AssertionError("parsed again")

    with monkeypatch.context() as patch:
        patch.setattr(embedded, "_parse_definitions", no_parsing)
        assert read(folder) == first

    step = folder / "step.py"
    text = step.read_text(encoding="utf-8")
    assert "\ndef _kale_run_step(" in text
    step.write_text(text.replace("\ndef _kale_run_step(", "\ndef _kale_run_step_renamed(", 1), encoding="utf-8")
    changed = read(folder)
    assert "_kale_run_step_renamed" in changed and "_kale_run_step" not in changed
    assert changed["_kale_run_step_renamed"][1].startswith("def _kale_run_step_renamed(")
    (newer,) = (folder / "__pycache__").glob("kale_embedded.*.marshal")
    assert newer != cache  # the old sources' file is gone, not left to pile up

    newer.write_bytes(b"not marshal data")  # a damaged cache is worked out again
    assert read(folder) == changed
    assert read(folder) == changed


def test_without_a_writable_cache_every_process_works_the_definitions_out(tmp_path, monkeypatch):
    import kale_nbconvert.embedded as embedded

    folder = _embedded_copy(tmp_path)
    monkeypatch.setattr("sys.dont_write_bytecode", True)  # PYTHONDONTWRITEBYTECODE=1
    assert embedded._definitions.__wrapped__(folder) == embedded._definitions(EMBEDDED)
    assert not (folder / "__pycache__").exists()
    monkeypatch.setattr("sys.dont_write_bytecode", False)
    (folder / "__pycache__").write_text("a file where the folder would be")
    assert "_kale_run_step" in embedded._definitions.__wrapped__(folder)


@pytest.mark.parametrize("shared", [True, False], ids=["imports cell", "no shared cell"])
def test_a_generated_script_ships_the_derived_list(tmp_path, shared):
    from helpers import make_notebook, write_script

    cells = [("x = 1", ["step:a"]), ("y = x", ["step:b", "prev:a"])]
    notebook = make_notebook([("import os", ["imports"])] * shared + cells)
    script = write_script(notebook, tmp_path, "ship.ipynb")
    tree = ast.parse(script.read_text(encoding="utf-8"))
    assigned = {
        node.targets[0].id: node.value for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    assert "RUNTIME_FUNCTIONS" not in assigned
    listed = [element.id for element in assigned["RUNTIME"].elts]
    assert listed == [*shipped(IN_STEP), *["_kale_shared_cells"] * shared]
    defined = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert set(shipped(IN_STEP)) | set(shipped(COMMAND_LINE)) <= set(defined)
    assert len(defined) == len(set(defined))  # _kale_path_size once, not once per part


def test_the_users_steps_come_first_and_the_machinery_after_a_banner():
    """A person debugging a failed step finds their cells first: the steps and the
    pipeline, then a banner, then the embedded runtime and command line."""
    import kale_nbconvert
    from kale_nbconvert.literals import py_literal

    notebook = EMBEDDED.parent.parent / "examples" / "candies.ipynb"
    script = kale_nbconvert.convert(notebook)
    first = kale_nbconvert.plan(notebook).step_list()[0]
    head = "\n".join(script.splitlines()[:100])
    for cell in first.cells:
        assert py_literal(cell.code) in head, cell.number
    banner = script.index("# Everything below is kale_nbconvert's machinery")
    assert script.index("def build_pipeline(") < banner < script.index("def _kale_run_step(")
    assert banner < script.index("def _kale_main(") < script.index('if __name__ == "__main__":')
