"""evaluate / evaluate_candidates end to end against a dense numpy reference pipeline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.eval import (
    ALL_METRICS,
    beyond_accuracy_metrics,
    drop_excluded,
    evaluate,
    evaluate_candidates,
    item_degrees,
    ranking_metrics,
)


def make_case(seed, n_users=35, n_items=45, d=6):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n_users, d)).astype(np.float32)
    v = rng.normal(size=(n_items, d)).astype(np.float32)
    inter = rng.random((n_users, n_items)) < 0.25
    to_test = inter & (rng.random((n_users, n_items)) < 0.3)
    train, test = inter & ~to_test, to_test.copy()
    test[rng.random(n_users) < 0.2] = False  # users without test items
    return rng, u, v, train, test


def reference_lists(u, v, train, k):
    """Dense float64 scores, train items at -inf, per-user sort by (score desc, id asc)."""
    scores = u.astype(np.float64) @ v.T.astype(np.float64)
    scores[train] = -np.inf
    out = np.full((u.shape[0], k), -1, dtype=np.int64)
    for row in range(u.shape[0]):
        order = [i for i in np.lexsort((np.arange(v.shape[0]), -scores[row])) if train[row, i] == 0]
        out[row, : min(k, len(order))] = order[:k]
    return out


def reference_recall_ndcg(lists, test, k):
    recall, ndcg = [], []
    for row in np.flatnonzero(test.any(1)):
        rel = set(np.flatnonzero(test[row]).tolist())
        hits = [1 if i in rel else 0 for i in lists[row, :k]]
        recall.append(sum(hits) / len(rel))
        idcg = sum(1 / math.log2(j + 2) for j in range(min(k, len(rel))))
        ndcg.append(sum(h / math.log2(j + 2) for j, h in enumerate(hits)) / idcg)
    return float(np.mean(recall)), float(np.mean(ndcg))


@pytest.mark.parametrize("seed", range(4))
def test_evaluate_matches_reference_pipeline(seed):
    _, u, v, train, test = make_case(seed)
    ks = (5, 10)
    got = evaluate(u, v, sp.csr_matrix(train), sp.csr_matrix(test), ks)
    lists = reference_lists(u, v, train, 10)
    for k in ks:
        recall, ndcg = reference_recall_ndcg(lists, test, k)
        assert got[f"recall@{k}"] == pytest.approx(recall, abs=1e-12)
        assert got[f"ndcg@{k}"] == pytest.approx(ndcg, abs=1e-12)
    scored = np.flatnonzero(test.any(1))
    assert got["n_users_evaluated"] == scored.size
    assert got["n_users_skipped"] == u.shape[0] - scored.size
    # every other metric equals the tested building blocks applied to the reference lists
    want = ranking_metrics(lists[scored], sp.csr_matrix(test), ks, users=scored)
    want.update(
        beyond_accuracy_metrics(
            lists[scored],
            v.shape[0],
            ks,
            item_popularity=train.sum(0),
            n_users=u.shape[0],
            item_features=v,
        )
    )
    assert set(got) == set(want)
    for key, value in want.items():
        if not key.startswith("n_users"):  # checked above (here only scored users were passed)
            assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert sorted({key.partition("@")[0] for key in got if "@" in key}) == sorted(ALL_METRICS)
    assert all(type(val) in (float, int) for val in got.values())


def test_train_items_are_never_counted_as_hits():
    # the only test item of each user is also a train item: after exclusion nothing can hit
    test = np.eye(6, dtype=bool)
    got = evaluate(np.eye(6), np.eye(6), sp.csr_matrix(test), sp.csr_matrix(test), 3)
    assert got["recall@3"] == 0.0 and got["hitrate@3"] == 0.0
    # without exclusion each user's own item scores highest
    assert evaluate(np.eye(6), np.eye(6), None, sp.csr_matrix(test), 1)["recall@1"] == 1.0


def test_options_inputs_and_errors():
    _, u, v, train, test = make_case(7)
    tr, te = sp.csr_matrix(train), sp.csr_matrix(test)
    base = evaluate(u, v, tr, te, 10, metrics=["recall", "coverage"])
    assert set(base) == {"recall@10", "coverage@10", "n_users_evaluated", "n_users_skipped"}
    same = evaluate(torch.from_numpy(u), torch.from_numpy(v), tr, te, [10], metrics=["recall"])
    assert same["recall@10"] == pytest.approx(base["recall@10"])
    half = np.arange(0, u.shape[0], 2)
    sub = evaluate(u, v, tr, te, 10, users=half, metrics=["recall"])
    lists = reference_lists(u, v, train, 10)
    keep = half[test[half].any(1)]
    assert sub["recall@10"] == pytest.approx(reference_recall_ndcg(lists[keep], test[keep], 10)[0])
    assert sub["n_users_skipped"] == half.size - keep.size
    with pytest.raises(ValueError, match="unknown"):
        evaluate(u, v, tr, te, 10, metrics=["auc"])
    with pytest.raises(ValueError, match="rows"):
        evaluate(u[:-1], v, tr, te, 10)
    np.testing.assert_array_equal(item_degrees(tr), train.sum(0))


def test_drop_excluded_keeps_order():
    seen = sp.csr_matrix(np.array([[0, 1, 0, 1, 0], [1, 0, 0, 0, 0]], dtype=np.float32))
    ids = np.array([[3, 2, 1, 4], [0, -1, 2, 0]])
    got = drop_excluded(ids, seen)
    np.testing.assert_array_equal(got.numpy(), [[2, 4, -1, -1], [2, -1, -1, -1]])
    np.testing.assert_array_equal(drop_excluded(ids[::-1], seen, users=[1, 0])[1].numpy(), got[0])


def test_evaluate_candidates_with_ann_style_lists():
    rng, u, v, train, test = make_case(11)
    exact = reference_lists(u, v, train, 10)
    # an "index" searched without the seen filter: over-fetched, some misses, empty slots
    over = reference_lists(u, v, np.zeros_like(train), 20)
    noisy = np.where(rng.random(over.shape) < 0.15, -1, over)
    got = evaluate_candidates(
        noisy, sp.csr_matrix(test), (5, 10), exclude=sp.csr_matrix(train), exact_ids=exact
    )
    filtered = drop_excluded(noisy, sp.csr_matrix(train)).numpy()
    want = ranking_metrics(filtered, sp.csr_matrix(test), (5, 10))
    assert want["n_users_skipped"] > 0
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key
    assert 0.5 < got["recall_vs_exact@10"] < 1.0
    perfect = evaluate_candidates(exact, sp.csr_matrix(test), 10, exact_ids=exact)
    assert perfect["recall_vs_exact@10"] == 1.0
    direct = evaluate(u, v, sp.csr_matrix(train), sp.csr_matrix(test), 10)
    assert perfect["ndcg@10"] == pytest.approx(direct["ndcg@10"])
    assert perfect["coverage@10"] == pytest.approx(direct["coverage@10"])
    rows = np.array([3, 1, 4])
    part = evaluate_candidates(exact[rows], sp.csr_matrix(test), 10, users=rows)
    assert part["n_users_evaluated"] + part["n_users_skipped"] == 3
    with pytest.raises(ValueError, match="users="):
        evaluate_candidates(exact[:5], sp.csr_matrix(test), 10)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_evaluate_on_cuda_matches_cpu():
    _, u, v, train, test = make_case(13, n_users=200, n_items=300)
    tr, te = sp.csr_matrix(train), sp.csr_matrix(test)
    cpu = evaluate(u, v, tr, te, (5, 20))
    gpu = evaluate(torch.from_numpy(u).cuda(), torch.from_numpy(v).cuda(), tr, te, (5, 20))
    assert set(cpu) == set(gpu)
    for key, value in cpu.items():
        assert gpu[key] == pytest.approx(value, rel=1e-5), key
