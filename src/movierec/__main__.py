"""`python -m movierec` (or the `movierec` console script): ask the trained pipeline.

    python -m movierec recommend --user 42 -n 10 [--json] [--fallback popular]
    python -m movierec similar --movie 1 -n 10 [--json]
    python -m movierec serve [--host 127.0.0.1] [--port 8000]   (HTTP, JSON and a page)
    python -m movierec worker [--params params.yaml]   (a multi_worker training task)
    python -m movierec plots-template [--root .] [--out PATH]   (the offline page for
        `dvc plots show`; `dvc repro` writes it too, in its plots_page stage)

Both read the pipeline's current outputs (model, id mappings, movies, train split), whose paths
dvc.yaml declares; run them in the project folder after `dvc repro` (or pass --root).
"""

from __future__ import annotations

import argparse
import json
import sys

from movierec.core.errors import MovieRecError


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} (expected a positive integer)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} (expected a positive integer)")
    return value


def _id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} (expected an integer MovieLens id)") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="movierec", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("recommend", help="a user's top-n unrated movies")
    rec.add_argument("--user", type=_id, required=True, help="MovieLens userId")
    rec.add_argument("--fallback", choices=["popular"],
                     help="for an unknown user, the most popular movies instead of an error")
    sim = sub.add_parser("similar", help="the movies nearest to a movie (cosine, embeddings)")
    sim.add_argument("--movie", type=_id, required=True, help="MovieLens movieId")
    serve = sub.add_parser("serve", help="answer over HTTP (JSON, and a page at /) from the "
                           "pipeline's outputs, swapping in new ones after `dvc repro`")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--root", default=".", help="the project folder (default: .)")
    serve.add_argument("--poll", type=float, default=2.0, help="seconds between looks at "
                       "dvc.lock for new outputs (0: never reload; default 2)")
    work = sub.add_parser("worker", help="join a multi_worker training run as a non-chief "
                          "task (TF_CONFIG); writes nothing")
    work.add_argument("--params", help="the params file (default: ROOT/params.yaml)")
    work.add_argument("--root", default=".", help="the project folder (default: .)")
    page = sub.add_parser("plots-template", help="write the HTML template, Vega inline, that "
                          "lets `dvc plots show` draw its charts offline (plots.html_template)")
    page.add_argument("--root", default=".", help="the project folder (default: .)")
    page.add_argument("--out", help="where to write it (default: the path plots.html_template "
                      "names in ROOT/.dvc/config, which the plots_page stage writes too)")
    for p in (rec, sim):
        p.add_argument("-n", type=_positive, default=10, help="how many movies (default 10)")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        p.add_argument("--root", default=".", help="the project folder (default: .)")
    return parser


def _table(items, value_header: str, value_format: str) -> str:
    width = max([len(i.title) for i in items] + [5])
    lines = [f"{'rank':>4}  {value_header:>9}  {'title':<{width}}  genres"]
    lines += [f"{i.rank:>4}  {format(i.value, value_format):>9}  {i.title:<{width}}  {i.genres}"
              for i in items]
    return "\n".join(lines)


def _similar(recommender, args) -> tuple[str, dict, str]:
    """(header, JSON payload, table) of a movie's nearest movies."""
    items = recommender.similar(args.movie, args.n)
    header = (f"{len(items)} movies nearest to movie {args.movie} "
              f"({recommender.titles[recommender.movie_index(args.movie)]})")
    payload = {"movieId": args.movie, "similar": [i.as_dict("similarity") for i in items]}
    return header, payload, _table(items, "cosine", ".3f")


def _recommend(recommender, args) -> tuple[str, dict, str]:
    """(header, JSON payload, table) of a user's top n: predicted stars for a rating model, a
    ranking model's scores otherwise."""
    items = recommender.recommend(args.user, args.n)
    payload = {"userId": args.user, "fallback": None}
    if recommender.objective == "rating":
        header = f"top {len(items)} for user {args.user} (predicted rating, 0.5-5 stars)"
        payload["recommendations"] = [i.as_dict("predicted_rating") for i in items]
        return header, payload, _table(items, "predicted", ".2f")
    header = (f"top {len(items)} for user {args.user} (ranking score of a model trained with "
              f"the {recommender.objective} objective: higher ranks first; not a star rating)")
    payload["recommendations"] = [i.as_dict("score") for i in items]
    return header, payload, _table(items, "score", ".3f")


def _popular_instead(recommender, args, exc: Exception) -> tuple[str, dict, str]:
    """``--fallback popular`` for an unknown user: the most popular movies, and why."""
    items = recommender.popular(args.n)
    header = (f"{exc}; showing the {len(items)} most popular movies instead (--fallback "
              "popular)")
    payload = {"userId": args.user, "fallback": "popular", "note": str(exc),
               "recommendations": [i.as_dict("train_ratings") for i in items]}
    return header, payload, _table(items, "ratings", ".0f")


def _answer(args) -> tuple[str, dict, str]:
    """The recommend or similar command's answer, from the pipeline's current outputs."""
    from movierec.core.paths import pipeline_paths
    from movierec.serve.query import Recommender, UnknownIdError

    recommender = Recommender.load(pipeline_paths(args.root))
    if args.command == "similar":
        return _similar(recommender, args)
    try:
        return _recommend(recommender, args)
    except UnknownIdError as exc:
        if args.fallback != "popular":
            raise
        return _popular_instead(recommender, args, exc)


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "plots-template":  # before the imports below: it needs none of them
        from movierec.evaluate.plots_page import write_template

        path = write_template(args.root, args.out)
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
        return 0
    if args.command == "serve":  # numpy and numba only: no TensorFlow to start
        from movierec.serve.run import serve

        serve(args.root, args.host, args.port, args.poll)
        return 0
    # Every other command loads TensorFlow: its start-up chatter is filtered out of stderr
    # (real errors still show), so the answer or a one-line error is all the user sees.
    import movierec.core.quiet_start  # noqa: F401

    if args.command == "worker":
        from movierec.train.worker import run_worker

        run_worker(args.root, args.params)
        return 0
    header, payload, body = _answer(args)
    print(json.dumps(payload, indent=2) if args.json else f"{header}\n{body}")
    return 0


def main(argv: list[str] | None = None) -> None:
    try:
        sys.exit(run(argv))
    except MovieRecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
