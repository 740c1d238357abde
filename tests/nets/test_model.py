import keras
import numpy as np
import pytest

from movierec.nets.keras_model import (
    build_model,
    build_residual_model,
    expected_weight_count,
    load_model,
    save_model,
    train_mean_of,
    with_offset,
)


@pytest.mark.parametrize(("n", "m", "k", "h"), [(20, 30, 10, 400), (7, 3, 4, 16)])
def test_weight_count_matches_the_tutorials_formula(n, m, k, h):
    model = build_residual_model(n, m, k, h)
    # by hand: N*K + M*K (embeddings) + N + M (biases) + (2K*H + H) + (H + 1)
    assert model.count_params() == n * k + m * k + n + m + 2 * k * h + h + h + 1
    assert model.count_params() == expected_weight_count(n, m, k, h)


def test_layers_are_the_tutorials():
    model = build_residual_model(10, 12)
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
    model = build_model(kind, 7, 3, 4, 16)
    assert model.count_params() == by_hand == expected_weight_count(7, 3, 4, 16, kind)
    names = {layer.name for layer in model.layers}
    assert ("dot" in names) == (kind != "deep")
    assert ("hidden" in names) == (kind != "mf")
    assert ("residual_sum" in names) == (kind == "residual")


def test_mf_is_dot_plus_biases_and_deep_is_the_mlp():
    users, movies = np.array([[0], [2]]), np.array([[1], [0]])
    mf = build_model("mf", 3, 2, 4, 8)
    u = mf.get_layer("user_embedding").embeddings.numpy()[users[:, 0]]
    m = mf.get_layer("movie_embedding").embeddings.numpy()[movies[:, 0]]
    bu = mf.get_layer("user_bias").embeddings.numpy()[users[:, 0], 0]
    bm = mf.get_layer("movie_bias").embeddings.numpy()[movies[:, 0], 0]
    np.testing.assert_allclose(mf.predict([users, movies], verbose=0)[:, 0],
                               (u * m).sum(axis=1) + bu + bm, atol=1e-6)
    deep = build_model("deep", 3, 2, 4, 8)
    w1, b1 = (w.numpy() for w in deep.get_layer("hidden").weights)
    w2, b2 = (w.numpy() for w in deep.get_layer("side_out").weights)
    x = np.concatenate([deep.get_layer("user_embedding").embeddings.numpy()[users[:, 0]],
                        deep.get_layer("movie_embedding").embeddings.numpy()[movies[:, 0]]], 1)
    h = x @ w1 + b1
    h = np.where(h > 0, h, np.expm1(h))  # elu
    np.testing.assert_allclose(deep.predict([users, movies], verbose=0)[:, 0],
                               (h @ w2 + b2)[:, 0], atol=1e-5)


def test_dropout_is_a_layer_after_elu_only_when_asked():
    assert "dropout" not in {layer.name for layer in build_model("residual", 4, 4, 2, 8).layers}
    model = build_model("residual", 4, 4, 2, 8, dropout=0.3)
    assert model.get_layer("dropout").rate == 0.3
    with pytest.raises(ValueError, match="kind='svd'"):
        build_model("svd", 4, 4)


def test_output_is_sum_of_main_and_side_branch():
    model = build_residual_model(5, 6, 3, 8)
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


def test_save_load_gives_identical_predictions_and_keeps_the_mean(tmp_path):
    model = with_offset(build_residual_model(9, 11, 4, 8), train_mean=3.52)
    u = np.arange(9).reshape(-1, 1)
    m = (np.arange(9) % 11).reshape(-1, 1)
    before = model.predict([u, m], verbose=0)
    path = tmp_path / "model.keras"
    save_model(model, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]  # no temp left
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict([u, m], verbose=0), before)
    assert train_mean_of(loaded) == pytest.approx(3.52)


@pytest.mark.parametrize("bad", [0, -1, 2.0, np.int64(3), True])
def test_builder_refuses_non_int_sizes(bad):
    with pytest.raises(ValueError, match="expected a positive Python int"):
        build_residual_model(bad, 5)


def test_same_weights_give_the_same_file(tmp_path):
    # DVC hashes the model: two separately built models with the same weights (so different
    # Python objects and save times) must give byte-identical files.
    for name in ("a", "b"):
        keras.utils.set_random_seed(0)
        save_model(with_offset(build_residual_model(4, 5, 2, 3), train_mean=3.0),
                   tmp_path / f"{name}.keras")
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
