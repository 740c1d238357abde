"""Typed, validated parameters, one dataclass per params.yaml section.

Every stage loads the whole params.yaml through :func:`load_params`, so a misspelt key or a value
of the wrong type anywhere stops the run with one line naming the key, the value and what was
expected, instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from movierec.core.errors import ParamsError
from movierec.core.releases import RELEASE_NAMES

DATASETS = ("synthetic", "file", *RELEASE_NAMES)
# How SGD with momentum updates the embedding tables (movierec.train.rules explains each).
TABLE_UPDATES = ("lazy", "dense", "sparse")
# The tutorial's network or one of its branches alone (movierec.nets.keras_model.build_model).
MODELS = ("residual", "mf", "deep")
# The tutorial's SGD with momentum, or Adam (Keras' defaults for its betas and epsilon).
OPTIMIZERS = ("sgd", "adam")
# Which embedding rows an L2 penalty weighs: per_rating = each rating's own user and movie rows,
# as matrix factorisation does (Surprise's SVD); whole_table = every row on every step, as
# Keras' embeddings_regularizer does (movierec.train.rules explains both).
L2_FORMS = ("per_rating", "whole_table")
# What training minimises (movierec.train.objectives explains each): the tutorial's MSE on
# ratings, or a ranking objective over rated movies and sampled unrated ones.
OBJECTIVES = ("rating", "bce", "bpr", "softmax")
# How negatives are drawn (movierec.train.negatives): uniformly over the catalogue, or in proportion
# to count^0.75 (word2vec's unigram smoothing, used by many recommenders).
NEGATIVE_SAMPLING = ("uniform", "popularity")
# What the softmax objective scores each positive against (movierec.train.pools): the batch's
# pool (its positives and the sampled movies), or its own movie and the sampled movies only.
POOLS = ("batch", "sampled")
# How the softmax computes the side branch's (user, pool movie) pairs (movierec.nets.pooled):
# fused CPU kernels, or TensorFlow ops (for accelerators). The same values either way.
PAIR_KERNELS = ("numba", "tensorflow")
# Where training runs (movierec.train.distribute explains each).
STRATEGIES = ("default", "mirrored", "multi_worker")
# How preprocess splits the ratings (movierec.data.splits explains each).
SPLITS = ("random", "stratified_item", "user_temporal")


def _expect(ok: bool, key: str, value: object, expected: str) -> None:
    if not ok:
        raise ParamsError(f"params: {key} = {value!r} (expected {expected})")


@dataclass(frozen=True)
class SyntheticParams:
    """The offline twin of MovieLens 20M."""

    n_ratings: int = 1_000_000
    seed: int = 42

    def validate(self, prefix: str) -> None:
        _expect(self.n_ratings >= 2_000, f"{prefix}.n_ratings", self.n_ratings,
                "an integer >= 2000, enough for every user's 20 ratings")
        _expect(self.n_ratings <= 100_000_000, f"{prefix}.n_ratings", self.n_ratings,
                "an integer <= 100000000")
        _expect(self.seed >= 0, f"{prefix}.seed", self.seed, "a non-negative integer")


@dataclass(frozen=True)
class DataParams:
    """Where the ratings come from (the ingest stage)."""

    dataset: str = "synthetic"
    path: str = "data/external"
    synthetic: SyntheticParams = field(default_factory=SyntheticParams)

    def validate(self, prefix: str) -> None:
        _expect(self.dataset in DATASETS, f"{prefix}.dataset", self.dataset,
                "one of " + ", ".join(DATASETS))
        _expect(bool(self.path), f"{prefix}.path", self.path, "a file path")


@dataclass(frozen=True)
class PreprocessParams:
    """Indexing and the train/test split."""

    split: str = "random"
    test_fraction: float = 0.2
    seed: int = 1234

    def validate(self, prefix: str) -> None:
        _expect(self.split in SPLITS, f"{prefix}.split", self.split,
                "one of " + ", ".join(SPLITS))
        _expect(0.0 < self.test_fraction < 1.0, f"{prefix}.test_fraction", self.test_fraction,
                "a number strictly between 0 and 1")
        _expect(self.seed >= 0, f"{prefix}.seed", self.seed, "a non-negative integer")


@dataclass(frozen=True)
class TrainParams:
    """The tutorial's model and optimiser."""

    model: str = "residual"
    dropout: float = 0.0
    latent_dim: int = 10
    hidden_units: int = 400
    epochs: int = 15
    batch_size: int = 128
    optimizer: str = "sgd"
    learning_rate: float = 0.08
    momentum: float = 0.9
    l2_embeddings: float = 0.0
    l2_embeddings_form: str = "per_rating"
    l2_dense: float = 0.0
    seed: int = 2023
    table_updates: str = "lazy"
    steps_per_execution: int = 256
    intra_op_threads: int = 1
    kernel_threads: int = 0
    val_fraction: float = 0.0
    patience: int = 2
    refit: bool = False
    objective: str = "rating"
    negatives: int = 4
    negative_sampling: str = "uniform"
    pool: str = "batch"
    pair_kernel: str = "numba"
    batch_negatives: int = 0
    ndcg_k: int = 10
    ndcg_users: int = 0
    strategy: str = "default"
    cpu_replicas: int = 0
    collective_timeout: int = 300

    @property
    def ranks(self) -> bool:
        """Trained for ranking (a score per pair), not for rating prediction."""
        return self.objective != "rating"

    def validate(self, prefix: str) -> None:
        for name in ("latent_dim", "hidden_units", "epochs", "batch_size", "steps_per_execution",
                     "negatives", "ndcg_k"):
            value = getattr(self, name)
            _expect(value >= 1, f"{prefix}.{name}", value, "an integer >= 1")
        _expect(self.model in MODELS, f"{prefix}.model", self.model, "one of " + ", ".join(MODELS))
        _expect(0.0 <= self.dropout < 1.0, f"{prefix}.dropout", self.dropout, "a number in [0, 1)")
        _expect(self.table_updates in TABLE_UPDATES, f"{prefix}.table_updates",
                self.table_updates, "one of " + ", ".join(TABLE_UPDATES))
        _expect(self.optimizer in OPTIMIZERS, f"{prefix}.optimizer", self.optimizer,
                "one of " + ", ".join(OPTIMIZERS))
        # lazy computes SGD's momentum-only steps in closed form; Adam's have none.
        _expect(self.optimizer == "sgd" or self.table_updates != "lazy",
                f"{prefix}.table_updates", self.table_updates,
                "dense (Keras' Adam, every row) or sparse (touched rows only, as LazyAdam) "
                "with optimizer adam; lazy is for sgd")
        _expect(self.l2_embeddings_form in L2_FORMS, f"{prefix}.l2_embeddings_form",
                self.l2_embeddings_form, "one of " + ", ".join(L2_FORMS))
        for name in ("l2_embeddings", "l2_dense"):
            value = getattr(self, name)
            _expect(value >= 0, f"{prefix}.{name}", value, "a number >= 0; 0 = no penalty")
        # sparse never visits untouched rows, so it cannot decay the whole table.
        _expect(not (self.l2_embeddings > 0 and self.l2_embeddings_form == "whole_table"
                     and self.table_updates == "sparse"), f"{prefix}.table_updates",
                self.table_updates, "lazy or dense with l2_embeddings_form whole_table")
        _expect(0.0 <= self.val_fraction < 1.0, f"{prefix}.val_fraction", self.val_fraction,
                "a number in [0, 1); 0 = no validation split, no early stopping")
        _expect(self.patience >= 1, f"{prefix}.patience", self.patience, "an integer >= 1")
        _expect(not self.refit or self.val_fraction > 0, f"{prefix}.refit", self.refit,
                "false when val_fraction is 0 (refit trains for the epochs early stopping "
                "chose on the validation split)")
        _expect(self.intra_op_threads >= 0, f"{prefix}.intra_op_threads", self.intra_op_threads,
                "an integer >= 0 (0 = all cores)")
        _expect(self.kernel_threads >= 0, f"{prefix}.kernel_threads", self.kernel_threads,
                "an integer >= 0 (0 = all cores)")
        _expect(self.learning_rate > 0, f"{prefix}.learning_rate", self.learning_rate,
                "a number > 0")
        _expect(0 <= self.momentum < 1, f"{prefix}.momentum", self.momentum,
                "a number in [0, 1)")
        _expect(self.seed >= 0, f"{prefix}.seed", self.seed, "a non-negative integer")
        _expect(self.objective in OBJECTIVES, f"{prefix}.objective", self.objective,
                "one of " + ", ".join(OBJECTIVES))
        # The softmax's pooled pass scores every (user, pool movie) pair with no dropout masks.
        _expect(self.objective != "softmax" or self.dropout == 0, f"{prefix}.dropout",
                self.dropout, "0 with objective softmax")
        _expect(self.negative_sampling in NEGATIVE_SAMPLING, f"{prefix}.negative_sampling",
                self.negative_sampling, "one of " + ", ".join(NEGATIVE_SAMPLING))
        _expect(self.pool in POOLS, f"{prefix}.pool", self.pool, "one of " + ", ".join(POOLS))
        _expect(0 <= self.batch_negatives <= self.batch_size, f"{prefix}.batch_negatives",
                self.batch_negatives, f"an integer in [0, batch_size = {self.batch_size}]")
        _expect(self.batch_negatives == 0 or (self.objective == "softmax"
                                              and self.pool == "sampled"),
                f"{prefix}.batch_negatives", self.batch_negatives,
                "0 unless objective is softmax and pool is sampled (the batch pool holds every "
                "positive already)")
        _expect(self.pair_kernel in PAIR_KERNELS, f"{prefix}.pair_kernel", self.pair_kernel,
                "one of " + ", ".join(PAIR_KERNELS))
        _expect(self.ndcg_users >= 0, f"{prefix}.ndcg_users", self.ndcg_users,
                "0 (every user) or the size of a seeded sample of users")
        _expect(self.strategy in STRATEGIES, f"{prefix}.strategy", self.strategy,
                "one of " + ", ".join(STRATEGIES))
        _expect(self.cpu_replicas >= 0, f"{prefix}.cpu_replicas", self.cpu_replicas,
                "an integer >= 0 (0 = the devices as they are)")
        _expect(self.collective_timeout >= 1, f"{prefix}.collective_timeout",
                self.collective_timeout, "an integer >= 1 (seconds)")


