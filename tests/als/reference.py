"""The float64 oracle of the ALS tests: random matrices, each row's normal equations and the exact
objective written densely, and a half-epoch as training runs it."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recsys.als import ALS
from recsys.als.training import LocalStrategy, half_epoch


def random_matrix(n_users=50, n_items=40, density=0.3, seed=0, empty_user=3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < density) * rng.integers(1, 6, (n_users, n_items))
    dense[empty_user] = 0
    return dense.astype(np.float64)


def reference_user_systems(model: ALS, dense: np.ndarray) -> dict[int, tuple[np.ndarray, ...]]:
    """Each nonempty user's normal equations (lhs, rhs) in float64, over [x_u, b_u]."""
    y = model.item_factors.double().cpu().numpy()
    n_items, f = y.shape
    use_bias = model.item_bias is not None
    item_bias = model.item_bias.double().cpu().numpy() if use_bias else np.zeros(n_items)
    offsets = item_bias + model.global_bias
    fixed = np.hstack([y, np.ones((n_items, 1))]) if use_bias else y
    lam, lam_b = model.params["regularization"], model.params["bias_regularization"]
    reg_diag = np.r_[np.full(f, lam), [lam_b]] if use_bias else np.full(f, lam)
    a = model.weighting.all_pairs_weight
    systems = {}
    for u, row in enumerate(dense):
        cols = np.flatnonzero(row)
        if cols.size == 0:
            continue
        values = torch.tensor(row[cols])
        d = model.weighting.observed_weight(values).numpy()
        g = model.weighting.observed_target(values).numpy()
        scale = (cols.size + a * n_items) ** model.reg_exponent
        fu = fixed[cols]
        lhs = a * fixed.T @ fixed + fu.T @ (d[:, None] * fu) + scale * np.diag(reg_diag)
        rhs = fu.T @ (g - d * offsets[cols]) - a * fixed.T @ offsets
        systems[u] = (lhs, rhs)
    return systems


def reference_user_update(model: ALS, dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve each user's normal equations densely in float64 from the model's item side."""
    f = model.n_factors
    xs, bs = np.zeros((dense.shape[0], f)), np.zeros(dense.shape[0])
    for u, (lhs, rhs) in reference_user_systems(model, dense).items():
        z = np.linalg.solve(lhs, rhs)
        xs[u] = z[:f]
        bs[u] = z[f] if model.item_bias is not None else 0.0
    return xs, bs


def dense_objective(model: ALS, dense: np.ndarray) -> float:
    """The weighted squared error plus regularization, summed over every (user, item) pair."""
    x = model.user_factors.double().numpy()
    y = model.item_factors.double().numpy()
    s = x @ y.T + model.global_bias
    if model.user_bias is not None:
        s += model.user_bias.double().numpy()[:, None] + model.item_bias.double().numpy()[None, :]
    observed = dense != 0
    v = torch.tensor(dense[observed])
    w = model.weighting
    a = w.all_pairs_weight
    d, g, e = (fn(v).numpy() for fn in (w.observed_weight, w.observed_target, w.observed_constant))
    so = s[observed]
    loss = float((d * so**2 - 2 * g * so + e).sum()) + a * float((s**2).sum())
    lam, lam_b = model.params["regularization"], model.params["bias_regularization"]
    nu = model.reg_exponent
    for factors, bias, counts, n_other in (
        (x, model.user_bias, observed.sum(1), dense.shape[1]),
        (y, model.item_bias, observed.sum(0), dense.shape[0]),
    ):
        scale = (counts + a * n_other) ** nu
        loss += lam * float((scale * (factors**2).sum(1)).sum())
        if bias is not None:
            loss += lam_b * float((scale * bias.double().numpy() ** 2).sum())
    return loss


def half_step(model: ALS, side: str, matrix: sp.csr_matrix) -> None:
    """One half-epoch of `model` on `matrix` ("users" or "items"), as training runs it."""
    half_epoch(LocalStrategy(model, matrix), side)


CASES = [
    (weighting, use_bias, n_factors)
    for weighting in ("hkv", "ials", "explicit")
    for use_bias in (False, True)
    for n_factors in (6, 24)  # 6: mostly the direct path; 24: mostly Woodbury (n < f)
]


def assert_fold_in_matches_float64_reference(weighting, use_bias, n_factors, device="cpu"):
    dense = random_matrix()
    model = ALS(
        n_factors=n_factors,
        regularization=0.1,
        bias_regularization=0.05,
        weighting=weighting,
        alpha=2.0,
        alpha0=0.1,
        use_bias=use_bias,
        iterations=2,
        device=device,
    ).fit(sp.csr_matrix(dense))
    xs, bs = reference_user_update(model, dense)
    factors, bias = model.fold_in_factors(sp.csr_matrix(dense))
    assert factors.device.type == device
    assert np.abs(factors.double().cpu().numpy() - xs).max() / np.abs(xs).max() < 1e-5
    if use_bias:
        assert np.abs(bias.double().cpu().numpy() - bs).max() / np.abs(bs).max() < 1e-5


def explicit_problem(seed=0, n_users=120, n_items=90, rank=3, density=0.25):
    """Planted low-rank ratings with noise: a train and a held-out matrix."""
    rng = np.random.default_rng(seed)
    truth = 3.0 + rng.normal(size=(n_users, rank)) @ rng.normal(size=(rank, n_items)) / 1.5
    observed = rng.random((n_users, n_items)) < density
    ratings = np.where(observed, truth + rng.normal(scale=0.8, size=truth.shape), 0.0)
    held_out = observed & (rng.random(truth.shape) < 0.2)
    train = sp.csr_matrix(np.where(held_out, 0.0, ratings))
    rows, cols = np.nonzero(held_out)
    return train, rows, cols, ratings[rows, cols]


def brute_force_top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest finite scores per row (ties by lower id), -1 padded."""
    out = np.full((scores.shape[0], k), -1)
    for r, row in enumerate(scores):
        order = [j for j in np.lexsort((np.arange(row.size), -row)) if np.isfinite(row[j])]
        out[r, : min(k, len(order))] = order[:k]
    return out
