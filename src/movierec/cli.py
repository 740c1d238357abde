"""What every stage entry point shares: argument parsing and one-line errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from movierec.errors import MovieRecError


def stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="the params file (params.yaml)")
    return parser


def run_stage(main: Callable[[], None]) -> None:
    """Runs a stage: the project's errors become one line on stderr and exit status 1."""
    try:
        main()
    except MovieRecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        # Outputs are written atomically, so an interrupted stage leaves no partial file.
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
