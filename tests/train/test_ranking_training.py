"""Training for ranking end to end on a small twin: the objective must be wired to win.

On the twin, who rated what follows each user's taste (``movierec.data.synthetic``), so a model that
learns it ranks held-out movies better than a most-popular list; a model trained to predict
ratings does not (it never sees which movies were not rated). If the ranking objective were
wired wrongly (labels flipped, negatives drawn from the positives, scores ignored), it would
not beat both.
"""

import numpy as np
import pytest

from movierec.core.config import TrainParams
from movierec.data import sparse
from movierec.data.preprocess import prepare
from movierec.data.sparse import Seen
from movierec.nets import scoring
from movierec.nets.keras_model import weights_of
from movierec.ranking import metrics as ranking
from movierec.ranking.topn import recommend_all
from movierec.train.scores import RANKING_HISTORY_COLUMNS, RANKING_VAL_COLUMNS
from movierec.train.training import train

K = 10


@pytest.fixture(scope="module")
def data(twin_200k):
    return prepare(twin_200k.ratings, twin_200k.movies, test_fraction=0.2, seed=1)


def _lists_ndcg(data, top):
    n_users = len(data.users)
    rel = sparse.csr_by_user(data.test["user_idx"].to_numpy(), data.test["movie_idx"].to_numpy(),
                              n_users)
    seen = Seen.from_pairs(data.train["user_idx"].to_numpy(), data.train["movie_idx"].to_numpy(),
                           n_users, len(data.movies))
    users = np.flatnonzero((np.diff(rel[0]) > 0) & (np.diff(seen.indptr) > 0))
    lists = top(users, seen)
    return ranking.ranking_metrics(lists, *sparse.csr_take(*rel, users), K)["ndcg"]


def _model_ndcg(data, result):
    weights = scoring.from_weights(result.spec, weights_of(result.model, result.spec))
    return _lists_ndcg(data, lambda users, seen: recommend_all(weights, users, seen, K)[0]
                       .astype(np.int64))


def _popularity_ndcg(data):
    def top(users, seen):
        counts = ranking.popularity_scores(seen.movies, len(data.movies))
        return ranking.top_k_global_order(counts, seen.indptr, seen.movies, users, K)
    return _lists_ndcg(data, top)


SMALL = dict(latent_dim=16, hidden_units=32, epochs=6, seed=3)


@pytest.fixture(scope="module")
def runs(data):
    n, m = len(data.users), len(data.movies)
    return {objective: train(data.train, data.test, n, m,
                             TrainParams(objective=objective, learning_rate=0.3 if objective ==
                                         "bce" else 0.08, **SMALL), verbose=0)
            for objective in ("rating", "bce")}


@pytest.mark.slow
def test_ranking_objective_beats_the_rating_objective_and_popularity(data, runs):
    ndcg = {name: _model_ndcg(data, run) for name, run in runs.items()}
    popular = _popularity_ndcg(data)
    assert ndcg["bce"] > 1.05 * popular, (ndcg, popular)
    assert ndcg["bce"] > 1.5 * ndcg["rating"], (ndcg, popular)
    # The per-epoch test curve is the same protocol at the end of the last epoch.
    assert runs["bce"].history["test_ndcg"].iloc[-1] == pytest.approx(ndcg["bce"], abs=1e-6)


@pytest.mark.slow
def test_a_ranking_model_is_saved_as_a_scorer(runs):
    bce = runs["bce"]
    assert bce.spec.objective == "bce" and not bce.spec.predicts_ratings
    assert bce.model.name == "bce_scorer" and "ranking_score" in [x.name for x in bce.model.layers]
    assert runs["rating"].spec.objective == "rating" and runs["rating"].spec.train_mean > 0
    assert tuple(bce.history.columns) == RANKING_HISTORY_COLUMNS
    assert bce.train_mean == 0.0
    stats = bce.negatives
    assert stats["drawn"] == len(bce.history) * 4 * bce.n_fit + stats["rejected"]


@pytest.mark.slow
def test_bpr_early_stops_on_validation_ndcg(data):
    n, m = len(data.users), len(data.movies)
    params = TrainParams(objective="bpr", val_fraction=0.1, patience=1, ndcg_users=300,
                         **{**SMALL, "epochs": 3})
    result = train(data.train, data.test, n, m, params, verbose=0)
    history = result.history
    assert tuple(history.columns) == RANKING_HISTORY_COLUMNS + RANKING_VAL_COLUMNS
    best = int(history["val_ndcg"].to_numpy().argmax()) + 1
    assert result.best_epoch == best  # the model keeps the best validation epoch's weights
