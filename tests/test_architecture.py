"""The architecture as rules the code must keep: layers, no cycles, and stage deps that cover
every module a stage runs (so that `dvc repro` never serves a stale result)."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.imports import ROOT, SRC, closure, cycles, graph, imports_of, module_files

LAYERS = ("core", "data", "nets", "ranking", "train", "evaluate", "serve")


def test_layers_contract_holds():
    """import-linter's layers contract in pyproject.toml: no import goes up a layer."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "lint-imports not installed (expected import-linter from the dev extras)"
    done = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


def test_no_import_cycles():
    # A module importing its own parent package (movierec.core.x -> movierec.core) is how Python
    # imports work, not a cycle of the design.
    edges = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph().items()}
    assert cycles(edges) == []


def test_every_layer_is_a_documented_package():
    modules = module_files()
    for layer in LAYERS:
        init = SRC / "movierec" / layer / "__init__.py"
        assert init.is_file(), init
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "Imports:" in doc, f"{init}: say what it owns and what it may import"
        assert any(m.startswith(f"movierec.{layer}.") for m in modules)


def test_library_never_imports_benchmarks_or_tests():
    for path in (SRC / "movierec").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ("benchmarks", "tests", "support"), (path, name)


def _stage_deps() -> dict[str, tuple[Path, list[str]]]:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    out = {}
    for name, stage in spec["stages"].items():
        script = next(word for word in stage["cmd"].split() if word.endswith(".py"))
        out[name] = ROOT / script, [d for d in stage.get("deps", []) if "${" not in d]
    return out


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return any(rel == d.rstrip("/") or rel.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", list(_stage_deps()))
def test_stage_deps_cover_every_module_the_stage_imports(stage):
    script, deps = _stage_deps()[stage]
    assert _covered(script, deps), f"{stage}: its own script {script.name} is not a dep"
    files = module_files()
    missing = sorted(files[m].relative_to(ROOT).as_posix() for m in closure(script)
                     if not _covered(files[m], deps))
    assert not missing, f"dvc.yaml: stage {stage} runs these modules but does not list them " \
                        f"(or a folder holding them) in its deps: {missing}"


def _third_party(path: Path) -> set[str]:
    """The top-level names of every package ``path`` imports, in functions too."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("script", ["stages/recommend.py", "stages/evaluate.py",
                                    "src/movierec/serve/query.py"])
def test_scoring_paths_never_start_tensorflow(script):
    # They read the weights with h5py and score with the numba kernels: TensorFlow's start-up
    # would cost more than their work on small data, and every query command would pay it.
    files = module_files()
    started = {name: sorted(_third_party(files[name]) & {"keras", "tensorflow"})
               for name in closure(ROOT / script)}
    started[script] = sorted(_third_party(ROOT / script) & {"keras", "tensorflow"})
    assert not {k: v for k, v in started.items() if v}, started


def test_closure_follows_lazy_and_transitive_imports(tmp_path):
    """The closure is what the deps test stands on: it must see an import inside a function
    and the imports of what is imported."""
    pkg = tmp_path / "movierec"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text("from movierec.low import b\n")
    (pkg / "low" / "b.py").write_text("def f():\n    from movierec.low.c import g\n")
    (pkg / "low" / "c.py").write_text("g = 1\n")
    (pkg / "low" / "unused.py").write_text("")
    script = tmp_path / "stage.py"
    script.write_text("def main():\n    import movierec.low.a\n")
    assert closure(script, tmp_path) == {"movierec", "movierec.low", "movierec.low.a",
                                         "movierec.low.b", "movierec.low.c"}
    assert imports_of(pkg / "low" / "a.py", module_files(tmp_path), "movierec.low.a") == {
        "movierec", "movierec.low", "movierec.low.b"}


@pytest.mark.slow
def test_importing_the_package_changes_nothing_in_the_process():
    """No import-time side effects: environment, stderr and signal handlers stay as they were
    after importing every module (but ``core.quiet_start``, whose one job is to install the
    stderr filter, and only entry points import it)."""
    modules = [m for m in module_files() if m != "movierec.core.quiet_start"]
    # The third-party libraries first: TensorFlow and h5py set variables of their own on import.
    code = f"""
import importlib, os, signal, sys
import keras, matplotlib, numba, numpy, pandas, pyarrow, tensorflow, yaml
env, err = dict(os.environ), os.fstat(2)
handlers = {{s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}}
for name in {modules!r}:
    importlib.import_module(name)
changed = sorted(k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k))
assert not changed, f"environment changed: {{changed}}"
now = os.fstat(2)
assert (now.st_dev, now.st_ino) == (err.st_dev, err.st_ino), "stderr was redirected"
assert sys.stderr is sys.__stderr__, "sys.stderr was replaced"
assert {{s: signal.getsignal(s) for s in handlers}} == handlers, "signal handlers changed"
print("unchanged")
"""
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=False, env=env, cwd=ROOT)
    assert done.returncode == 0 and "unchanged" in done.stdout, done.stderr[-3000:]
