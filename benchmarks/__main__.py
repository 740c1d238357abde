"""``python -m benchmarks speed|ingest|recommend|ranking|ease [options]``: see the package's
docstring for what each measures."""

from __future__ import annotations

import argparse

import benchmarks
from benchmarks import ease, ingest, ranking, recommend, speed

COMMANDS = {"ingest": ingest, "speed": speed, "recommend": recommend, "ranking": ranking,
            "ease": ease}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=benchmarks.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(
            name, help=module.HELP, description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    COMMANDS[args.what].run(args)


if __name__ == "__main__":
    main()
