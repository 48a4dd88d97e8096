"""RMSE / MAE against hand-computed values and a dense numpy reference of the predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.eval.rating import mae, predict_entries, rating_metrics, rmse


def test_hand_computed():
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))
    assert mae([1, 2, 3], [1, 2, 5]) == pytest.approx(2 / 3)
    assert rmse(torch.tensor([0.5, 1.5]), np.array([1.0, 1.0])) == pytest.approx(0.5)
    assert mae(np.array([[4.0]]), [4.0]) == 0.0
    with pytest.raises(ValueError, match="one per rating"):
        rmse([1, 2], [1])
    with pytest.raises(ValueError, match="no ratings"):
        mae([], [])


@pytest.mark.parametrize("seed", range(3))
def test_rating_metrics_match_dense_reference(seed):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(20, 4)).astype(np.float32)
    v = rng.normal(size=(15, 4)).astype(np.float32)
    offsets = rng.normal(3.0, 0.5, size=20).astype(np.float32)
    ratings = np.where(rng.random((20, 15)) < 0.3, rng.integers(1, 6, (20, 15)), 0)
    test = sp.csr_matrix(ratings.astype(np.float32))
    pred = u.astype(np.float64) @ v.T.astype(np.float64) + offsets[:, None]
    mask = ratings > 0
    err = pred[mask] - ratings[mask]
    got = rating_metrics(u, v, test, user_offsets=offsets)
    assert got["n_ratings"] == int(mask.sum())
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)), rel=1e-5)
    assert got["mae"] == pytest.approx(np.mean(np.abs(err)), rel=1e-5)
    clipped = np.clip(pred[mask], 1, 5) - ratings[mask]
    got = rating_metrics(torch.from_numpy(u), v, test, user_offsets=offsets, clip=(1, 5))
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean(clipped**2)), rel=1e-5)


def test_predict_entries_in_blocks():
    rng = np.random.default_rng(9)
    u, v = rng.normal(size=(6, 3)), rng.normal(size=(5, 3))
    rows, cols = rng.integers(0, 6, 40), rng.integers(0, 5, 40)
    got = predict_entries(u, v, rows, cols, block_size=7)
    np.testing.assert_allclose(got, np.einsum("ij,ij->i", u[rows], v[cols]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="users"):
        rating_metrics(u, v, sp.csr_matrix((4, 5)))
