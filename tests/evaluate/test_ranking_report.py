"""evaluate's ranking section: users ranked, the stage's lists read back, baselines beside."""

import numpy as np
import pandas as pd
import pytest

from movierec.core.errors import DataError
from movierec.data.sparse import csr_by_user
from movierec.evaluate.ranking_report import lists_from_table, ranking_report
from movierec.ranking.protocol import evaluation_users


def test_evaluation_users_leave_out_and_count_and_sample_by_seed():
    # 6 users: 0-3 have train and relevant test movies; 4 has test ratings but no train
    # rating; 5 has train ratings and test ratings below the threshold (none relevant).
    train = csr_by_user(np.array([0, 1, 2, 3, 5]), np.array([0, 1, 2, 3, 4]), 6)[0]
    rel = csr_by_user(np.array([0, 1, 2, 3, 4]), np.array([1, 2, 3, 4, 0]), 6)[0]
    test_users = np.array([0, 1, 2, 3, 4, 5])
    users, counts = evaluation_users(train, rel, test_users, 0, 1)
    assert users.tolist() == [0, 1, 2, 3]
    assert counts == {"test_users": 6, "without_train_ratings": 1, "without_relevant": 1}
    sample, _ = evaluation_users(train, rel, test_users, 2, 7)
    again, _ = evaluation_users(train, rel, test_users, 2, 7)
    assert len(sample) == 2 and set(sample) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(sample, again)
    others = {tuple(evaluation_users(train, rel, test_users, 2, s)[0]) for s in range(20)}
    assert len(others) > 1


def test_lists_from_table_maps_ids_and_pads():
    user_ids = np.array([10, 20, 30])
    movie_ids = np.array([5, 7, 9, 11])
    table = pd.DataFrame({"userId": [10, 10, 10, 30, 30], "rank": [1, 2, 3, 1, 2],
                          "movieId": [9, 5, 11, 7, 9], "score": [4.0, 3.0, 2.0, 5.0, 1.0]})
    # User 20 has no candidate left, so no list.
    got = lists_from_table(table, np.array([2, 0, 1]), user_ids, movie_ids, 2,
                           np.array([2, 3, 0]), "top.parquet")
    # Rows follow the users asked for: user 30, user 10, user 20 (no list: all -1).
    assert got.tolist() == [[1, 2], [2, 0], [-1, -1]]
    # k = 4: user 10 had exactly 3 candidates, so a list of 3 is complete...
    got = lists_from_table(table, np.array([0]), user_ids, movie_ids, 4, np.array([3]), "t")
    assert got.tolist() == [[2, 0, 3, -1]]
    # ... but with 4 or more candidates it was cut short by recommend.n.
    with pytest.raises(DataError, match=r"top.parquet: lists of at most 3 movies \(expected at "
                                        r"least evaluate.k = 4; set recommend.n >= evaluate.k\)"):
        lists_from_table(table, np.array([0]), user_ids, movie_ids, 4, np.array([9]),
                         "top.parquet")
    bad = table.assign(movieId=[9, 5, 11, 7, 8])
    with pytest.raises(DataError, match="ids that the user or movie index does not hold"):
        lists_from_table(bad, np.array([0]), user_ids, movie_ids, 2, np.array([3]), "t")


def test_ranking_report_ranks_baselines_with_the_same_protocol():
    # Movies 0..4; train counts 3, 2, 2, 1, 0 (movie 4 has no train rating: never listed).
    train_users = np.array([0, 1, 2, 0, 1, 2, 3, 1])
    train_movies = np.array([0, 0, 0, 1, 1, 2, 2, 3])
    t_indptr, t_indices = csr_by_user(train_users, train_movies, 4)
    rel_indptr, rel_indices = csr_by_user(np.array([3, 3]), np.array([0, 4]), 4)
    users = np.array([3])
    model = np.array([[1, 3]])  # the stage's list for user 3: no hit
    report = ranking_report(model, users, {"test_users": 1}, t_indptr, t_indices, rel_indptr,
                            rel_indices, np.array([0.0, 0.5, 0.1, 0.9, 2.0]), 2, 0.0)
    # Popular for user 3 (who rated movie 2): movie 0 (3 ratings), then 1 -> hit at 1 of 2
    # relevant (movie 4 can never be recommended but counts).
    assert report["popularity"]["precision"] == 0.5
    assert report["popularity"]["recall"] == 0.5
    assert report["popularity"]["ndcg"] == pytest.approx(1 / (1 + 1 / np.log2(3)))
    # Biases: movie 4 has the largest bias but no train rating; then 3, 1 -> no hit.
    assert report["biases"]["precision"] == 0.0
    assert report["model"] == {"precision": 0.0, "recall": 0.0, "ndcg": 0.0, "map": 0.0,
                               "map_at_k": 0.0}
    assert (report["k"], report["users"]) == (2, 1)


def test_summary_says_plainly_whether_the_model_beats_popularity_and_ease():
    from movierec.evaluate.report import summary_lines
    from movierec.nets.spec import NetSpec

    row = {"precision": 0.1, "recall": 0.1, "ndcg": 0.0, "map": 0.1, "map_at_k": 0.1}
    rank = {"k": 10, "users": 5, "model": {**row, "ndcg": 0.30},
            "popularity": {**row, "ndcg": 0.20}, "biases": row, "ease": {**row, "ndcg": 0.40},
            "ease_fit": {"lambda": 500.0, "movies": 7, "movies_in_train": 9,
                         "holdout_ndcg": {"100": 0.1, "500": 0.2}}}
    spec = NetSpec("residual", 3, 9, 4, 8, 0.0, "bce", 0.0)
    lines = summary_lines({"ranking": rank}, spec)
    assert ("evaluate: EASE on the 7 most-rated of 9 train movies, lambda 500, chosen by "
            "NDCG@10 on a hold-out of the train split: 100 (0.1000), 500 (0.2000)") in lines
    assert lines[-2] == ("evaluate: the model's NDCG@10 is 1.50x the most-popular list's: it "
                         "beats popularity")
    assert lines[-1] == "evaluate: the model's NDCG@10 is 0.75x EASE's: it does NOT beat EASE"
