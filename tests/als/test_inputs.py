"""What the model accepts: ids and interaction matrices, refused with one-line ValueErrors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.als import ALS

from .reference import random_matrix


@pytest.mark.parametrize("bad", [[1.7], [np.nan], [True], ["1"], np.array([0.5, 2.0]), [1e20]])
def test_non_integer_ids_are_refused_not_truncated(bad):
    dense = random_matrix(seed=3)
    model = ALS(n_factors=3, iterations=1).fit(sp.csr_matrix(dense))
    calls = [
        lambda: model.recommend(bad, filter_seen=False),
        lambda: model.recommend([0], filter_seen=False, items=bad),
        lambda: model.recommend([0], filter_seen=False, filter_items=bad),
        lambda: model.predict(bad, [0] * len(bad)),
        lambda: model.predict([0] * len(bad), bad),
        lambda: model.similar_items(bad),
        lambda: model.user_embeddings(bad),
        lambda: model.partial_fit_users(bad, sp.csr_matrix(dense[: len(bad)])),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="ids must be integer internal indices") as info:
            call()
        assert "\n" not in str(info.value)


def test_whole_float_ids_still_work():
    model = ALS(n_factors=3, iterations=1).fit(sp.csr_matrix(random_matrix(seed=3)))
    np.testing.assert_array_equal(
        model.predict(np.array([1.0, 2.0]), np.array([3.0, 4.0])), model.predict([1, 2], [3, 4])
    )


def test_wrong_containers_are_value_errors_naming_the_argument():
    dense = random_matrix(seed=13)
    model = ALS(n_factors=3, iterations=1).fit(sp.csr_matrix(dense))
    calls = {
        "user_items": [
            lambda: ALS(n_factors=3).fit(dense),
            lambda: ALS(n_factors=3).fit(dense.tolist()),
            lambda: model.recommend([0], dense[[0]]),
            lambda: model.recommend([0], sp.coo_matrix(dense[[0]])),
            lambda: model.recommend([0], dense[[0]], filter_seen=False, recalculate_user=True),
            lambda: model.fold_in(dense[:2]),
            lambda: model.partial_fit_users([0], sp.csc_matrix(dense[:1])),
        ],
        "item_users": [lambda: model.partial_fit_items([0], dense[:, :1].T)],
    }
    for name, failing in calls.items():
        for call in failing:
            with pytest.raises(ValueError, match=f"{name} must be a scipy.sparse CSR") as info:
                call()
            assert "\n" not in str(info.value)
    for bad in ({0: 1}, None, [[0, 1], [2]]):
        with pytest.raises(ValueError):
            model.similar_users(bad)


def test_out_of_range_ids_are_index_errors_as_in_implicit():
    model = ALS(n_factors=3, iterations=1).fit(sp.csr_matrix(random_matrix(seed=13)))
    for call in (
        lambda: model.similar_users([model.n_users]),
        lambda: model.similar_items([-1]),
        lambda: model.recommend([0], filter_seen=False, items=[model.n_items]),
        lambda: model.similar_users([0], filter_users=[10**6]),
    ):
        with pytest.raises(IndexError, match=r"ids must be internal indices in \[0, "):
            call()


@pytest.mark.parametrize("k", ["5", 2.5, 0, None, True, float("nan"), float("inf")])
def test_bad_list_lengths_are_value_errors(k):
    model = ALS(n_factors=3, iterations=1).fit(sp.csr_matrix(random_matrix(seed=13)))
    for call in (
        lambda: model.recommend([0], k=k, filter_seen=False),
        lambda: model.similar_items([0], k=k),
        lambda: model.similar_users([0], k=k),
    ):
        with pytest.raises(ValueError, match="k must be a whole number >= 1"):
            call()
    assert model.similar_items([0], k=2.0)[0].shape == (1, 2)
