"""The one description of the network, from which every implementation of it is built.

A :class:`NetSpec` says which network it is (the tutorial's ``residual``, or its ``mf`` or
``deep`` branch alone), its sizes, its dropout, what it was trained for and the training mean
it adds to its output. The Keras model (``keras_model``), the hand-written training pass
(``fused``) and the scorer (``scoring``) read the structure from here; none of them recovers it
from another's layer names. The spec is saved inside the model file (``keras_model.save_model``)
and read back with it, so a trained model says what it is.

The weights are named by the spec too: ``tables`` (the embedding tables, each read by one
input) and ``dense`` (the side branch's Dense kernels and biases), in the order every
implementation passes them around.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from movierec.core.config import MODELS, OBJECTIVES, TrainParams

# The spec's layout in the model file; a file written with another layout is refused.
SPEC_VERSION = 1
USER, MOVIE = "user", "movie"


@dataclass(frozen=True)
class Table:
    """An embedding table: its name (the Keras layer's), the input it reads, its width."""

    name: str
    reads: str  # USER or MOVIE
    width: int


@dataclass(frozen=True)
class NetSpec:
    """The architecture of one network and what it was trained for."""

    variant: str  # residual (the tutorial), mf (dot product + biases) or deep (the MLP)
    n_users: int
    n_movies: int
    latent_dim: int = 10
    hidden_units: int = 400
    dropout: float = 0.0  # after the side branch's elu; training only
    objective: str = "rating"  # rating: predicts stars; bce, bpr: a ranking score
    train_mean: float = 0.0  # added to the output of a rating model (0 for ranking)

    def __post_init__(self) -> None:
        if self.variant not in MODELS:
            raise ValueError(f"NetSpec: received variant={self.variant!r} (expected one of "
                             f"{', '.join(MODELS)})")
        for name in ("n_users", "n_movies", "latent_dim", "hidden_units"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"NetSpec: received {name}={value!r} (expected a positive "
                                 "Python int)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"NetSpec: received dropout={self.dropout!r} (expected [0, 1))")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"NetSpec: received objective={self.objective!r} (expected one "
                             f"of {', '.join(OBJECTIVES)})")
        if self.objective != "rating" and self.train_mean != 0.0:
            raise ValueError(f"NetSpec: received train_mean={self.train_mean!r} for objective "
                             f"{self.objective!r} (expected 0: a ranking score has no mean)")

    @classmethod
    def for_training(cls, params: TrainParams, n_users: int, n_movies: int,
                     train_mean: float = 0.0) -> NetSpec:
        return cls(params.model, int(n_users), int(n_movies), params.latent_dim,
                   params.hidden_units, params.dropout, params.objective, float(train_mean))

    @property
    def has_main(self) -> bool:
        """The dot product plus biases."""
        return self.variant in ("residual", "mf")

    @property
    def has_side(self) -> bool:
        """concatenate -> Dense(hidden) -> elu (-> dropout) -> Dense(1)."""
        return self.variant in ("residual", "deep")

    @property
    def predicts_ratings(self) -> bool:
        return self.objective == "rating"

    @property
    def tables(self) -> tuple[Table, ...]:
        """The embedding tables, in the order the training pass takes their rows."""
        k = self.latent_dim
        out = [Table("user_embedding", USER, k), Table("movie_embedding", MOVIE, k)]
        if self.has_main:
            out += [Table("user_bias", USER, 1), Table("movie_bias", MOVIE, 1)]
        return tuple(out)

    @property
    def dense(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """The dense weights ("layer/weight", shape), in the order the training pass takes
        them; none without the side branch."""
        if not self.has_side:
            return ()
        k, h = self.latent_dim, self.hidden_units
        return (("hidden/kernel", (2 * k, h)), ("hidden/bias", (h,)),
                ("side_out/kernel", (h, 1)), ("side_out/bias", (1,)))

    def to_json(self) -> str:
        return json.dumps({"version": SPEC_VERSION, **dataclasses.asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> NetSpec:
        """The spec :meth:`to_json` wrote; a ValueError naming what is wrong otherwise."""
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"NetSpec: not JSON ({exc})") from None
        if not isinstance(raw, dict) or raw.get("version") != SPEC_VERSION:
            got = raw.get("version") if isinstance(raw, dict) else type(raw).__name__
            raise ValueError(f"NetSpec: received layout version {got!r} (expected "
                             f"{SPEC_VERSION})")
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in raw.items() if k != "version"}
        if set(fields) != names:
            raise ValueError(f"NetSpec: received keys {sorted(fields)} (expected "
                             f"{sorted(names)})")
        return cls(**fields)
