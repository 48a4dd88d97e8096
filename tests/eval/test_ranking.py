"""Ranking metrics against a per-user reference written in plain Python, and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.eval.ranking import RANKING_METRICS, ranking_metrics, recall_vs_exact


def reference_user(ranked, relevant, k):
    """All metrics of one user's list (plain Python; duplicates and -1 are not hits)."""
    seen, hits = set(), []
    for item in ranked[:k]:
        hit = item >= 0 and item in relevant and item not in seen
        hits.append(1 if hit else 0)
        if item >= 0:
            seen.add(item)
    n = len(relevant)
    n_hits = sum(hits)
    dcg = sum(h / math.log2(j + 2) for j, h in enumerate(hits))
    idcg = sum(1 / math.log2(j + 2) for j in range(min(k, n)))
    ap, running = 0.0, 0
    for j, h in enumerate(hits):
        if h:
            running += 1
            ap += running / (j + 1)
    first = next((j for j, h in enumerate(hits) if h), None)
    return {
        "recall": n_hits / n,
        "recall_capped": n_hits / min(k, n),
        "precision": n_hits / k,
        "ndcg": dcg / idcg,
        "map": ap / min(k, n),
        "hitrate": float(n_hits > 0),
        "mrr": 0.0 if first is None else 1 / (first + 1),
    }


def reference(ids, test_dense, ks):
    out, scored = {}, [u for u in range(len(ids)) if test_dense[u].any()]
    for k in ks:
        for u in scored:
            relevant = set(np.flatnonzero(test_dense[u]).tolist())
            for name, v in reference_user(list(ids[u]), relevant, k).items():
                out.setdefault(f"{name}@{k}", []).append(v)
    res = {key: float(np.mean(v)) for key, v in out.items()}
    res["n_users_evaluated"] = len(scored)
    res["n_users_skipped"] = len(ids) - len(scored)
    return res


def random_case(seed, n_users=40, n_items=30, width=12):
    rng = np.random.default_rng(seed)
    test = (rng.random((n_users, n_items)) < rng.uniform(0.02, 0.3)).astype(np.float32)
    test[rng.random(n_users) < 0.2] = 0  # some users without test items
    ids = np.stack([rng.permutation(n_items)[:width] for _ in range(n_users)])
    ids[rng.random(ids.shape) < 0.1] = -1  # empty slots (ANN candidates)
    dup = rng.random(ids.shape) < 0.05  # repeated ids (must count once)
    ids[dup] = ids[dup.nonzero()[0], 0]
    return ids, test


@pytest.mark.parametrize("seed", range(8))
def test_matches_per_user_reference(seed):
    ids, test = random_case(seed)
    ks = (1, 3, 5, 12)
    got = ranking_metrics(ids, sp.csr_matrix(test), ks)
    want = reference(ids, test, ks)
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_hand_computed_case():
    # list [a, b, c, d] = [0, 1, 2, 3]; relevant {1, 3, 9}
    test = sp.csr_matrix(([1.0, 1.0, 1.0], ([0, 0, 0], [1, 3, 9])), shape=(1, 10))
    got = ranking_metrics(np.array([[0, 1, 2, 3]]), test, (2, 4))
    log3, log5 = math.log2(3), math.log2(5)
    assert got["recall@4"] == pytest.approx(2 / 3)
    assert got["recall_capped@4"] == pytest.approx(2 / 3)
    assert got["precision@4"] == pytest.approx(0.5)
    assert got["ndcg@4"] == pytest.approx((1 / log3 + 1 / log5) / (1 + 1 / log3 + 1 / 2))
    assert got["map@4"] == pytest.approx((1 / 2 + 2 / 4) / 3)
    assert got["mrr@4"] == pytest.approx(0.5)
    assert got["hitrate@4"] == 1.0
    assert got["recall@2"] == pytest.approx(1 / 3)
    assert got["recall_capped@2"] == pytest.approx(1 / 2)  # min(k=2, |test|=3)
    assert got["ndcg@2"] == pytest.approx((1 / log3) / (1 + 1 / log3))
    assert got["map@2"] == pytest.approx((1 / 2) / 2)


