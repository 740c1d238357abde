"""Static guarantees about the code itself: nothing that runs untrusted input as code."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "src").rglob("*.py")) + sorted((ROOT / "stages").glob("*.py"))

FORBIDDEN = {
    r"\bimport pickle\b|\bpickle\.": "pickle: artifacts are parquet, JSON, .keras and npz",
    r"allow_pickle\s*=\s*True": "numpy pickles: load arrays with allow_pickle=False",
    r"shell\s*=\s*True|os\.system\(|os\.popen\(": "shell strings: pass argument lists",
    r"yaml\.load\(|yaml\.unsafe_load|yaml\.full_load": "unsafe YAML: use yaml.safe_load",
    r"safe_mode\s*=\s*False": "Keras models load in safe mode",
    r"\beval\(|\bexec\(": "eval/exec",
    r"\.extractall\(": "zip extraction: members are read in place, never extracted",
}


@pytest.mark.parametrize("pattern", list(FORBIDDEN))
def test_no_unsafe_calls(pattern):
    hits = [f"{path.relative_to(ROOT)}:{n}" for path in SOURCES
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if re.search(pattern, line) and not line.lstrip().startswith("#")]
    assert not hits, f"{FORBIDDEN[pattern]}: {hits}"


def test_the_scan_sees_the_code():
    assert len(SOURCES) > 10
    assert any("safe_mode=True" in p.read_text() for p in SOURCES)
