"""The exact ALS objective, computed without a dense users x items matrix.

Scores are s_uj = x_u . y_j + b_u + b_j + mu. The all-pairs term a * sum_{u,j} s_uj^2 comes from the
Gram trick: with X^ = [X, b_u, 1] and Y^ = [Y, 1, b_j + mu], sum s^2 = <X^T X^, Y^T Y^> (Frobenius),
which costs O((users + items) k^2). The observed terms need one dot product per nonzero.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from recsys.als.weightings.base import Weighting

#: the factors and biases (None without biases) of the rows or the columns of observed entries
Scored = tuple[torch.Tensor, torch.Tensor | None]


@dataclass
class Side:
    """One side's factors, biases and per-row regularization scale lambda * (n + a N)^nu."""

    factors: torch.Tensor  # (n, f)
    bias: torch.Tensor | None  # (n,)
    reg_scale: torch.Tensor  # (n,) lambda_u

    def augmented(self, first: torch.Tensor | None, second: torch.Tensor | None) -> torch.Tensor:
        """[factors, first, second] with missing columns as ones/zeros for the Gram trick."""
        n = self.factors.shape[0]
        cols = [self.factors]
        for extra in (first, second):
            cols.append((extra if extra is not None else self.factors.new_zeros(n)).unsqueeze(1))
        return torch.cat(cols, dim=1).double()


@dataclass
class Observed:
    """The observed entries in CSR order: row and column indices, values, and the pattern as a
    torch sparse CSR tensor (for sampled dense-dense products)."""

    rows: torch.Tensor
    cols: torch.Tensor
    values: torch.Tensor
    pattern: torch.Tensor

    @classmethod
    def from_csr(cls, matrix: sp.csr_matrix, device: torch.device, dtype: torch.dtype) -> Observed:
        indptr = torch.from_numpy(matrix.indptr.astype(np.int64))
        cols = torch.from_numpy(matrix.indices.astype(np.int64))
        rows = torch.repeat_interleave(torch.arange(matrix.shape[0]), indptr.diff())
        with warnings.catch_warnings():  # torch flags sparse CSR tensors as beta
            warnings.simplefilter("ignore", UserWarning)
            pattern = torch.sparse_csr_tensor(
                indptr, cols, torch.zeros(matrix.nnz, dtype=dtype), size=matrix.shape
            ).to(device)
        values = torch.from_numpy(matrix.data).to(device, dtype)
        return cls(rows.to(device), cols.to(device), values, pattern)

    def dot(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """left[r] . right[c] for every observed (r, c), without gathering rows (one SDDMM)."""
        return torch.sparse.sampled_addmm(self.pattern, left, right.T, beta=0.0).values()


def side_regularization(side: Side, bias_reg_ratio: float) -> torch.Tensor:
    """sum_u lambda_u (|x_u|^2 + bias_reg_ratio * b_u^2) of one side, a float64 scalar tensor.

    The row norms are reduced in the factors' dtype (within 1e-6 of float64 for float32) and
    squared in float64: a float64 copy of the table cost 0.1-0.5 s at 512 factors on a VM where
    fresh memory is expensive, more than the rest of the loss.
    """
    norms = torch.linalg.vector_norm(side.factors, dim=1).double().pow(2)
    if side.bias is not None:
        norms = norms + bias_reg_ratio * side.bias.double().pow(2)
    return (side.reg_scale.double() * norms).sum()


def loss_sums(
    observed: Observed,
    scored: tuple[Scored, Scored],
    users: Side,
    items: Side,
    global_bias: float,
    weighting: Weighting,
    bias_reg_ratio: float,
) -> torch.Tensor:
    """The additive parts of the loss as one float64 vector, to be summed across shards.

    `observed` holds entries (row, col) scored as rows . cols + row bias + col bias + mu with
    `scored` = (row side, column side) (users x items in one process; a shard's items x all
    users in a sharded fit). `users` and `items` are the rows whose regularization and Gram
    matrices this process contributes (all of them in one process, its slices in a sharded fit).
    Every part is a sum over rows, so the parts of disjoint shards add up to the whole model's;
    :func:`combine` turns them into the loss.
    """
    (left, left_bias), (right, right_bias) = scored
    s = observed.dot(left, right) + global_bias
    if left_bias is not None:
        s = s + left_bias[observed.rows] + right_bias[observed.cols]
    s, v = s.double(), observed.values.double()
    d, g = weighting.observed_weight(v), weighting.observed_target(v)
    e = weighting.observed_constant(v)
    reg = side_regularization(users, bias_reg_ratio) + side_regularization(items, bias_reg_ratio)
    ones_u = users.factors.new_ones(users.factors.shape[0])
    ones_i = items.factors.new_ones(items.factors.shape[0])
    item_offset = items.bias + global_bias if items.bias is not None else ones_i * global_bias
    x_hat = users.augmented(users.bias, ones_u)
    y_hat = items.augmented(ones_i, item_offset)
    # sum of d s^2 - 2 g s + e, sum of s^2, the regularization, then X^T X and Y^T Y
    head = torch.stack([(d * s * s - 2.0 * g * s + e).sum(), (s * s).sum(), reg]).to(x_hat)
    return torch.cat([head, (x_hat.T @ x_hat).flatten(), (y_hat.T @ y_hat).flatten()])


def combine(sums: torch.Tensor, weighting: Weighting) -> dict[str, float]:
    """Loss components from the (summed) parts of :func:`loss_sums`: `observed` is the full
    weighted error on the observed entries, `unobserved` the all-pairs term on the rest, and
    `loss` their sum with the `regularization`. The all-pairs sum of squared scores is the
    Frobenius product <X^T X, Y^T Y> of the augmented sides (the Gram trick)."""
    a = weighting.all_pairs_weight
    k2 = (sums.numel() - 3) // 2
    obs_quadratic, obs_square, regularization = sums[:3].tolist()
    all_square = float((sums[3 : 3 + k2] * sums[3 + k2 :]).sum())
    observed = obs_quadratic + a * obs_square
    unobserved = a * (all_square - obs_square)
    return {
        "loss": observed + unobserved + regularization,
        "observed": observed,
        "unobserved": unobserved,
        "regularization": regularization,
    }


def als_loss(
    observed: Observed,
    users: Side,
    items: Side,
    global_bias: float,
    weighting: Weighting,
    bias_reg_ratio: float,
) -> dict[str, float]:
    """Loss components of the whole model in one process (`observed`: users x items); see
    :func:`combine`. `bias_reg_ratio` = bias_regularization / regularization."""
    sums = loss_sums(
        observed,
        ((users.factors, users.bias), (items.factors, items.bias)),
        users,
        items,
        global_bias,
        weighting,
        bias_reg_ratio,
    )
    return combine(sums, weighting)