def test_fewer_test_items_than_k_and_perfect_lists():
    # user 0: 2 relevant items, both on top: every normalised metric is 1 at k = 5
    test = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=np.float32))
    got = ranking_metrics(np.array([[1, 0, 2, 3, 4], [0, 1, 2, 3, 4]]), test, 5)
    for name in ("recall", "recall_capped", "ndcg", "map", "hitrate", "mrr"):
        assert got[f"{name}@5"] == pytest.approx(1.0), name
    assert got["precision@5"] == pytest.approx(2 / 5)
    assert got["n_users_evaluated"] == 1 and got["n_users_skipped"] == 1


def test_users_mapping_threshold_per_user_and_metric_subset():
    ids, test = random_case(3, n_users=20)
    ratings = test * np.random.default_rng(0).integers(1, 6, test.shape)
    rows = np.array([5, 2, 19, 2])
    got = ranking_metrics(
        torch.from_numpy(ids[rows]),
        sp.csr_matrix(ratings),
        (3,),
        users=rows,
        relevance_threshold=4,
        metrics=["ndcg", "recall"],
    )
    want = reference(ids[rows], (ratings >= 4)[rows], (3,))
    assert set(got) == {"ndcg@3", "recall@3", "n_users_evaluated", "n_users_skipped"}
    for key in got:
        assert got[key] == pytest.approx(want[key])
    per = ranking_metrics(ids, sp.csr_matrix(test), (3,), per_user=True)
    scored = np.flatnonzero(test.any(1))
    np.testing.assert_array_equal(per["user"], scored)
    assert per["recall@3"].shape == (scored.size,)
    for name in RANKING_METRICS:
        assert per[f"{name}@3"].mean() == pytest.approx(reference(ids, test, (3,))[f"{name}@3"])


def test_no_users_with_test_items_gives_nan_and_counts():
    got = ranking_metrics(np.zeros((3, 2), dtype=np.int64), sp.csr_matrix((3, 4)), 2)
    assert math.isnan(got["recall@2"])
    assert got["n_users_evaluated"] == 0 and got["n_users_skipped"] == 3


def test_errors_name_the_fix():
    test = sp.csr_matrix(np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="at least max"):
        ranking_metrics(np.zeros((3, 2), dtype=np.int64), test, (5,))
    with pytest.raises(ValueError, match="users="):
        ranking_metrics(np.zeros((2, 2), dtype=np.int64), test, (1,))
    with pytest.raises(ValueError, match="unknown"):
        ranking_metrics(np.zeros((3, 2), dtype=np.int64), test, (1,), metrics=["auc"])
    with pytest.raises(ValueError, match="3 items"):
        ranking_metrics(np.full((3, 2), 7), test, (1,))
    with pytest.raises(TypeError, match="integer"):
        ranking_metrics(np.zeros((3, 2)), test, (1,))


def reference_recall_vs_exact(approx, exact, k):
    fracs = []
    for a, x in zip(approx, exact, strict=True):
        truth = {i for i in x[:k] if i >= 0}
        if truth:
            fracs.append(len(truth & {i for i in a[:k] if i >= 0}) / len(truth))
    return float(np.mean(fracs))


@pytest.mark.parametrize("seed", range(4))
def test_recall_vs_exact_matches_reference(seed):
    rng = np.random.default_rng(seed)
    exact = np.stack([rng.permutation(40)[:10] for _ in range(25)])
    approx = np.where(rng.random(exact.shape) < 0.6, exact, rng.integers(0, 40, exact.shape))
    approx = np.take_along_axis(approx, rng.permuted(np.tile(np.arange(10), (25, 1)), axis=1), 1)
    approx[rng.random(approx.shape) < 0.1] = -1
    exact[rng.random(exact.shape) < 0.05] = -1
    exact[0] = -1  # a row without exact ids is left out
    for k in (1, 5, 10):
        got = recall_vs_exact(approx, exact, k)
        assert got == pytest.approx(reference_recall_vs_exact(approx, exact, k)), k
    assert recall_vs_exact(exact, exact) == pytest.approx(1.0)


def test_recall_vs_exact_hand_case_and_errors():
    approx = np.array([[3, 3, 5, -1], [1, 2, 3, 4]])
    exact = np.array([[3, 4, 5, 6], [1, 2, 3, 4]])
    assert recall_vs_exact(approx, exact, 4) == pytest.approx((2 / 4 + 1.0) / 2)
    assert recall_vs_exact(approx, exact, 2) == pytest.approx((1 / 2 + 1.0) / 2)
    with pytest.raises(ValueError, match="width"):
        recall_vs_exact(approx, exact, 5)
