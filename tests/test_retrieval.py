"""recsys.retrieval.CandidateGenerator: filtered top-k candidates against brute force and ALS."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.index import IndexMismatchError, ItemIndex, UnknownUserError, build_index
from recsys.retrieval import CandidateGenerator


class FakeModel:
    """The model interface of recsys.als.ALS on numpy factors (fast; ALS itself is used below)."""

    def __init__(self, n_users: int, n_items: int, f: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.user_factors = rng.standard_normal((n_users, f)).astype(np.float32)
        norms = np.exp(0.9 * rng.standard_normal((n_items, 1)))
        self.item_factors = (rng.standard_normal((n_items, f)) * norms).astype(np.float32)
        self.user_bias = rng.standard_normal(n_users).astype(np.float32)
        self.item_bias = rng.standard_normal(n_items).astype(np.float32)
        self.global_bias = 0.25

    def item_embeddings(self) -> np.ndarray:
        return np.hstack([self.item_factors, self.item_bias[:, None]])

    def user_embeddings(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        return np.hstack([self.user_factors[ids], np.ones((len(ids), 1), np.float32)])

    def user_offsets(self, ids) -> np.ndarray:
        return (self.user_bias[np.asarray(ids)] + self.global_bias).astype(np.float32)

    def dense_scores(self) -> np.ndarray:
        """Every user-item score in float64, the independent reference."""
        x, y = self.user_factors.astype(np.float64), self.item_factors.astype(np.float64)
        return x @ y.T + self.item_bias[None, :] + self.user_bias[:, None] + self.global_bias


N_USERS, N_ITEMS = 120, 1500
MODEL = FakeModel(N_USERS, N_ITEMS, 10)
DENSE = MODEL.dense_scores()


def make_seen(seed: int = 1) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for u in range(N_USERS):
        n = int(rng.integers(0, 40))
        if u == 0:
            n = 600  # a heavy user
        # users have seen what they like most: the worst case for over-fetching
        liked = np.argsort(-DENSE[u])[: 2 * n]
        picked = rng.choice(liked, size=n, replace=False) if n else liked[:0]
        rows += [u] * n
        cols += picked.tolist()
    data = np.ones(len(rows), np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(N_USERS, N_ITEMS))


SEEN = make_seen()


def reference(users, k, seen=SEEN, allowed=None, excluded=None, dense=DENSE):
    """Filtered top-k of the float64 dense scores: ids, scores, and how many are valid."""
    s = dense[users].copy()
    if seen is not None:
        s[seen[users].toarray() > 0] = -np.inf
    if allowed is not None:
        keep = np.zeros(s.shape[1], bool)
        keep[allowed] = True
        s[:, ~keep] = -np.inf
    if excluded is not None:
        s[:, excluded] = -np.inf
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(s, ids, 1), np.isfinite(s).sum(1)


def check_valid(ids, scores, users, k, allowed=None, excluded=None, seen=SEEN):
    """The guarantees: exactly k, no -1, nothing seen or denied, sorted, exact model scores."""
    assert ids.shape == scores.shape == (len(users), k)
    assert (ids >= 0).all()
    seen_dense = seen[users].toarray() > 0
    assert not np.take_along_axis(seen_dense, ids, 1).any()
    if excluded is not None:
        assert not np.isin(ids, excluded).any()
    if allowed is not None:
        assert np.isin(ids, allowed).all()
    assert all(len(set(row)) == k for row in ids.tolist())
    assert (np.diff(scores, axis=1) <= 0).all()
    np.testing.assert_allclose(scores, DENSE[users[:, None], ids], rtol=1e-5, atol=1e-4)


INDEXES = {
    "flat": {"kind": "flat"},
    "ivf": {"kind": "ivf", "nlist": 32, "nprobe": 2, "mips_to_l2": False},
    "ivf-mips": {"kind": "ivf", "nlist": 32, "nprobe": 2, "mips_to_l2": True},
    "hnsw": {"kind": "hnsw", "hnsw_m": 8, "ef_construction": 40, "ef_search": 16},
}


@pytest.fixture(scope="module")
def indexes() -> dict[str, ItemIndex]:
    emb = MODEL.item_embeddings()
    return {name: build_index(emb, **kw) for name, kw in INDEXES.items()}


@pytest.mark.parametrize("name", list(INDEXES))
def test_filtered_candidates_are_valid_for_every_index(indexes, name: str) -> None:
    gen = CandidateGenerator(MODEL, indexes[name], SEEN, exact_below=0, batch_size=50)
    users = np.arange(N_USERS)
    rng = np.random.default_rng(4)
    excluded = rng.choice(N_ITEMS, 300, replace=False)
    allowed = rng.choice(N_ITEMS, 1000, replace=False)
    for kw in (
        {},
        {"excluded_items": excluded},
        {"allowed_items": allowed, "excluded_items": excluded[:50]},
    ):
        ids, scores = gen.candidates(users, 25, **kw)
        check_valid(ids, scores, users, 25, kw.get("allowed_items"), kw.get("excluded_items"))
        want, want_scores, _ = reference(
            users, 25, allowed=kw.get("allowed_items"), excluded=kw.get("excluded_items")
        )
        recall = np.mean([len(np.intersect1d(a, b)) / 25 for a, b in zip(ids, want, strict=True)])
        if name == "flat":
            np.testing.assert_array_equal(ids, want)
            np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-4)
        else:
            assert recall > 0.15, recall  # approximate, but far above random picks (0.017)


def test_without_selectors_post_filtering_still_gives_exact_results(indexes, monkeypatch) -> None:
    """GPU indexes ignore ID selectors: over-fetch by the number of denied items, post-filter."""
    monkeypatch.setattr(ItemIndex, "supports_selectors", property(lambda self: False))
    gen = CandidateGenerator(MODEL, indexes["flat"], SEEN, exact_below=0)
    users = np.arange(N_USERS)
    excluded = np.argsort(-DENSE.mean(0))[:200]  # the items everybody likes: all denied
    ids, scores = gen.candidates(users, 10, excluded_items=excluded)
    check_valid(ids, scores, users, 10, excluded=excluded)
    np.testing.assert_array_equal(ids, reference(users, 10, excluded=excluded)[0])


def test_short_rows_are_searched_again_until_k_valid(indexes) -> None:
    """IVF with nprobe=1 and a tight allow list misses items: retries and exhaustive rescue."""
    gen = CandidateGenerator(MODEL, indexes["ivf"], SEEN, exact_below=0, max_retries=1)
    users = np.arange(N_USERS)
    allowed = np.random.default_rng(7).choice(N_ITEMS, 100, replace=False)
    ids, scores = gen.candidates(users, 30, allowed_items=allowed)
    check_valid(ids, scores, users, 30, allowed=allowed)
    assert gen.last_exhaustive_rows > 0  # some rows needed the exhaustive rescue


def test_small_allow_lists_are_scored_exactly(indexes) -> None:
    gen = CandidateGenerator(MODEL, indexes["hnsw"], SEEN, exact_below=2048)
    users = np.arange(N_USERS)
    allowed = np.arange(0, N_ITEMS, 7)
    ids, scores = gen.candidates(users, 12, allowed_items=allowed)
    np.testing.assert_array_equal(ids, reference(users, 12, allowed=allowed)[0])
    check_valid(ids, scores, users, 12, allowed=allowed)


@pytest.mark.parametrize("name", ["flat", "hnsw"])
def test_padding_only_when_fewer_than_k_valid_items_exist(indexes, name: str) -> None:
    seen = SEEN.tolil()
    seen[3, :] = 1
    seen[3, [5, 9, 11]] = 0  # user 3 has three unseen items left
    seen = seen.tocsr()
    seen.eliminate_zeros()
    gen = CandidateGenerator(MODEL, indexes[name], seen, exact_below=0)
    ids, scores = gen.candidates([3, 4], 5, excluded_items=[9])
    assert ids[0].tolist()[2:] == [-1, -1, -1] and set(ids[0, :2].tolist()) == {5, 11}
    assert np.isneginf(scores[0, 2:]).all() and np.isfinite(scores[0, :2]).all()
    assert (ids[1] >= 0).all()
    # nothing valid at all: a full row of padding
    ids, scores = gen.candidates([3], 4, allowed_items=[0, 1, 100], excluded_items=[100])
    assert (ids == -1).all() and np.isneginf(scores).all()


def test_unknown_users_error_or_popular_fallback(indexes) -> None:
    gen = CandidateGenerator(MODEL, indexes["flat"], SEEN)
    with pytest.raises(UnknownUserError, match=r"2 unknown user ids \(first: \[-1, 120\]\)"):
        gen.candidates([0, 120, -1], 5)
    with pytest.raises(UnknownUserError, match="internal integer indices"):
        gen.candidates(np.array(["alice"]), 5)
    popularity = np.asarray(SEEN.sum(axis=0)).ravel()
    excluded = np.argsort(-popularity, kind="stable")[:2]
    ids, scores = gen.candidates([7, 500, 8], 6, excluded_items=excluded, fallback="popular")
    known, known_scores = gen.candidates([7, 8], 6, excluded_items=excluded)
    np.testing.assert_array_equal(ids[[0, 2]], known)
    np.testing.assert_array_equal(scores[[0, 2]], known_scores)
    want = [i for i in np.argsort(-popularity, kind="stable") if i not in excluded][:6]
    assert ids[1].tolist() == want
    np.testing.assert_array_equal(scores[1], popularity[want])
    # the same policy set once on the generator
    fallback_gen = CandidateGenerator(MODEL, indexes["flat"], SEEN, fallback="popular")
    assert fallback_gen.candidates([500], 6, excluded_items=excluded)[0][0].tolist() == want


def test_user_vectors_for_new_users(indexes) -> None:
    gen = CandidateGenerator(MODEL, indexes["flat"], SEEN)
    vectors = MODEL.user_embeddings([10, 11])
    rows = SEEN[[10, 11]]
    ids, scores = gen.candidates(None, 8, user_vectors=vectors, seen_rows=rows)
    want, _, _ = reference(np.array([10, 11]), 8)
    np.testing.assert_array_equal(ids, want)
    # offsets default to 0: scores are the plain inner products
    np.testing.assert_allclose(
        scores,
        DENSE[[[10], [11]], ids] - MODEL.user_offsets([10, 11])[:, None],
        rtol=1e-5,
        atol=1e-4,
    )
    # with user ids, the seen rows come from the generator's matrix
    ids2, _ = gen.candidates([10, 11], 8, user_vectors=vectors)
    np.testing.assert_array_equal(ids2, want)
    with pytest.raises(IndexMismatchError, match="dimension"):
        gen.candidates(None, 8, user_vectors=vectors[:, :4])


def test_plain_embeddings_source_and_argument_errors() -> None:
    emb = MODEL.item_embeddings()
    gen = CandidateGenerator(emb, seen=SEEN)
    vectors = MODEL.user_embeddings(np.arange(5))
    ids, scores = gen.candidates(
        np.arange(5), 4, user_vectors=vectors, user_offsets=MODEL.user_offsets(np.arange(5))
    )
    want, want_scores, _ = reference(np.arange(5), 4)
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="pass user_vectors"):
        gen.candidates([0], 4)
    with pytest.raises(ValueError, match="k must be >= 1"):
        gen.candidates([0], 0, user_vectors=vectors[:1])
    with pytest.raises(IndexMismatchError, match="item columns"):
        CandidateGenerator(MODEL, seen=SEEN[:, :100])
    with pytest.raises(IndexMismatchError, match="user rows"):
        CandidateGenerator(MODEL, seen=SEEN[:50])
    with pytest.raises(IndexMismatchError, match="number of items"):
        CandidateGenerator(MODEL, build_index(emb[:100]))
    with pytest.raises(ValueError, match="needs the seen matrix"):
        CandidateGenerator(MODEL).candidates([0], 3)
    with pytest.raises(ValueError, match="fallback must be one of"):
        CandidateGenerator(MODEL, fallback="random")
    with pytest.raises(ValueError, match="outside"):
        CandidateGenerator(MODEL, seen=SEEN).candidates([0], 3, excluded_items=[N_ITEMS])


def test_similar_items_match_brute_force_cosine() -> None:
    gen = CandidateGenerator(MODEL, seen=SEEN)
    unit = MODEL.item_factors / np.linalg.norm(MODEL.item_factors, axis=1, keepdims=True)
    cos = unit.astype(np.float64) @ unit.astype(np.float64).T
    items = np.array([0, 17, 999])
    ids, scores = gen.similar_items(items, 6)
    cos_wo_self = cos[items].copy()
    cos_wo_self[np.arange(3), items] = -np.inf
    want = np.argsort(-cos_wo_self, axis=1, kind="stable")[:, :6]
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_allclose(scores, np.take_along_axis(cos_wo_self, want, 1), atol=1e-5)
    with_self, _ = gen.similar_items(items, 3, exclude_self=False)
    np.testing.assert_array_equal(with_self[:, 0], items)


# ----------------------------------------------------------------------------- the real model
@pytest.fixture(scope="module")
def als_model(small_als):
    return small_als(0.06)


def test_exact_ip_index_equals_model_recommend(als_model) -> None:
    model, matrix = als_model
    index = build_index(model.item_embeddings(), "flat", "ip")
    gen = CandidateGenerator(model, index, matrix)
    users = np.arange(matrix.shape[0])
    cases = [
        ({}, {}),
        ({"excluded_items": [0, 1, 2, 50]}, {"filter_items": [0, 1, 2, 50]}),
        ({"allowed_items": np.arange(0, 250, 2)}, {"items": np.arange(0, 250, 2)}),
    ]
    for ours, theirs in cases:
        ids, scores = gen.candidates(users, 15, **ours)
        want_ids, want_scores = model.recommend(users, matrix[users], 15, **theirs)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)
    # without seen filtering as well
    ids, scores = gen.candidates(users, 15, exclude_seen=False)
    want_ids, want_scores = model.recommend(users, None, 15, filter_seen=False)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)


def test_folded_in_users_and_similar_items_match_the_model(als_model) -> None:
    model, matrix = als_model
    gen = CandidateGenerator(model, seen=matrix)
    rows = matrix[[4, 5, 6]]
    vectors = model.fold_in(rows)
    ids, _ = gen.candidates(None, 10, user_vectors=vectors, seen_rows=rows)
    scores = vectors.astype(np.float64) @ model.item_embeddings().astype(np.float64).T
    scores[rows.toarray() > 0] = -np.inf
    np.testing.assert_array_equal(ids, np.argsort(-scores, axis=1, kind="stable")[:, :10])
    items = np.arange(0, 250, 25)
    ids, sims = gen.similar_items(items, 7)
    want_ids, want_sims = model.similar_items(items, 7)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(sims, want_sims, atol=1e-5)


def test_retries_double_nprobe_only_up_to_nlist() -> None:
    """A short row is searched again with twice the nprobe: never more than the index's lists."""
    index = build_index(MODEL.item_embeddings(), "ivf", nlist=8, nprobe=5, mips_to_l2=False)
    gen = CandidateGenerator(MODEL, index, SEEN, exact_below=0, max_retries=3)
    users = np.arange(N_USERS)
    allowed = np.random.default_rng(8).choice(N_ITEMS, 100, replace=False)
    ids, scores = gen.candidates(users, 90, allowed_items=allowed, exclude_seen=False)
    check_valid(ids, scores, users, 90, allowed=allowed, seen=sp.csr_matrix(SEEN.shape))
    np.testing.assert_array_equal(
        np.sort(ids, axis=1), np.sort(reference(users, 90, seen=None, allowed=allowed)[0], axis=1)
    )


def test_k_above_the_catalog_is_clipped_to_it(indexes) -> None:
    """Like implicit: a huge k gives every valid item, not a (users, k) allocation."""
    gen = CandidateGenerator(MODEL, indexes["hnsw"], SEEN)
    users = np.array([1, 2])
    ids, scores = gen.candidates(users, 10**11)
    want_ids, want_scores = gen.candidates(users, N_ITEMS)
    assert ids.shape == (2, N_ITEMS)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)
    sim_ids, _ = gen.similar_items([4], k=10**11)
    assert sim_ids.shape == (1, N_ITEMS) and 4 not in sim_ids[0]
    for bad in (0, -3, 2.5, "ten"):
        with pytest.raises(ValueError, match="k must be >= 1"):
            gen.candidates(users, bad)
        with pytest.raises(ValueError, match="k must be >= 1"):
            gen.similar_items([4], k=bad)
