"""The Keras model built from a spec: the tutorial's layers and parameter count, each variant's
graph, and the saved file (byte-reproducible, with its spec inside, loadable by plain Keras)."""

import zipfile

import keras
import numpy as np
import pytest
from support.nets import KINDS, expected_weight_count, saved_form, spec_of

from movierec.core.errors import DataError
from movierec.nets.keras_model import (
    SPEC_ENTRY,
    build_model,
    for_saving,
    load_model,
    load_net,
    load_spec,
    save_model,
    weights_of,
)
from movierec.nets.saved import read_weights
from movierec.nets.scoring import from_weights, predict_pairs
from movierec.nets.spec import NetSpec


@pytest.mark.parametrize(("n", "m", "k", "h"), [(20, 30, 10, 400), (7, 3, 4, 16)])
def test_weight_count_matches_the_tutorials_formula(n, m, k, h):
    model = build_model(NetSpec("residual", n, m, k, h))
    # by hand: N*K + M*K (embeddings) + N + M (biases) + (2K*H + H) + (H + 1)
    assert model.count_params() == n * k + m * k + n + m + 2 * k * h + h + h + 1


def test_layers_are_the_tutorials():
    model = build_model(NetSpec("residual", 10, 12))
    kinds = sorted(type(layer).__name__ for layer in model.layers)
    assert kinds == sorted(["InputLayer", "InputLayer", "Embedding", "Embedding", "Embedding",
                            "Embedding", "Dot", "Add", "Flatten", "Flatten", "Flatten",
                            "Concatenate", "Dense", "Activation", "Dense", "Add"])
    assert model.get_layer("user_embedding").output_dim == 10
    assert model.get_layer("hidden").units == 400
    assert model.get_layer("elu").activation.__name__ == "elu"
    assert model.get_layer("side_out").units == 1


@pytest.mark.parametrize(("kind", "by_hand"), [
    # N=7, M=3, K=4, H=16
    ("mf", 7 * 4 + 3 * 4 + 7 + 3),
    ("deep", 7 * 4 + 3 * 4 + (2 * 4 * 16 + 16) + (16 + 1)),
    ("residual", 7 * 4 + 3 * 4 + 7 + 3 + (2 * 4 * 16 + 16) + (16 + 1)),
])
def test_variants_build_the_intended_graphs(kind, by_hand):
    spec = NetSpec(kind, 7, 3, 4, 16)
    model = build_model(spec)
    assert model.count_params() == by_hand == expected_weight_count(spec)
    names = {layer.name for layer in model.layers}
    assert ("dot" in names) == spec.has_main
    assert ("hidden" in names) == spec.has_side
    assert ("residual_sum" in names) == (kind == "residual")


def test_mf_is_dot_plus_biases_and_deep_is_the_mlp():
    users, movies = np.array([[0], [2]]), np.array([[1], [0]])
    mf = build_model(NetSpec("mf", 3, 2, 4, 8))
    u = mf.get_layer("user_embedding").embeddings.numpy()[users[:, 0]]
    m = mf.get_layer("movie_embedding").embeddings.numpy()[movies[:, 0]]
    bu = mf.get_layer("user_bias").embeddings.numpy()[users[:, 0], 0]
    bm = mf.get_layer("movie_bias").embeddings.numpy()[movies[:, 0], 0]
    np.testing.assert_allclose(mf.predict([users, movies], verbose=0)[:, 0],
                               (u * m).sum(axis=1) + bu + bm, atol=1e-6)
    deep = build_model(NetSpec("deep", 3, 2, 4, 8))
    w1, b1 = (w.numpy() for w in deep.get_layer("hidden").weights)
    w2, b2 = (w.numpy() for w in deep.get_layer("side_out").weights)
    x = np.concatenate([deep.get_layer("user_embedding").embeddings.numpy()[users[:, 0]],
                        deep.get_layer("movie_embedding").embeddings.numpy()[movies[:, 0]]], 1)
    h = x @ w1 + b1
    h = np.where(h > 0, h, np.expm1(h))  # elu
    np.testing.assert_allclose(deep.predict([users, movies], verbose=0)[:, 0],
                               (h @ w2 + b2)[:, 0], atol=1e-5)


def test_dropout_is_a_layer_after_elu_only_when_asked():
    assert "dropout" not in {layer.name for layer in
                             build_model(NetSpec("residual", 4, 4, 2, 8)).layers}
    model = build_model(NetSpec("residual", 4, 4, 2, 8, dropout=0.3))
    assert model.get_layer("dropout").rate == 0.3


def test_output_is_sum_of_main_and_side_branch():
    model = build_model(NetSpec("residual", 5, 6, 3, 8))
    u, m = np.array([[1], [4]]), np.array([[0], [5]])
    pu = model.get_layer("user_embedding").get_weights()[0][u[:, 0]]
    pm = model.get_layer("movie_embedding").get_weights()[0][m[:, 0]]
    bu = model.get_layer("user_bias").get_weights()[0][u[:, 0], 0]
    bm = model.get_layer("movie_bias").get_weights()[0][m[:, 0], 0]
    w1, b1 = model.get_layer("hidden").get_weights()
    w2, b2 = model.get_layer("side_out").get_weights()
    h = np.concatenate([pu, pm], axis=1) @ w1 + b1
    h = np.where(h > 0, h, np.expm1(h))  # elu
    expected = (pu * pm).sum(1) + bu + bm + (h @ w2 + b2)[:, 0]
    got = model.predict([u, m], verbose=0)
    assert got.shape == (2, 1)
    np.testing.assert_allclose(got[:, 0], expected, rtol=1e-5, atol=1e-6)


