"""The network's one description: what it checks, the weights it names, its JSON form."""

import dataclasses

import pytest

from movierec.core.config import TrainParams
from movierec.nets.spec import NetSpec


@pytest.mark.parametrize(("kind", "main", "side"), [
    ("residual", True, True), ("mf", True, False), ("deep", False, True)])
def test_branches_and_weights_follow_the_variant(kind, main, side):
    spec = NetSpec(kind, 7, 3, 4, 16)
    assert (spec.has_main, spec.has_side) == (main, side)
    names = [t.name for t in spec.tables]
    assert names[:2] == ["user_embedding", "movie_embedding"]
    assert ("user_bias" in names) == main and ("movie_bias" in names) == main
    assert [t.reads for t in spec.tables] == ["user", "movie"] * (2 if main else 1)
    assert [t.width for t in spec.tables] == [4, 4] + ([1, 1] if main else [])
    assert dict(spec.dense) == ({"hidden/kernel": (8, 16), "hidden/bias": (16,),
                                 "side_out/kernel": (16, 1), "side_out/bias": (1,)}
                                if side else {})


@pytest.mark.parametrize(("field", "value", "message"), [
    ("variant", "svd", "variant='svd'"),
    ("n_users", 0, "n_users=0"),
    ("latent_dim", 2.0, "latent_dim=2.0"),
    ("hidden_units", True, "hidden_units=True"),
    ("dropout", 1.0, "dropout=1.0"),
    ("objective", "hinge", "objective='hinge'"),
])
def test_bad_fields_are_refused_naming_what_was_received(field, value, message):
    good = dataclasses.asdict(NetSpec("residual", 5, 6))
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        NetSpec(**{**good, field: value})


def test_a_ranking_spec_has_no_training_mean():
    with pytest.raises(ValueError, match=r"train_mean=3\.5 for objective .bpr."):
        NetSpec("residual", 5, 6, objective="bpr", train_mean=3.5)


def test_json_round_trip_and_strict_reading():
    spec = NetSpec("deep", 11, 13, 3, 5, 0.25, "rating", 3.52)
    assert NetSpec.from_json(spec.to_json()) == spec
    assert NetSpec.from_json(spec.to_json().encode()) == spec
    with pytest.raises(ValueError, match="layout version 99"):
        NetSpec.from_json(spec.to_json().replace('"version": 1', '"version": 99'))
    with pytest.raises(ValueError, match="received keys"):
        NetSpec.from_json('{"version": 1, "variant": "mf"}')
    with pytest.raises(ValueError, match="not JSON"):
        NetSpec.from_json("{")


def test_for_training_reads_the_train_params():
    params = TrainParams(model="mf", latent_dim=7, hidden_units=9, dropout=0.1,
                         objective="bce")
    assert NetSpec.for_training(params, 4, 5) == NetSpec("mf", 4, 5, 7, 9, 0.1, "bce", 0.0)
