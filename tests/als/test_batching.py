"""Degree buckets and padded gathers."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recsys.als import WEIGHTINGS
from recsys.als.batching import bucket_growth, build_buckets


def test_buckets_cover_every_nonempty_row_once():
    matrix = sp.random(200, 300, density=0.05, format="csr", random_state=0, dtype=np.float32)
    growth = bucket_growth(torch.device("cpu"))
    buckets, empty = build_buckets(
        matrix, WEIGHTINGS.build("hkv", alpha=2.0), torch.device("cpu"), torch.float32
    )
    rows = torch.cat([b.rows for b in buckets]).numpy()
    degrees = np.diff(matrix.indptr)
    assert sorted(rows.tolist()) == np.flatnonzero(degrees > 0).tolist()
    assert sorted(empty.tolist()) == np.flatnonzero(degrees == 0).tolist()
    for b in buckets:
        assert b.cols.dtype == torch.int32  # half the memory of int64 indices
        mask = b.cols.numpy() != matrix.shape[1]
        assert mask.sum() == degrees[b.rows.numpy()].sum()
        for row, cols, weight, target, observed in zip(
            b.rows.numpy(), b.cols.numpy(), b.weight.numpy(), b.target.numpy(), mask, strict=True
        ):
            assert cols[observed].tolist() == matrix[row].indices.tolist()
            values = matrix[row].data  # hkv: d = alpha * r, g = 1 + alpha * r, 0 in padding
            np.testing.assert_allclose(weight[observed], 2.0 * values, rtol=1e-6)
            np.testing.assert_allclose(target[observed], 1.0 + 2.0 * values, rtol=1e-6)
            assert not weight[~observed].any() and not target[~observed].any()
        assert b.width <= max(8, int(np.ceil(degrees[b.rows.numpy()].min() * growth)) + 1)


def test_bucket_widths_follow_the_device_growth_ratio():
    """Tight buckets on the CPU (padding costs more than chunks there), coarser on GPUs."""
    assert bucket_growth(torch.device("cpu")) < bucket_growth(torch.device("cuda"))
    degrees = np.repeat(np.arange(1, 400), 3)
    indices = np.concatenate([np.arange(d) for d in degrees])
    indptr = np.r_[0, np.cumsum(degrees)]
    matrix = sp.csr_matrix((np.ones(indices.size), indices, indptr), shape=(degrees.size, 400))
    buckets, _ = build_buckets(matrix, WEIGHTINGS.build("hkv"), torch.device("cpu"), torch.float32)
    padded = sum(len(b) * b.width for b in buckets)
    assert padded / matrix.nnz < 1.07  # buckets 20% wide would pad these rows by ~9%
