import math

import numpy as np
import pytest

from movierec.data.sparse import csr_by_user, csr_take
from movierec.ranking.metrics import (
    popularity_scores,
    ranking_metrics,
    relevant_pairs,
    top_k_global_order,
)

METRICS = ("precision", "recall", "ndcg", "map", "map_at_k")


def _csr(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    users = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    items = np.array([i for r in rows for i in r], dtype=np.int64)
    return csr_by_user(users, items, len(rows))


def _one(recommended: list[int], relevant: list[int], k: int) -> dict:
    return ranking_metrics(np.array([recommended]), *_csr([relevant]), k)


def _assert_metrics(report: dict, **expected: float) -> None:
    for name, value in expected.items():
        assert report[name] == pytest.approx(value), name


# ---- csr_by_user and helpers ------------------------------------------------------------------

def test_csr_by_user_sorts_dedups_and_keeps_empty_users():
    users = np.array([2, 0, 2, 2, 0])
    items = np.array([7, 3, 1, 7, 3])
    indptr, indices = csr_by_user(users, items, 4)
    # user 0: {3}; user 1: {}; user 2: {1, 7} (7 twice); user 3: {}
    assert indptr.tolist() == [0, 1, 1, 3, 3]
    assert indices.tolist() == [3, 1, 7]


def test_csr_by_user_rejects_bad_input():
    with pytest.raises(ValueError, match="expected the same number"):
        csr_by_user(np.array([0, 1]), np.array([0]), 2)
    with pytest.raises(ValueError, match=r"expected 0\.\.1"):
        csr_by_user(np.array([0, 2]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="expected integers"):
        csr_by_user(np.array([0.0]), np.array([1]), 2)


def test_csr_take_selects_rows_in_order():
    indptr, indices = _csr([[1, 2], [], [5]])
    sub_indptr, sub_indices = csr_take(indptr, indices, np.array([2, 0, 2]))
    assert sub_indptr.tolist() == [0, 1, 3, 4]
    assert sub_indices.tolist() == [5, 1, 2, 5]


def test_popularity_scores_counts_train_ratings():
    scores = popularity_scores(np.array([0, 2, 2, 2, 1]), 4)
    assert scores.dtype == np.float64
    assert scores.tolist() == [1.0, 1.0, 3.0, 0.0]


def test_relevant_pairs_threshold():
    users, items, ratings = np.array([0, 0, 1]), np.array([4, 5, 6]), np.array([3.5, 4.0, 5.0])
    kept = relevant_pairs(users, items, ratings)
    assert [a.tolist() for a in kept] == [[0, 0, 1], [4, 5, 6]]
    kept = relevant_pairs(users, items, ratings, threshold=4.0)
    assert [a.tolist() for a in kept] == [[0, 1], [5, 6]]
    with pytest.raises(ValueError, match="expected the same number"):
        relevant_pairs(users, items, ratings[:2])


# ---- ranking_metrics: known answers -----------------------------------------------------------

def test_one_hit_at_position_3_of_10():
    # relevant {5, 99}; 5 is at position 3 of 10.
    # precision 1/10; recall 1/2; DCG 1/log2(4) = 0.5, ideal DCG 1 + 1/log2(3);
    # AP sum = (1 hit so far)/3 -> map = (1/3)/2, map_at_k = (1/3)/min(2, 10).
    report = _one([10, 11, 5, 12, 13, 14, 15, 16, 17, 18], [5, 99], 10)
    _assert_metrics(report, precision=0.1, recall=0.5,
                    ndcg=(1 / math.log2(4)) / (1 + 1 / math.log2(3)),
                    map=(1 / 3) / 2, map_at_k=(1 / 3) / 2)
    assert report["users"] == 1 and report["users_without_relevant"] == 0


def test_perfect_ranking_with_as_many_relevant_as_k():
    # every position a hit: precision 3/3, recall 3/3, DCG = ideal DCG, AP sum 1/1 + 2/2 + 3/3
    report = _one([1, 2, 3], [1, 2, 3], 3)
    _assert_metrics(report, precision=1, recall=1, ndcg=1, map=1, map_at_k=1)


def test_perfect_ranking_with_more_relevant_than_k():
    # 4 relevant, the 3 listed all hit: recall 3/4, map = 3/4 (AP sum 3 over 4 relevant),
    # map_at_k = 3/min(4, 3) = 1, NDCG 1 (the ideal also has only 3 positions)
    report = _one([1, 2, 3], [1, 2, 3, 4], 3)
    _assert_metrics(report, precision=1, recall=0.75, ndcg=1, map=0.75, map_at_k=1)


def test_perfect_ranking_with_fewer_relevant_than_k():
    # 2 relevant at positions 1, 2 of k=4: precision 2/4, recall 1, ideal DCG over 2 positions
    # equals the DCG, AP sum 1/1 + 2/2 = 2 over 2 relevant
    report = _one([7, 8, 1, 2], [7, 8], 4)
    _assert_metrics(report, precision=0.5, recall=1, ndcg=1, map=1, map_at_k=1)


def test_fewer_candidates_than_k_still_divides_by_k():
    # list [4, 2] padded to k=4, relevant {2}: one hit at position 2 -> precision 1/4, recall 1,
    # NDCG (1/log2(3)) / 1, AP sum 1/2 over 1 relevant
    report = _one([4, 2, -1, -1], [2], 4)
    _assert_metrics(report, precision=0.25, recall=1, ndcg=1 / math.log2(3), map=0.5,
                    map_at_k=0.5)


def test_user_without_candidates_scores_zero_but_counts():
    # user 0: no candidate left (all -1), 1 relevant -> all metrics 0;
    # user 1: hit at position 1 of k=2 with 1 relevant -> precision 1/2, the rest 1.
    rec = np.array([[-1, -1], [6, 0]])
    report = ranking_metrics(rec, *_csr([[3], [6]]), 2)
    _assert_metrics(report, precision=0.25, recall=0.5, ndcg=0.5, map=0.5, map_at_k=0.5)
    assert report["users"] == 2


def test_user_without_relevant_is_left_out_and_counted():
    # user 0 has no relevant movie; user 1: hit at position 2 of k=2 with 1 relevant ->
    # precision 1/2, recall 1, NDCG 1/log2(3), AP sum 1/2
    rec = np.array([[1, 2], [3, 4]])
    report = ranking_metrics(rec, *_csr([[], [4]]), 2)
    _assert_metrics(report, precision=0.5, recall=1, ndcg=1 / math.log2(3), map=0.5,
                    map_at_k=0.5)
    assert report["users"] == 1 and report["users_without_relevant"] == 1


def test_relevant_movies_absent_from_train_count_in_the_denominator():
    # relevant {5, 100}, 100 is not a train movie so it is never listed; 5 hits at position 1
    # of k=2: precision 1/2, recall 1/2, NDCG 1 / (1 + 1/log2(3)), AP sum 1/1 over 2 relevant,
    # map_at_k over min(2, 2) = 2
    report = _one([5, 6], [5, 100], 2)
    _assert_metrics(report, precision=0.5, recall=0.5, ndcg=1 / (1 + 1 / math.log2(3)),
                    map=0.5, map_at_k=0.5)


def test_only_the_first_k_columns_are_read():
    # the hit is in column 3, beyond k=2
    report = _one([1, 2, 3], [3], 2)
    _assert_metrics(report, precision=0, recall=0, ndcg=0, map=0, map_at_k=0)


@pytest.mark.parametrize(("recommended", "relevant", "k", "match"), [
    ([[1, 2]], [[1]], 0, "k=0"),
    ([[1, 2]], [[1]], 3, "2 columns"),
    ([[1, 2]], [[1], [2]], 2, "expected 1"),
    ([[1, 1]], [[1]], 2, "twice in one user's list"),
    ([[1, -2]], [[1]], 2, "-2"),
    ([[1, 2]], [[]], 2, "none with a relevant movie"),
])
def test_ranking_metrics_rejects_bad_input(recommended, relevant, k, match):
    with pytest.raises(ValueError, match=match):
        ranking_metrics(np.array(recommended), *_csr(relevant), k)


# ---- top_k_global_order -----------------------------------------------------------------------

# movies 0..5 with scores; movie 5 has no train rating. Global order over train movies:
# 4 (9), 1 (5), 2 (5: tie with 1, higher index after), 0 (3), 3 (1).
SCORES = np.array([3.0, 5.0, 5.0, 1.0, 9.0, 100.0])
TRAIN = [[4], [], [0, 1, 2, 3, 4], [1, 3]]


def test_top_k_global_order_excludes_train_and_breaks_ties_by_index():
    indptr, indices = _csr(TRAIN)
    top = top_k_global_order(SCORES, indptr, indices, np.arange(4), 3)
    assert top.tolist() == [[1, 2, 0],    # 4 is user 0's
                            [4, 1, 2],    # nothing excluded
                            [-1, -1, -1],  # every train movie is user 2's
                            [4, 2, 0]]    # 1 and 3 are user 3's
    assert 5 not in top  # no train rating, however high its score


def test_top_k_global_order_pads_and_keeps_user_order():
    indptr, indices = _csr(TRAIN)
    top = top_k_global_order(SCORES, indptr, indices, np.array([3, 0, 3]), 5)
    # user 3 keeps 4, 2, 0 of the 5 train movies; user 0 keeps 1, 2, 0, 3
    assert top.tolist() == [[4, 2, 0, -1, -1], [1, 2, 0, 3, -1], [4, 2, 0, -1, -1]]


def test_top_k_global_order_candidates_mask_and_minus_inf():
    indptr, indices = _csr(TRAIN)
    mask = np.array([True, False, True, True, True, True])  # drop 1, allow 5 (caller's choice)
    scores = SCORES.copy()
    scores[3] = -np.inf  # never recommended
    top = top_k_global_order(scores, indptr, indices, np.array([1]), 6, candidates=mask)
    # order over {0, 2, 4, 5}: 5 (100), 4 (9), 2 (5), 0 (3)
    assert top.tolist() == [[5, 4, 2, 0, -1, -1]]


def test_top_k_global_order_rejects_bad_input():
    indptr, indices = _csr(TRAIN)
    with pytest.raises(ValueError, match="k=0"):
        top_k_global_order(SCORES, indptr, indices, np.arange(4), 0)
    with pytest.raises(ValueError, match=r"expected 0\.\.3"):
        top_k_global_order(SCORES, indptr, indices, np.array([4]), 2)
    with pytest.raises(ValueError, match="boolean mask"):
        top_k_global_order(SCORES, indptr, indices, np.arange(4), 2, candidates=np.ones(3, bool))
    with pytest.raises(ValueError, match="NaN"):
        top_k_global_order(np.full(6, np.nan), indptr, indices, np.arange(4), 2)
    with pytest.raises(ValueError, match=r"expected movies 0\.\.3"):
        top_k_global_order(SCORES[:4], indptr, indices, np.arange(4), 2)


# ---- randomized cross-check against a plain reference -----------------------------------------

def _reference_top_k(scores, train_sets, candidates, users, k):
    lists = []
    for u in users:
        pool = sorted((-scores[i], i) for i in candidates if i not in train_sets[u])
        top = [i for _, i in pool[:k]]
        lists.append(top + [-1] * (k - len(top)))
    return np.array(lists, dtype=np.int64).reshape(len(users), k)


def _reference_metrics(recommended, relevant_sets, k):
    sums = dict.fromkeys(METRICS, 0.0)
    users = left_out = 0
    for row, relevant in zip(recommended, relevant_sets, strict=True):
        if not relevant:
            left_out += 1
            continue
        users += 1
        hits, dcg, ap = 0, 0.0, 0.0
        for p, item in enumerate(row[:k], start=1):
            if item != -1 and item in relevant:
                hits += 1
                dcg += 1 / math.log2(p + 1)
                ap += hits / p
        idcg = sum(1 / math.log2(p + 1) for p in range(1, min(len(relevant), k) + 1))
        sums["precision"] += hits / k
        sums["recall"] += hits / len(relevant)
        sums["ndcg"] += dcg / idcg
        sums["map"] += ap / len(relevant)
        sums["map_at_k"] += ap / min(len(relevant), k)
    report = {name: total / users for name, total in sums.items()}
    return report | {"users": users, "users_without_relevant": left_out}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_randomized_against_reference(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items = 80, 50
    # long-tailed popularity, many tied counts; the last items are rarely or never in train
    weights = 1.0 / np.arange(1, n_items + 1) ** 1.2
    pairs = {(int(u), int(i)) for u, i in zip(rng.integers(0, n_users, 1500),
                                              rng.choice(n_items, 1500, p=weights / weights.sum()),
                                              strict=True)}
    pairs = sorted(pairs)
    is_test = rng.random(len(pairs)) < 0.3
    train = [p for p, t in zip(pairs, is_test, strict=True) if not t]
    test = [p for p, t in zip(pairs, is_test, strict=True) if t]
    ratings = rng.choice(np.arange(1, 11) * 0.5, len(test))
    train_sets = [set() for _ in range(n_users)]
    for u, i in train:
        train_sets[u].add(i)
    # a user who rated every train movie has no candidate left
    train_movies = sorted({i for _, i in train})
    train_sets[0] = set(train_movies)
    train_u = np.array([u for u in range(n_users) for _ in train_sets[u]])
    train_i = np.array([i for u in range(n_users) for i in sorted(train_sets[u])])
    indptr, indices = csr_by_user(train_u, train_i, n_users)
    assert [set(indices[indptr[u]:indptr[u + 1]].tolist()) for u in range(n_users)] == train_sets

    scores = popularity_scores(train_i, n_items)
    users = np.append(rng.permutation(n_users)[:59], 0)  # 0 may repeat: allowed
    for k in (1, 5, 10, 60):
        top = top_k_global_order(scores, indptr, indices, users, k)
        assert np.array_equal(top, _reference_top_k(scores, train_sets, train_movies, users, k))

        for threshold in (0.0, 4.0):
            test_u, test_i = relevant_pairs(np.array([u for u, _ in test]),
                                            np.array([i for _, i in test]), ratings, threshold)
            relevant_sets = [set() for _ in range(n_users)]
            for u, i in zip(test_u.tolist(), test_i.tolist(), strict=True):
                relevant_sets[u].add(i)
            rel = csr_take(*csr_by_user(test_u, test_i, n_users), users)
            got = ranking_metrics(top, *rel, k)
            want = _reference_metrics(top.tolist(), [relevant_sets[u] for u in users], k)
            assert got == pytest.approx(want)

            # random lists too, so that hits also fall deep in the list and around padding
            rand = np.full((users.size, k + 2), -1)
            for row in range(users.size):
                length = min(int(rng.integers(0, k + 3)), n_items)
                rand[row, :length] = rng.permutation(n_items)[:length]
            got = ranking_metrics(rand, *rel, k)
            want = _reference_metrics(rand.tolist(), [relevant_sets[u] for u in users], k)
            assert got == pytest.approx(want)
