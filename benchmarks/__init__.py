"""Benchmarks of the project at MovieLens-20M scale. They are not tests: they print figures
rather than check them, and at full size each runs for minutes.

Run from the checkout, in the project's virtualenv::

    python -m benchmarks speed      # or: make bench
    python -m benchmarks ingest
    python -m benchmarks recommend  # or: make bench-recommend
    python -m benchmarks ranking    # or: make bench-ranking
    python -m benchmarks pipeline   # or: make bench-pipeline
    python -m benchmarks ease       # or: make bench-ease
    python -m benchmarks serve      # or: make bench-serve
    python -m benchmarks <name> --help   # sizes, steps, seeds, a folder to keep the data in

What each measures, on the full-size synthetic twin of MovieLens-20M by default:

- ``speed`` (:mod:`benchmarks.speed`): the ingest and preprocess stages against the tutorial's
  per-row indexing; training throughput of the tutorial's ``model.fit`` against the project's
  loop (every update rule, and the mirrored strategy); the train, recommend and evaluate
  stages' time and peak memory; an accuracy check of the training paths on a 1M-rating twin.
- ``ingest`` (:mod:`benchmarks.ingest`): reading an ML-20M-shaped release zip, its time and
  peak memory next to the size of the table read.
- ``recommend`` (:mod:`benchmarks.recommend`): the recommend stage, exact and with retrieved
  candidates, its scoring kernel against a compiled XLA scorer, and the ``recommend``
  command's latency per user.
- ``ranking`` (:mod:`benchmarks.ranking`): one epoch with sampled negatives per objective
  (rating, bce, bpr): building its examples, the time per step, and the ranking probe.
- ``pipeline`` (:mod:`benchmarks.pipeline`): the ranking configuration's whole pipeline,
  ingest to evaluate, each stage's time and peak memory and the total.
- ``ease`` (:mod:`benchmarks.ease`): the evaluate stage's EASE baseline (lambda grid, fit, top-k
  lists), its time and peak memory, and what restricting it to the most-rated movies costs.
- ``serve`` (:mod:`benchmarks.serve`): the recommendation service under a bounded load on
  127.0.0.1: start-up, requests per second, latency percentiles, memory, and the breakdown.

Each benchmark module has ``add_arguments(parser)`` and ``run(args)``, wired by
:mod:`benchmarks.__main__`; what they share (running stages and fresh child processes, the
working folder, the report line) is :mod:`benchmarks.common`.
"""
