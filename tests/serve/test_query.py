"""One user's recommendations and one movie's neighbours from saved pipeline outputs: the same
lists as the recommend stage's code, stars clipped to the scale, unknown ids refused."""

import numpy as np
import pandas as pd
import pytest
from support.nets import saved_form, scorer, spec_of

from movierec.core.files import write_parquet
from movierec.data.sparse import Seen
from movierec.nets.keras_model import save_model
from movierec.ranking.topn import recommend_block
from movierec.serve.query import Recommender, UnknownIdError

N_USERS, N_MOVIES = 12, 30


@pytest.fixture(scope="module", params=["rating", "bpr"])
def outputs(request, tmp_path_factory):
    """A saved model and the files the recommend command reads, in a temporary project."""
    root = tmp_path_factory.mktemp(request.param)
    spec = spec_of("residual", N_USERS, N_MOVIES, 4, 8, objective=request.param,
                   train_mean=3.5)
    model = saved_form(spec, seed=3, scale=0.6)
    paths = {name: root / f"{name}.parquet" for name in ("train", "user_index", "movie_index")}
    paths["model"] = root / "model.keras"
    save_model(model, spec, paths["model"])
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(N_USERS - 1), 5)  # the last user has no train rating
    movies = rng.integers(0, N_MOVIES - 2, users.size)  # the last two movies: none either
    write_parquet(pd.DataFrame({"user_idx": users, "movie_idx": movies,
                                "rating": np.full(users.size, 4.0)}), paths["train"])
    write_parquet(pd.DataFrame({"user_idx": np.arange(N_USERS),
                                "userId": np.arange(N_USERS) * 10 + 7}), paths["user_index"])
    write_parquet(pd.DataFrame({"movie_idx": np.arange(N_MOVIES),
                                "movieId": np.arange(N_MOVIES) * 3 + 1,
                                "title": [f"Movie {i}" for i in range(N_MOVIES)],
                                "genres": "Drama"}), paths["movie_index"])
    return spec, model, paths, Seen.from_pairs(users, movies, N_USERS, N_MOVIES)


def test_recommend_gives_the_recommend_stages_list(outputs):
    spec, model, paths, seen = outputs
    rec = Recommender.load(paths)
    assert rec.objective == spec.objective
    for user in range(N_USERS - 1):
        idx, val = recommend_block(scorer(model, spec), np.array([user]), seen, 5)
        items = rec.recommend(user * 10 + 7, 5)
        assert [i.movie_id for i in items] == [m * 3 + 1 for m in idx[0]]
        assert [i.rank for i in items] == [1, 2, 3, 4, 5]
        np.testing.assert_allclose([i.score for i in items], val[0], rtol=1e-6)
        assert not {i.movie_id for i in items} & {m * 3 + 1 for m in seen.of(user)}
        if spec.predicts_ratings:  # the predicted rating is the score on the star scale
            assert all(0.5 <= i.value <= 5.0 for i in items)
            np.testing.assert_allclose([i.value for i in items], np.clip(val[0], 0.5, 5.0),
                                       rtol=1e-6)


def test_unknown_ids_are_refused_naming_what_is_known(outputs):
    rec = Recommender.load(outputs[2])
    with pytest.raises(UnknownIdError, match=r"unknown user 117 \(the train split knows 11 "):
        rec.recommend(117, 3)  # in the index, but without a train rating
    with pytest.raises(UnknownIdError, match="unknown user 8 "):
        rec.recommend(8, 3)
    with pytest.raises(UnknownIdError, match="unknown movie 88 "):
        rec.similar(88, 3)  # listed, never rated in train


def test_similar_is_by_cosine_and_never_the_movie_itself(outputs):
    _, model, paths, seen = outputs
    rec = Recommender.load(paths)
    items = rec.similar(1, 4)
    emb = model.get_layer("movie_embedding").get_weights()[0].astype(np.float64)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = unit @ unit[0]
    sims[0] = sims[~seen.in_train] = -np.inf
    assert [i.movie_id for i in items] == [m * 3 + 1 for m in np.argsort(-sims)[:4]]
    assert 1 not in [i.movie_id for i in items]


def test_popular_counts_train_ratings(outputs):
    rec = Recommender.load(outputs[2])
    counts = np.bincount(outputs[3].movies, minlength=N_MOVIES)
    top = rec.popular(3)
    assert [i.value for i in top] == sorted(counts, reverse=True)[:3]
