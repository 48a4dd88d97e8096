"""Rating-prediction metrics for explicit models: RMSE and MAE on held-out ratings."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recsys.scoring.arrays import (
    ArrayLike,
    as_float_tensor,
    as_vector,
    canonical_csr,
    resolve_device,
)


def _pair(predicted: ArrayLike, actual: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(predicted.cpu() if isinstance(predicted, torch.Tensor) else predicted)
    a = np.asarray(actual.cpu() if isinstance(actual, torch.Tensor) else actual)
    p, a = p.reshape(-1).astype(np.float64), a.reshape(-1).astype(np.float64)
    if p.shape != a.shape:
        raise ValueError(f"{p.size} predictions for {a.size} ratings: pass one per rating")
    if p.size == 0:
        raise ValueError("no ratings to compare")
    return p, a


def rmse(predicted: ArrayLike, actual: ArrayLike) -> float:
    """Root mean squared error between predicted and held-out ratings (float64 accumulation)."""
    p, a = _pair(predicted, actual)
    return float(np.sqrt(np.mean((p - a) ** 2)))


def mae(predicted: ArrayLike, actual: ArrayLike) -> float:
    """Mean absolute error between predicted and held-out ratings."""
    p, a = _pair(predicted, actual)
    return float(np.mean(np.abs(p - a)))


@torch.no_grad()
def predict_entries(
    user_vectors: ArrayLike,
    item_vectors: ArrayLike,
    rows: ArrayLike,
    cols: ArrayLike,
    *,
    user_offsets: ArrayLike | None = None,
    block_size: int = 1 << 18,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Scores user_vectors[rows] . item_vectors[cols] (+ user_offsets[rows]) for given pairs.

    Computed in blocks of ``block_size`` pairs (a gather and a row-wise dot product each), so only
    the requested pairs are scored. Returns float64 numpy (n_pairs,).
    """
    dev = resolve_device(device, user_vectors, item_vectors)
    u = as_float_tensor(user_vectors, "user_vectors", dev)
    v = as_float_tensor(item_vectors, "item_vectors", dev)
    off = as_vector(user_offsets, "user_offsets", u.shape[0], dev)
    r = torch.as_tensor(np.ascontiguousarray(rows, dtype=np.int64).reshape(-1), device=dev)
    c = torch.as_tensor(np.ascontiguousarray(cols, dtype=np.int64).reshape(-1), device=dev)
    if r.shape != c.shape:
        raise ValueError("rows and cols must have the same length")
    out = torch.empty(r.numel(), dtype=torch.float64, device=dev)
    for s in range(0, r.numel(), block_size):
        rb, cb = r[s : s + block_size], c[s : s + block_size]
        val = (u.index_select(0, rb) * v.index_select(0, cb)).sum(1, dtype=torch.float64)
        if off is not None:
            val += off.index_select(0, rb).to(torch.float64)
        out[s : s + block_size] = val
    return out.cpu().numpy()


def rating_metrics(
    user_vectors: ArrayLike,
    item_vectors: ArrayLike,
    test: sp.spmatrix,
    *,
    user_offsets: ArrayLike | None = None,
    clip: tuple[float, float] | None = None,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """RMSE and MAE of the model's predictions on every stored rating of ``test`` (users x items).

    The prediction of (u, i) is user_vectors[u] . item_vectors[i] + user_offsets[u] (the ALS
    contract: biases folded into the vectors and the offsets). ``clip=(lo, hi)`` clips predictions
    to the rating scale first. Returns ``{"rmse", "mae", "n_ratings"}``.
    """
    shape = (int(user_vectors.shape[0]), int(item_vectors.shape[0]))
    csr = canonical_csr(test, "test", shape)
    coo = csr.tocoo()
    pred = predict_entries(
        user_vectors, item_vectors, coo.row, coo.col, user_offsets=user_offsets, device=device
    )
    if clip is not None:
        pred = np.clip(pred, clip[0], clip[1])
    return {"rmse": rmse(pred, coo.data), "mae": mae(pred, coo.data), "n_ratings": int(coo.nnz)}