@dataclass(frozen=True)
class RecommendParams:
    """Top-n lists for every user of the train split (movierec.ranking.topn)."""

    n: int = 10
    candidates: int = 0

    def validate(self, prefix: str) -> None:
        _expect(self.n >= 1, f"{prefix}.n", self.n, "an integer >= 1")
        _expect(self.candidates == 0 or self.candidates >= self.n, f"{prefix}.candidates",
                self.candidates, f"0 (exact: score every movie) or an integer >= n = {self.n}")


# The largest EASE fit: scipy's 32-bit-index LAPACK (spotrf, spotri) fails on a matrix of
# 26,257 x 26,257 movies (a segmentation fault in OpenBLAS) and works at 23,300.
EASE_MAX_ITEMS = 20_000


@dataclass(frozen=True)
class EvaluateParams:
    """The baselines scored next to the model (movierec.evaluate.baselines) and the ranking protocol
    (movierec.ranking)."""

    bias_reg_user: float = 15.0
    bias_reg_movie: float = 10.0
    bias_epochs: int = 10
    k: int = 10
    relevance_threshold: float = 0.0
    ranking_users: int = 0
    ranking_seed: int = 42
    ease_lambda: tuple[float, ...] = (100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
                                      20000.0)
    ease_max_items: int = 10_000
    ease_holdout: float = 0.1
    ease_holdout_users: int = 10_000

    def validate(self, prefix: str) -> None:
        for name in ("bias_reg_user", "bias_reg_movie"):
            value = getattr(self, name)
            _expect(value >= 0, f"{prefix}.{name}", value, "a number >= 0")
        _expect(self.bias_epochs >= 1, f"{prefix}.bias_epochs", self.bias_epochs,
                "an integer >= 1")
        _expect(self.k >= 1, f"{prefix}.k", self.k, "an integer >= 1")
        _expect(0 <= self.relevance_threshold <= 5, f"{prefix}.relevance_threshold",
                self.relevance_threshold,
                "0 (every test rating is relevant) or a rating in (0, 5]")
        _expect(self.ranking_users >= 0, f"{prefix}.ranking_users", self.ranking_users,
                "0 (every test user) or the size of a seeded sample of users")
        _expect(self.ranking_seed >= 0, f"{prefix}.ranking_seed", self.ranking_seed,
                "a non-negative integer")
        _expect(len(self.ease_lambda) >= 1 and all(v > 0 for v in self.ease_lambda),
                f"{prefix}.ease_lambda", list(self.ease_lambda),
                "a number > 0, or a list of them to choose from on a hold-out of the train split")
        _expect(1 <= self.ease_max_items <= EASE_MAX_ITEMS, f"{prefix}.ease_max_items",
                self.ease_max_items, f"an integer from 1 to {EASE_MAX_ITEMS:,} (the "
                "most-rated movies EASE models)")
        _expect(0 < self.ease_holdout < 1, f"{prefix}.ease_holdout", self.ease_holdout,
                "a number in (0, 1): the fraction of train ratings held out to choose lambda")
        _expect(self.ease_holdout_users >= 0, f"{prefix}.ease_holdout_users",
                self.ease_holdout_users, "0 (every user) or the size of a seeded sample of users")


