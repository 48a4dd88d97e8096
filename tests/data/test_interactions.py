"""Interactions: construction, duplicate rules, id maps, statistics, selection, transforms."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.data.errors import DataError
from recsys.data.interactions import Interactions, require_nonnegative, to_implicit


def small() -> Interactions:
    # users 30, 10, 20 ; items "b", "a", "c"
    return Interactions.from_columns(
        [30, 10, 30, 20, 10, 30],
        ["b", "a", "a", "c", "c", "b"],
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        [100, 200, 300, 400, 500, 50],
    )


def test_from_columns_builds_sorted_id_maps_and_sums_duplicates():
    x = small()
    assert x.user_ids.tolist() == [10, 20, 30]
    assert x.item_ids.tolist() == ["a", "b", "c"]
    assert x.shape == (3, 3) and x.nnz == 5
    expected = np.array([[2, 0, 5], [0, 0, 4], [3, 1 + 6, 0]], dtype=np.float32)
    np.testing.assert_array_equal(x.matrix.toarray(), expected)
    assert x.matrix.dtype == np.float32 and x.matrix.has_canonical_format
    # (30, "b") appears at t=100 and t=50: the latest timestamp is kept
    ts = x.timestamps.toarray()
    assert ts[2, 1] == 100 and ts[0, 0] == 200 and ts[1, 2] == 400
    assert x.timestamps.dtype == np.int64


@pytest.mark.parametrize(
    ("rule", "value"), [("sum", 10.0), ("max", 6.0), ("first", 1.0), ("last", 3.0)]
)
def test_duplicate_rules(rule, value):
    x = Interactions.from_columns(
        [1, 1, 2, 1, 1],
        [7, 7, 7, 7, 8],
        [1.0, 6.0, 9.0, 3.0, 2.0],
        [5, 1, 2, 3, 4],
        duplicates=rule,
    )
    assert x.matrix[0, 0] == value
    assert x.matrix[0, 1] == 2.0 and x.matrix[1, 0] == 9.0
    assert x.timestamps[0, 0] == 5  # latest whatever the rule


def test_from_columns_matches_scipy_sum_on_random_data():
    rng = np.random.default_rng(3)
    u = rng.integers(0, 50, 3000)
    i = rng.integers(0, 40, 3000) * 7 + 1000  # sparse external ids
    v = rng.integers(1, 6, 3000).astype(float)
    x = Interactions.from_columns(u, i, v)
    ref = sp.coo_matrix((v, (u, i - 1000)), shape=(50, 40 * 7)).tocsr()
    ref = ref[:, np.unique(i - 1000)][np.unique(u)]
    np.testing.assert_allclose(x.matrix.toarray(), ref.toarray())
    assert x.item_ids.tolist() == np.unique(i).tolist()


def test_given_id_maps_fix_order_and_shape():
    x = Interactions.from_columns(
        ["u2", "u1"], [5, 3], user_ids=["u3", "u2", "u1"], item_ids=[5, 4, 3]
    )
    assert x.shape == (3, 3)
    assert x.matrix[1, 0] == 1.0 and x.matrix[2, 2] == 1.0
    assert x.user_degrees().tolist() == [0, 1, 1]
    with pytest.raises(DataError, match="not in the given user_ids"):
        Interactions.from_columns(["u9"], [5], user_ids=["u1"], item_ids=[5])


def test_titles_from_mapping_align_with_items():
    x = Interactions.from_columns([1, 1], [20, 10], item_titles={10: "Ten", 30: "unused"})
    assert x.item_titles.tolist() == ["Ten", ""]


def test_user_and_item_index_round_trip_and_unknown_ids():
    x = small()
    assert x.user_index([30, 10]).tolist() == [2, 0]
    assert x.item_index(["c"]).tolist() == [2]
    assert x.user_ids[x.user_index(20)].tolist() == [20]
    with pytest.raises(KeyError, match="99"):
        x.user_index([10, 99])
    with pytest.raises(KeyError):
        x.item_index([1])  # int query against str ids


def test_stats_are_plain_python_scalars_and_correct():
    x = small()
    st = x.stats()
    for v in st.values():
        assert type(v) in (int, float, bool)
    assert st["n_users"] == 3 and st["nnz"] == 5
    assert st["density"] == pytest.approx(5 / 9)
    assert st["user_degree_max"] == 2 and st["user_degree_min"] == 1
    assert st["item_degree_mean"] == pytest.approx(5 / 3)
    assert st["value_max"] == 7.0 and st["has_timestamps"] is True
    assert x.user_degrees().tolist() == [2, 1, 2]
    assert x.item_degrees().tolist() == [2, 1, 2]


def test_with_matrix_keeps_timestamps_only_for_same_structure():
    x = small()
    same = x.matrix.copy()
    same.data *= 2
    y = x.with_matrix(same)
    assert y.timestamps is x.timestamps and y.user_ids is x.user_ids
    np.testing.assert_array_equal(y.matrix.toarray(), 2 * x.matrix.toarray())
    z = x.with_matrix(sp.eye(3, format="csr"))
    assert z.timestamps is None and z.nnz == 3
    with pytest.raises(DataError, match="shape"):
        x.with_matrix(sp.eye(4, format="csr"))


def test_non_canonical_matrix_is_canonicalised():
    m = sp.csr_matrix(
        (np.array([1.0, 2.0, 3.0]), np.array([2, 0, 2]), np.array([0, 3, 3])), shape=(2, 3)
    )
    x = Interactions(m, np.array([0, 1]), np.array([0, 1, 2]))
    assert x.matrix.has_canonical_format
    assert x.matrix.toarray().tolist() == [[2.0, 0.0, 4.0], [0.0, 0.0, 0.0]]
    with pytest.raises(DataError, match="repeated ids"):
        Interactions(sp.csr_matrix((2, 2)), np.array([1, 1]), np.array([0, 1]))
    with pytest.raises(DataError, match="shape"):
        Interactions(sp.csr_matrix((2, 2)), np.array([1, 2, 3]), np.array([0, 1]))


def test_select_entries_subset_and_select_users():
    x = small()
    keep = x.matrix.data > 2.5
    y = x.select_entries(keep)
    assert y.shape == x.shape and y.nnz == int(keep.sum())
    np.testing.assert_array_equal(
        y.matrix.toarray(), np.where(x.matrix.toarray() > 2.5, x.matrix.toarray(), 0)
    )
    assert y.timestamps.nnz == y.nnz
    np.testing.assert_array_equal(y.timestamps.data, x.timestamps.data[keep])
    s = x.subset(users=[0, 2], items=np.array([True, False, True]))
    assert s.user_ids.tolist() == [10, 30] and s.item_ids.tolist() == ["a", "c"]
    np.testing.assert_array_equal(s.matrix.toarray(), x.matrix.toarray()[[0, 2]][:, [0, 2]])
    np.testing.assert_array_equal(s.timestamps.toarray(), x.timestamps.toarray()[[0, 2]][:, [0, 2]])
    r = x.select_users([1])
    assert r.shape == x.shape and r.user_degrees().tolist() == [0, 1, 0]


def test_filter_min_interactions_matches_brute_force_core():
    rng = np.random.default_rng(0)
    dense = rng.random((40, 30)) < 0.12
    u, i = np.nonzero(dense)
    x = Interactions.from_columns(u, i)
    got = x.filter_min_interactions(min_user=3, min_item=2)
    keep_u, keep_i = np.ones(40, bool), np.ones(30, bool)
    while True:  # brute force on the dense matrix
        sub = dense & keep_u[:, None] & keep_i[None, :]
        nu, ni = sub.sum(1) >= 3, sub.sum(0) >= 2
        if (nu == keep_u).all() and (ni == keep_i).all():
            break
        keep_u &= nu
        keep_i &= ni
    assert got.user_ids.tolist() == np.flatnonzero(keep_u).tolist()
    assert got.item_ids.tolist() == np.flatnonzero(keep_i).tolist()
    assert got.user_degrees().min() >= 3 and got.item_degrees().min() >= 2
    with pytest.raises(DataError, match="no interactions left"):
        x.filter_min_interactions(min_user=100)


def test_binarize_and_to_implicit():
    x = Interactions.from_columns([0, 0, 1, 1], [0, 1, 0, 1], [5.0, 3.0, 4.0, 1.0], [1, 2, 3, 4])
    b = x.binarize(4.0)
    assert b.matrix.toarray().tolist() == [[1.0, 0.0], [1.0, 0.0]]
    assert b.timestamps.data.tolist() == [1, 3]
    assert x.matrix.data.tolist() == [5.0, 3.0, 4.0, 1.0]  # the input is not modified
    c = to_implicit(x, "confidence", threshold=3.0)
    assert c.matrix.toarray().tolist() == [[5.0, 3.0], [4.0, 0.0]]
    d = to_implicit(x, "binary")
    assert d.nnz == 4 and set(d.matrix.data.tolist()) == {1.0}
    assert x.matrix.data.tolist() == [5.0, 3.0, 4.0, 1.0]
    with pytest.raises(DataError, match=">= 9"):
        to_implicit(x, "binary", threshold=9)


def test_require_nonnegative_names_an_example_and_the_fix():
    x = Interactions.from_columns(["a", "b"], ["i", "j"], [2.0, -1.5], source="ratings.csv")
    with pytest.raises(DataError) as err:
        require_nonnegative(x)
    msg = str(err.value)
    assert "ratings.csv" in msg and "1 of 2 values are negative" in msg
    assert "user b" in msg and "Binarize" in msg
    with pytest.raises(DataError, match="negative"):
        to_implicit(x, "confidence")
    require_nonnegative(to_implicit(x, "binary", threshold=0.0))


def test_save_load_round_trip(tmp_path):
    x = Interactions.from_columns(
        ["u1", "u2"], [3, 4], [1.5, 2.0], [10, 20], item_titles={3: "Three"}
    )
    path = tmp_path / "sub" / "data.npz"
    x.save(path)
    y = Interactions.load(path)
    assert y.user_ids.tolist() == ["u1", "u2"] and y.item_ids.tolist() == [3, 4]
    np.testing.assert_array_equal(y.matrix.toarray(), x.matrix.toarray())
    np.testing.assert_array_equal(y.timestamps.toarray(), x.timestamps.toarray())
    assert y.item_titles.tolist() == ["Three", ""]
    assert [p.name for p in path.parent.iterdir()] == ["data.npz"]  # no temporary left


def test_save_failure_leaves_no_file(tmp_path, monkeypatch):
    x = small()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        x.save(tmp_path / "x.npz")
    assert list(tmp_path.iterdir()) == []


def test_load_rejects_a_file_that_is_not_a_saved_dataset(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"bad\.npz.*Interactions\.save"):
        Interactions.load(bad)


def test_result_does_not_share_the_callers_arrays():
    u, i = np.array([0, 1]), np.array([0, 1])
    v, t = np.array([1.0, 2.0], dtype=np.float32), np.array([10, 20])
    x = Interactions.from_columns(u, i, v, t)  # sorted input: the fast path
    v[:] = 9
    t[:] = 99
    assert x.matrix.data.tolist() == [1.0, 2.0] and x.timestamps.data.tolist() == [10, 20]