def test_a_rating_model_adds_the_training_mean_and_a_ranking_model_does_not():
    centred = build_model(NetSpec("residual", 5, 6, 3, 8))
    u, m = np.array([[1], [4]]), np.array([[0], [5]])
    raw = centred.predict([u, m], verbose=0)
    rating = for_saving(centred, NetSpec("residual", 5, 6, 3, 8, train_mean=3.25))
    np.testing.assert_allclose(rating.predict([u, m], verbose=0), raw + 3.25, atol=1e-6)
    ranking = for_saving(centred, NetSpec("residual", 5, 6, 3, 8, objective="bpr"))
    np.testing.assert_array_equal(ranking.predict([u, m], verbose=0), raw)


@pytest.mark.parametrize("objective", ["rating", "bce"])
@pytest.mark.parametrize("kind", KINDS)
def test_save_load_gives_identical_predictions_and_the_spec(tmp_path, kind, objective):
    spec = spec_of(kind, 9, 11, 4, 8, dropout=0.2, objective=objective, train_mean=3.52)
    model = saved_form(spec)
    u = np.arange(9).reshape(-1, 1)
    m = (np.arange(9) % 11).reshape(-1, 1)
    before = model.predict([u, m], verbose=0)
    path = tmp_path / "model.keras"
    save_model(model, spec, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]  # no temp left
    loaded, loaded_spec = load_net(path)
    assert loaded_spec == spec
    np.testing.assert_array_equal(loaded.predict([u, m], verbose=0), before)
    # Plain Keras loads it too, in safe mode: the spec is an extra entry Keras does not read.
    plain = keras.saving.load_model(path, safe_mode=True, compile=False)
    np.testing.assert_array_equal(plain.predict([u, m], verbose=0), before)


@pytest.mark.parametrize("objective", ["rating", "bpr"])
@pytest.mark.parametrize("kind", KINDS)
def test_weights_read_without_tensorflow_are_the_ones_keras_loads(tmp_path, kind, objective):
    spec = spec_of(kind, 9, 11, 4, 8, dropout=0.2, objective=objective, train_mean=3.52)
    path = tmp_path / "model.keras"
    save_model(saved_form(spec), spec, path)
    got_spec, got = read_weights(path)
    loaded, loaded_spec = load_net(path)
    expected = weights_of(loaded, loaded_spec)
    assert got_spec == spec and sorted(got) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    # Scored from those weights, every pair gets the Keras model's output.
    u, m = np.repeat(np.arange(9), 11), np.tile(np.arange(11), 9)
    keras_out = loaded.predict([u.reshape(-1, 1), m.reshape(-1, 1)], verbose=0)[:, 0]
    np.testing.assert_allclose(predict_pairs(from_weights(spec, got), u, m), keras_out,
                               rtol=1e-5, atol=2e-5)


def test_a_model_whose_weights_do_not_match_its_spec_is_refused(tmp_path):
    spec = NetSpec("residual", 4, 5, 2, 3)
    path = tmp_path / "model.keras"
    save_model(saved_form(spec), spec, path)
    other = tmp_path / "other.keras"
    wider = NetSpec("residual", 4, 5, 2, 7)  # the file's Dense layers have 3 units
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(other, "w") as zout:
        for info in zin.infolist():
            data = wider.to_json() if info.filename == SPEC_ENTRY else zin.read(info)
            zout.writestr(info, data)
    with pytest.raises(DataError, match=r"hidden/kernel has shape \(4, 3\) \(expected \(4, 7\)"):
        read_weights(other)


def test_a_model_file_without_a_spec_is_refused_with_one_line(tmp_path):
    spec = NetSpec("mf", 4, 5, 2, 3)
    path = tmp_path / "model.keras"
    save_model(saved_form(spec), spec, path)
    bare = tmp_path / "bare.keras"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(bare, "w") as zout:
        for info in zin.infolist():
            if info.filename != SPEC_ENTRY:
                zout.writestr(info, zin.read(info))
    assert load_model(bare) is not None  # still a Keras model
    with pytest.raises(DataError, match=r"no movierec/net\.json inside"):
        load_spec(bare)
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"not a readable \.keras file"):
        load_spec(tmp_path / "junk.keras")


def test_same_weights_give_the_same_file(tmp_path):
    # DVC hashes the model: two separately built models with the same weights (so different
    # Python objects and save times) must give byte-identical files.
    spec = NetSpec("residual", 4, 5, 2, 3, train_mean=3.0)
    for name in ("a", "b"):
        keras.utils.set_random_seed(0)
        save_model(for_saving(build_model(spec), spec), spec, tmp_path / f"{name}.keras")
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