@dataclass(frozen=True)
class Params:
    """All of params.yaml."""

    data: DataParams = field(default_factory=DataParams)
    preprocess: PreprocessParams = field(default_factory=PreprocessParams)
    train: TrainParams = field(default_factory=TrainParams)
    recommend: RecommendParams = field(default_factory=RecommendParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _convert(value: object, annotation: object, key: str) -> object:
    """Checks one leaf value against its annotation; ints are accepted where floats are, and a
    single number where a list of numbers is (a grid of one)."""
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, key)
    if typing.get_origin(annotation) is tuple:
        item = typing.get_args(annotation)[0]
        values = value if isinstance(value, list) else [value]
        ok = bool(values) and all(isinstance(v, int | float) and not isinstance(v, bool)
                                  for v in values)
        _expect(ok, key, value, f"{_TYPE_NAMES[item]} or a non-empty list of them")
        return tuple(item(v) for v in values)
    expected = _TYPE_NAMES[annotation]
    # bool is a subclass of int in Python, but `epochs: true` is a mistake, not 1 epoch.
    if isinstance(value, bool) != (annotation is bool):
        _expect(False, key, value, expected)
    if annotation is float and isinstance(value, int):
        return float(value)
    _expect(isinstance(value, annotation), key, value, expected)
    return value


def _build(cls: type, raw: object, prefix: str):
    """Builds dataclass ``cls`` from a mapping, refusing unknown keys and wrong types."""
    where = prefix or "params.yaml"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"params: {where} = {raw!r} (expected a mapping of keys)")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        raise ParamsError(f"params: unknown key {key!r} (expected one of: {', '.join(names)})")
    kwargs = {}
    for name in names:
        if name in raw:
            key = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _convert(raw[name], hints[name], key)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(prefix)
    return obj


def parse_params(raw: object) -> Params:
    """Validates an already-loaded params mapping."""
    return _build(Params, raw, "")


def load_params(path: str | Path = "params.yaml") -> Params:
    """Reads and validates params.yaml (safe YAML loader, strict keys)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"params: {path} not found (expected a params.yaml file)") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise ParamsError(f"params: {path} is not valid YAML ({first})") from None
    return parse_params(raw)
