"""Coverage, Gini, popularity, novelty, diversity vs hand-computed values and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.eval.beyond import (
    beyond_accuracy_metrics,
    catalog_coverage,
    exposure_counts,
    gini_from_counts,
    gini_index,
    intra_list_diversity,
    novelty,
    popularity_percentile,
    popularity_percentiles,
)


def test_coverage_hand_cases():
    ids = np.array([[0, 1], [1, 2], [-1, -1]])
    assert catalog_coverage(ids, 5) == pytest.approx(3 / 5)
    assert catalog_coverage(ids, 5, k=1) == pytest.approx(2 / 5)  # items 0 and 1
    np.testing.assert_array_equal(exposure_counts(ids, 5).numpy(), [1, 2, 1, 0, 0])
    np.testing.assert_array_equal(exposure_counts([[4, 4, 4]], 5).numpy(), [0, 0, 0, 0, 1])
    with pytest.raises(ValueError, match="catalog"):
        catalog_coverage(ids, 2)


def test_gini_hand_cases():
    # exposure (0, 0, 2, 2): mean absolute difference 16 / 16 pairs = 1 -> G = 1 / (2 * 1) = 0.5
    assert gini_index(np.array([[2, 3], [2, 3]]), 4) == pytest.approx(0.5)
    assert gini_from_counts([3, 3, 3]) == pytest.approx(0.0)
    assert gini_from_counts([0, 0, 0, 7]) == pytest.approx(3 / 4)  # (n - 1) / n
    assert math.isnan(gini_from_counts([0, 0]))
    assert gini_index(np.array([[0, 1, 2, 3]]), 4) == pytest.approx(0.0)
    # never-recommended items count: the same lists over a larger catalog are less equal
    assert gini_index(np.array([[0, 1, 2, 3]]), 8) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(4))
def test_gini_matches_mean_absolute_difference(seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(-1, 25, size=(30, 6))
    counts = np.zeros(40)
    for row in ids:
        for item in set(row.tolist()) - {-1}:
            counts[item] += 1
    mad = np.abs(counts[:, None] - counts[None, :]).sum() / counts.size**2
    assert gini_index(ids, 40) == pytest.approx(mad / (2 * counts.mean()))


def test_popularity_percentile_hand_case():
    pop = np.array([10, 5, 5, 1])
    np.testing.assert_allclose(popularity_percentiles(pop), [1.0, 0.75, 0.75, 0.25])
    ids = np.array([[0, 3], [1, -1], [-1, -1]])  # the empty list is left out
    assert popularity_percentile(ids, pop) == pytest.approx(((1 + 0.25) / 2 + 0.75) / 2)
    assert popularity_percentile(ids, torch.tensor(pop), k=1) == pytest.approx((1 + 0.75) / 2)


def test_novelty_hand_case():
    pop = np.array([4, 2, 1, 0])  # of 8 users: -log2(p) = 1, 2, 3 and 3 (popularity 0 counts as 1)
    ids = np.array([[0, 1], [2, 3]])
    assert novelty(ids, pop, n_users=8) == pytest.approx(((1 + 2) / 2 + (3 + 3) / 2) / 2)
    with pytest.raises(ValueError, match="n_users"):
        novelty(ids, pop, n_users=0)


def test_diversity_hand_cases():
    feats = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [0.0, 0.0]])
    c = 1 / math.sqrt(2)
    assert intra_list_diversity([[0, 1]], feats) == pytest.approx(1.0)
    assert intra_list_diversity([[0, 2]], feats) == pytest.approx(1 - c)
    assert intra_list_diversity([[0, 1, 2]], feats) == pytest.approx(1 - (0 + c + c) / 3)
    assert intra_list_diversity([[2, 2, 2]], feats) != intra_list_diversity([[2, 0, 2]], feats)
    # a zero vector is similar to nothing; lists of fewer than 2 items are left out
    assert intra_list_diversity([[0, 3], [1, -1]], feats) == pytest.approx(1.0)
    assert math.isnan(intra_list_diversity([[1, -1]], feats))
    sparse = sp.csr_matrix(feats)
    ids = np.array([[0, 2, 1], [2, 1, -1]])
    assert intra_list_diversity(ids, sparse) == pytest.approx(intra_list_diversity(ids, feats))


@pytest.mark.parametrize("seed", range(3))
def test_diversity_matches_pairwise_brute_force(seed):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(30, 5))
    ids = np.stack([rng.permutation(30)[:6] for _ in range(20)])
    ids[rng.random(ids.shape) < 0.2] = -1
    per_list = []
    for row in ids:
        items = [i for i in row if i >= 0]
        if len(items) < 2:
            continue
        sims = [
            feats[a] @ feats[b] / (np.linalg.norm(feats[a]) * np.linalg.norm(feats[b]))
            for x, a in enumerate(items)
            for b in items[x + 1 :]
        ]
        per_list.append(1 - np.mean(sims))
    got = intra_list_diversity(ids, feats, memory_budget_bytes=1000)  # several blocks
    assert got == pytest.approx(np.mean(per_list), abs=1e-6)


def test_beyond_accuracy_metrics_keys_and_missing_inputs():
    ids = np.array([[0, 1, 2], [2, 3, 4]])
    feats = np.eye(5)
    pop = np.array([5, 4, 3, 2, 1])
    got = beyond_accuracy_metrics(
        ids, 5, (1, 3), item_popularity=pop, n_users=10, item_features=feats
    )
    assert set(got) == {
        f"{m}@{k}"
        for m in ("coverage", "gini", "popularity_percentile", "novelty", "diversity")
        for k in (1, 3)
    }
    assert got["coverage@3"] == pytest.approx(1.0)
    assert got["diversity@3"] == pytest.approx(1.0)
    assert got["coverage@1"] == pytest.approx(2 / 5)
    assert set(beyond_accuracy_metrics(ids, 5, 3)) == {"coverage@3", "gini@3"}
    with pytest.raises(ValueError, match="item_popularity"):
        beyond_accuracy_metrics(ids, 5, 3, metrics=["novelty"])
    with pytest.raises(ValueError, match="unknown"):
        beyond_accuracy_metrics(ids, 5, 3, metrics=["serendipity"])
