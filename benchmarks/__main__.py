"""``python -m benchmarks speed|ingest|recommend|ranking|pipeline|ease|serve [options]``: see the
package's docstring for what each measures."""

from __future__ import annotations

import argparse

import benchmarks
from benchmarks import common, ease, ingest, pipeline, ranking, recommend, serve, speed

COMMANDS = {"ingest": ingest, "speed": speed, "recommend": recommend, "ranking": ranking,
            "pipeline": pipeline, "ease": ease, "serve": serve}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=benchmarks.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--in-process", action="store_true",
                        help="run every measurement that can in this process: a quick check that "
                        "the benchmark runs end to end, whose times and peak memory are not "
                        "comparable with a normal run's")
    sub = parser.add_subparsers(dest="what", required=True)
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(
            name, help=module.HELP, description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    common.IN_PROCESS = args.in_process
    COMMANDS[args.what].run(args)


if __name__ == "__main__":
    main()
