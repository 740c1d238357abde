"""The benchmarks' import rules, read from their source: each benchmark module imports only
``benchmarks.common`` of its siblings (so none depends on another's internals and there are no
cycles), and no module imports another module's private names."""

import ast
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SOURCES = sorted(BENCHMARKS.glob("*.py"))
DISPATCHER = "__main__.py"  # wires every benchmark module's add_arguments and run


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, names imported from it, line) for every import in ``path``, nested included;
    relative imports are spelt from the package (``benchmarks.x``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = ".".join(filter(None, ("benchmarks", module)))
            found.append((module, [alias.name for alias in node.names], node.lineno))
    return found


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_every_benchmark_module_is_found():
    names = {path.name for path in SOURCES}
    assert {"__init__.py", DISPATCHER, "common.py", "speed.py", "ingest.py", "recommend.py",
            "ranking.py", "ease.py"} <= names, names


@pytest.mark.parametrize("path", [p for p in SOURCES if p.name != DISPATCHER],
                         ids=lambda p: p.name)
def test_benchmark_modules_import_only_common_of_their_siblings(path):
    for module, names, line in imports(path):
        if module == "benchmarks":
            # ``from benchmarks import x`` names submodules: each must be common.
            assert set(names) <= {"common"}, (path.name, line, names)
        elif module.startswith("benchmarks."):
            assert module == "benchmarks.common", (path.name, line, module)
            assert path.name != "common.py", (path.name, line, "common imports itself")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_private_name_is_imported_from_another_module(path):
    for module, names, line in imports(path):
        private = [part for part in module.split(".") if is_private(part)]
        private += [name for name in names if is_private(name)]
        assert not private, (path.name, line, module, private)


def test_the_rules_catch_what_they_forbid(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from benchmarks.speed import _child\n"
                   "from . import ranking\n")
    found = imports(bad)
    assert ("benchmarks.speed", ["_child"], 2) in found
    assert ("benchmarks", ["ranking"], 3) in found
    assert is_private("_child") and not is_private("__future__")
