"""Splits: partition properties, per-user counts, time order, held-out users, the sparse rules."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.data.errors import DataError
from recsys.data.interactions import Interactions
from recsys.data.splits import (
    Split,
    leave_k_out,
    make_split,
    random_holdout,
    strong_generalization,
    temporal_split,
    validation_split,
)


def random_data(seed: int = 0, n_users: int = 60, n_items: int = 40, timestamps: bool = True):
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < 0.2
    dense[0] = False
    dense[0, 3] = True  # a user with a single interaction
    u, i = np.nonzero(dense)
    ts = rng.permutation(u.size) * 10 + 1000 if timestamps else None
    return Interactions.from_columns(u, i, rng.integers(1, 6, u.size), ts)


def as_set(x: Interactions) -> set[tuple[int, int]]:
    coo = x.matrix.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist(), strict=True))


def check_shared_space(split: Split, data: Interactions) -> None:
    for part in (split.train, split.test, split.fold_in):
        if part is None:
            continue
        assert part.shape == data.shape
        assert part.user_ids is data.user_ids and part.item_ids is data.item_ids


def test_random_holdout_partitions_each_user_by_the_stated_rule():
    data = random_data()
    split = random_holdout(data, 0.25, seed=3, drop_cold_items=False)
    check_shared_space(split, data)
    tr, te = as_set(split.train), as_set(split.test)
    assert tr.isdisjoint(te) and tr | te == as_set(data)
    deg = data.user_degrees()
    want = np.clip(np.floor(0.25 * deg + 0.5), 1, np.maximum(deg - 1, 1))
    want[deg < 2] = 0
    np.testing.assert_array_equal(split.test.user_degrees(), want)
    assert split.report["users_too_few"] == 1 and split.report["interactions_too_few"] == 1
    assert split.report["test_interactions"] == split.test.nnz
    # values and timestamps travel with their interactions
    np.testing.assert_array_equal(
        split.train.matrix.toarray() + split.test.matrix.toarray(), data.matrix.toarray()
    )
    np.testing.assert_array_equal(
        split.train.timestamps.toarray() + split.test.timestamps.toarray(),
        data.timestamps.toarray(),
    )


def test_splits_are_deterministic_by_seed():
    data = random_data()
    a, b = random_holdout(data, seed=1), random_holdout(data, seed=1)
    c = random_holdout(data, seed=2)
    assert as_set(a.test) == as_set(b.test) and as_set(a.test) != as_set(c.test)
    s1 = strong_generalization(data, test_users=10, seed=4)
    s2 = strong_generalization(data, test_users=10, seed=4)
    assert as_set(s1.test) == as_set(s2.test) and as_set(s1.fold_in) == as_set(s2.fold_in)


def test_leave_k_out_takes_the_latest_by_timestamp():
    data = random_data()
    split = leave_k_out(data, k=2, seed=0, drop_cold_items=False)
    dense_t = data.timestamps.toarray()
    test = split.test.matrix.toarray() > 0
    for u in range(data.n_users):
        items = data.matrix.indices[data.matrix.indptr[u] : data.matrix.indptr[u + 1]]
        if items.size < 3:
            assert not test[u].any()
            continue
        latest = items[np.argsort(-dense_t[u, items])[:2]]
        assert set(np.flatnonzero(test[u]).tolist()) == set(latest.tolist())
    assert split.report["by_timestamp"] is True
    assert split.report["users_too_few"] == int((data.user_degrees() < 3).sum())


def test_leave_k_out_without_timestamps_is_random_k():
    data = random_data(timestamps=False)
    split = leave_k_out(data, k=1, seed=0, drop_cold_items=False)
    deg = data.user_degrees()
    np.testing.assert_array_equal(split.test.user_degrees(), (deg >= 2).astype(int))
    assert split.report["by_timestamp"] is False
    other = leave_k_out(data, k=1, seed=1, drop_cold_items=False)
    assert as_set(split.test) != as_set(other.test)


def test_temporal_split_cuts_at_one_time():
    data = random_data()
    split = temporal_split(data, test_fraction=0.3, drop_cold_users=False, drop_cold_items=False)
    cut = split.report["cut"]
    assert split.train.timestamps.data.max() < cut <= split.test.timestamps.data.min()
    assert split.train.nnz + split.test.nnz == data.nnz
    assert split.test.nnz == pytest.approx(0.3 * data.nnz, abs=2)
    at = temporal_split(data, cut=cut, drop_cold_users=False, drop_cold_items=False)
    assert as_set(at.test) == as_set(split.test)


def test_temporal_split_drops_test_interactions_of_users_without_history():
    # user 1 only acts after the cut; item 9 only appears after the cut
    data = Interactions.from_columns(
        [0, 0, 0, 1, 2, 2, 2], [1, 2, 3, 1, 1, 9, 3], None, [1, 2, 10, 11, 3, 12, 4]
    )
    split = temporal_split(data, cut=10)
    assert split.report["cold_user_interactions_dropped"] == 1
    assert split.report["cold_users_dropped"] == 1
    assert split.report["cold_item_interactions_dropped"] == 1
    assert as_set(split.test) == {(0, 2)}  # user 0, item 3 (internal indices)
    assert split.train.nnz == 4


def test_temporal_split_needs_timestamps():
    with pytest.raises(DataError, match="needs timestamps"):
        temporal_split(random_data(timestamps=False))


def test_strong_generalization_holds_out_whole_users():
    data = random_data()
    split = strong_generalization(data, test_users=12, eval_fraction=0.25, seed=0)
    check_shared_space(split, data)
    held = np.flatnonzero(split.test.user_degrees() > 0)
    assert held.size == 12 == split.report["held_out_users"]
    assert (split.train.user_degrees()[held] == 0).all()
    assert (split.fold_in.user_degrees()[held] >= 1).all()
    others = np.setdiff1d(np.arange(data.n_users), held)
    assert (split.fold_in.user_degrees()[others] == 0).all()
    np.testing.assert_array_equal(split.train.user_degrees()[others], data.user_degrees()[others])
    # fold-in and eval parts partition each held-out user's (warm-item) history
    te, fi = as_set(split.test), as_set(split.fold_in)
    assert te.isdisjoint(fi)
    warm = split.train.item_degrees() > 0
    expected = {(u, i) for (u, i) in as_set(data) if u in set(held.tolist()) and warm[i]}
    assert te | fi == expected
    assert (data.user_degrees()[held] >= 2).all()


def test_strong_generalization_fraction_and_errors():
    data = random_data()
    split = strong_generalization(data, test_users=0.2, seed=1)
    eligible = int((data.user_degrees() >= 2).sum())
    assert split.report["held_out_users"] == round(0.2 * eligible)
    with pytest.raises(DataError, match="eligible users"):
        strong_generalization(data, test_users=data.n_users)


def test_cold_items_are_dropped_from_test_and_counted():
    # leave-1-out by time: user 0's latest item 5 is nobody else's, so it has no train interaction
    data = Interactions.from_columns(
        [0, 0, 1, 1, 2, 2], [1, 5, 1, 2, 1, 2], None, [1, 2, 2, 1, 2, 1]
    )
    split = leave_k_out(data, k=1)
    assert split.report["cold_item_interactions_dropped"] == 1
    assert as_set(split.test) == {(1, 0), (2, 0)}  # item 1 (internal 0) for users 1 and 2
    kept = leave_k_out(data, k=1, drop_cold_items=False)
    assert as_set(kept.test) == {(0, 2), (1, 0), (2, 0)}
    assert kept.report["cold_item_interactions_dropped"] == 0
    assert kept.report["cold_item_interactions_kept"] == 1


def test_empty_test_set_is_a_clear_error():
    data = Interactions.from_columns([0, 1, 2], [0, 1, 2], source="few.csv")
    with pytest.raises(DataError, match=r"few\.csv.*empty test set.*min_interactions"):
        random_holdout(data)
    with pytest.raises(DataError, match="empty data set"):
        random_holdout(data.select_entries(np.zeros(3, bool)))


def test_validation_split_carves_from_train_only():
    data = random_data()
    split = random_holdout(data, 0.2, seed=0)
    val = validation_split(split, "random", test_fraction=0.2, seed=1)
    assert as_set(val.train) | as_set(val.test) <= as_set(split.train)
    assert as_set(val.test).isdisjoint(as_set(split.test))
    assert val.report["validation"] is True and val.train.shape == data.shape
    lk = make_split(split.train, "leave_k_out", k=1)
    assert lk.report["method"] == "leave_k_out"
    with pytest.raises(ValueError, match="unknown split method"):
        make_split(data, "bogus")


def test_split_rejects_parts_in_different_id_spaces():
    a = Interactions.from_columns([0, 1], [0, 1])
    b = Interactions.from_columns([0, 2], [0, 1])
    with pytest.raises(DataError, match="id maps"):
        Split(a, b)
