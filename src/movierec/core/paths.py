"""The pipeline's file paths, read from dvc.yaml's ``vars`` (declared there once) for the
commands that run outside DVC (``python -m movierec ...``)."""

from __future__ import annotations

from pathlib import Path

import yaml

from movierec.core.errors import MovieRecError


def pipeline_paths(root: str | Path = ".") -> dict[str, Path]:
    """``vars: - paths: {...}`` of ``root/dvc.yaml``, each path made relative to ``root``."""
    dvc_yaml = Path(root) / "dvc.yaml"
    try:
        spec = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MovieRecError(f"{dvc_yaml} not found (expected to run in the project's folder, "
                            "or --root pointing at it)") from None
    for entry in (spec or {}).get("vars", []):
        if isinstance(entry, dict) and isinstance(entry.get("paths"), dict):
            return {name: Path(root) / str(path) for name, path in entry["paths"].items()}
    raise MovieRecError(f"{dvc_yaml}: no `vars: - paths:` mapping (expected the project's "
                        "dvc.yaml)")
