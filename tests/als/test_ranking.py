"""The scoring APIs people know from `implicit`: recommend, similar_items, similar_users."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.als import ALS

from .reference import brute_force_top, half_step, random_matrix


@pytest.fixture(scope="module")
def fitted() -> tuple[ALS, np.ndarray]:
    dense = random_matrix(seed=21)
    model = ALS(n_factors=5, iterations=2, device="cpu").fit(sp.csr_matrix(dense))
    return model, dense


def _cosine(table: np.ndarray, rows: list[int]) -> np.ndarray:
    norms = np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)  # as torch's
    unit = table / norms  # an empty row's zero vector has cosine 0 with everything
    return unit[rows] @ unit.T


def test_recommend_matches_brute_force_with_filters():
    dense = random_matrix(seed=14)
    matrix = sp.csr_matrix(dense)
    model = ALS(n_factors=6, iterations=3, weighting="hkv", use_bias=True).fit(matrix)
    users = np.array([0, 5, 9, 3])
    scores = (
        model.user_factors.double().numpy()[users] @ model.item_factors.double().numpy().T
        + model.item_bias.double().numpy()[None, :]
        + model.user_bias.double().numpy()[users, None]
    )
    np.testing.assert_allclose(
        model.predict(np.repeat(users, model.n_items), np.tile(np.arange(model.n_items), 4)),
        scores.ravel(),
        rtol=1e-5,
        atol=1e-5,
    )
    banned = np.array([1, 2, 30])
    masked = scores.copy()
    masked[dense[users] != 0] = -np.inf
    masked[:, banned] = -np.inf
    ids, got = model.recommend(users, matrix[users], k=10, filter_items=banned)
    np.testing.assert_array_equal(ids, brute_force_top(masked, 10))
    np.testing.assert_allclose(got, np.take_along_axis(scores, ids, 1), rtol=1e-5, atol=1e-5)
    subset = np.arange(0, 40, 3)
    ids, _ = model.recommend(users, k=5, filter_seen=False, items=subset)
    only = np.full_like(scores, -np.inf)
    only[:, subset] = scores[:, subset]
    np.testing.assert_array_equal(ids, brute_force_top(only, 5))
    with pytest.raises(ValueError, match="one row per user id"):
        model.recommend(users, matrix, k=5)


def test_similar_items_are_cosine_neighbours_without_the_item_itself():
    model = ALS(n_factors=5, iterations=2).fit(sp.csr_matrix(random_matrix(seed=15)))
    y = model.item_factors.double().numpy()
    unit = y / np.linalg.norm(y, axis=1, keepdims=True)
    cosine = unit[[4, 8]] @ unit.T
    cosine[0, 4] = cosine[1, 8] = -np.inf
    ids, scores = model.similar_items([4, 8], k=6)
    np.testing.assert_array_equal(ids, brute_force_top(cosine, 6))
    np.testing.assert_allclose(scores, np.take_along_axis(cosine, ids, 1), rtol=1e-5)


def test_similar_users_are_cosine_neighbours_of_the_user_factors(fitted):
    model, _ = fitted
    cosine = _cosine(model.user_factors.double().numpy(), [2, 7])
    with_self = cosine.copy()
    cosine[0, 2] = cosine[1, 7] = -np.inf
    ids, scores = model.similar_users([2, 7], k=6)
    np.testing.assert_array_equal(ids, brute_force_top(cosine, 6))
    np.testing.assert_allclose(scores, np.take_along_axis(cosine, ids, 1), rtol=1e-5)
    ids, scores = model.similar_users([2, 7], k=6, exclude_self=False)
    np.testing.assert_array_equal(ids[:, 0], [2, 7])  # itself first, as implicit returns it
    np.testing.assert_array_equal(ids, brute_force_top(with_self, 6))
    np.testing.assert_allclose(scores[:, 0], 1.0, rtol=1e-5)


@pytest.mark.parametrize("side", ["item", "user"])
def test_candidate_subsets_and_filters_restrict_the_neighbours(fitted, side):
    model, _ = fitted
    similar = model.similar_items if side == "item" else model.similar_users
    table = getattr(model, f"{side}_factors").double().numpy()
    cosine = _cosine(table, [4])
    subset, banned = np.array([1, 4, 6, 9, 12, 15]), np.array([6, 30])
    only = np.full_like(cosine, -np.inf)
    only[:, subset] = cosine[:, subset]
    only[:, 4] = -np.inf  # itself
    only[:, banned] = -np.inf
    ids, scores = similar([4], 6, banned, subset)  # positional: (ids, k, filter, subset)
    np.testing.assert_array_equal(ids[:, :4], brute_force_top(only, 4))  # 1, 9, 12, 15
    np.testing.assert_array_equal(ids[:, 4:], -1)  # fewer candidates than k: -1 / -inf slots
    assert np.isneginf(scores[:, 4:]).all()


def test_recommend_pads_when_the_subset_is_smaller_than_k(fitted):
    model, dense = fitted
    seen = np.flatnonzero(dense[5])
    unseen = np.setdiff1d(np.arange(model.n_items), seen)
    subset = np.r_[seen[:2], unseen[:3]]
    ids, scores = model.recommend(5, sp.csr_matrix(dense[[5]]), k=6, items=subset)
    assert ids.shape == (6,)  # k slots, not clipped to the subset (implicit clips there)
    assert set(ids[:3]) == set(unseen[:3])  # the seen ones are filtered within the subset
    np.testing.assert_array_equal(ids[3:], -1)
    assert np.isfinite(scores[:3]).all() and np.isneginf(scores[3:]).all()


def test_a_scalar_id_gives_one_row_like_implicit(fitted):
    model, dense = fitted
    ids, scores = model.recommend(5, sp.csr_matrix(dense[[5]]), k=4)
    batch_ids, batch_scores = model.recommend([5], sp.csr_matrix(dense[[5]]), k=4)
    assert ids.shape == scores.shape == (4,)
    np.testing.assert_array_equal(ids, batch_ids[0])
    np.testing.assert_array_equal(scores, batch_scores[0])
    for similar in (model.similar_items, model.similar_users):
        ids, scores = similar(np.int64(3), k=4)
        assert ids.shape == scores.shape == (4,)
        np.testing.assert_array_equal(ids, similar([3], k=4)[0][0])


def test_recalculate_user_ranks_from_the_rows_not_the_stored_vectors(fitted):
    model, dense = fitted
    rows = sp.csr_matrix(dense[[5, 8]])
    ids, scores = model.recommend([5, 8], rows, k=7, recalculate_user=True)
    factors, bias = model.fold_in_factors(rows)
    expected = (
        factors.double().numpy() @ model.item_factors.double().numpy().T
        + bias.double().numpy()[:, None]
        + model.item_bias.double().numpy()[None, :]
    )
    expected[dense[[5, 8]] != 0] = -np.inf
    np.testing.assert_array_equal(ids, brute_force_top(expected, 7))
    np.testing.assert_allclose(scores, np.take_along_axis(expected, ids, 1), rtol=1e-5)
    # new users: the ids only label the rows, so ids past the trained users are fine
    new_ids, new_scores = model.recommend([10**6, 10**6 + 1], rows, k=7, recalculate_user=True)
    np.testing.assert_array_equal(new_ids, ids)
    np.testing.assert_array_equal(new_scores, scores)
    with pytest.raises(ValueError, match="recalculate_user=True needs user_items"):
        model.recommend([5], filter_seen=False, recalculate_user=True)


def test_recalculate_user_matches_the_stored_vectors_after_a_user_half_step():
    dense = random_matrix(seed=22)
    matrix = sp.csr_matrix(dense)
    model = ALS(n_factors=4, iterations=2, device="cpu").fit(matrix)
    half_step(model, "users", matrix)  # the stored users are then exact solutions
    users = np.array([0, 9, 17])
    ids, scores = model.recommend(users, matrix[users], k=8)
    again_ids, again_scores = model.recommend(users, matrix[users], k=8, recalculate_user=True)
    np.testing.assert_array_equal(again_ids, ids)
    np.testing.assert_allclose(again_scores, scores, rtol=1e-4, atol=1e-5)


def test_the_same_answers_as_implicit_on_the_same_factors(fitted):
    implicit_als = pytest.importorskip("implicit.cpu.als")
    dense = random_matrix(seed=23)
    matrix = sp.csr_matrix(dense)
    model = ALS(n_factors=5, iterations=2, use_bias=False, device="cpu").fit(matrix)
    theirs = implicit_als.AlternatingLeastSquares(factors=5)
    theirs.user_factors = model.user_factors.numpy().copy()
    theirs.item_factors = model.item_factors.numpy().copy()
    users, subset = np.array([0, 4, 11]), np.arange(0, 40, 2)
    calls = [
        (
            model.recommend(users, matrix[users], 6, filter_items=[1, 2]),
            theirs.recommend(users, matrix[users], 6, filter_items=np.array([1, 2])),
        ),
        (
            model.recommend(users, matrix[users], 6, items=subset),
            theirs.recommend(users, matrix[users], 6, items=subset),
        ),
        (
            model.similar_items([3, 8], 5, exclude_self=False),
            theirs.similar_items(np.array([3, 8]), 5),
        ),
        (
            model.similar_users(7, 5, users=subset, exclude_self=False),
            theirs.similar_users(7, 5, users=subset),
        ),
    ]
    for (ours_ids, ours_scores), (their_ids, their_scores) in calls:
        np.testing.assert_array_equal(ours_ids, their_ids)
        np.testing.assert_allclose(ours_scores, their_scores, rtol=1e-4, atol=1e-5)
