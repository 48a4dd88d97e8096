"""The exact ALS objective, computed without a dense users x items matrix.

Scores are s_uj = x_u . y_j + b_u + b_j + mu. The all-pairs term a * sum_{u,j} s_uj^2 comes from the
Gram trick: with X^ = [X, b_u, 1] and Y^ = [Y, 1, b_j + mu], sum s^2 = <X^T X^, Y^T Y^> (Frobenius),
which costs O((users + items) k^2). The observed terms need one dot product per nonzero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recsys.als.weightings.base import Weighting


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


def als_loss(
    rows: torch.Tensor,
    cols: torch.Tensor,
    values: torch.Tensor,
    users: Side,
    items: Side,
    global_bias: float,
    weighting: Weighting,
    bias_reg_ratio: float,
    memory_budget_bytes: int = 1 << 28,
) -> dict[str, float]:
    """Loss components: `observed`, `unobserved`, `regularization` and their sum `loss`.

    `observed` is the full weighted error on the observed entries, `unobserved` the all-pairs term
    on the rest; `bias_reg_ratio` = bias_regularization / regularization. The observed scores are
    computed in chunks of nonzeros whose gathered factors fit in `memory_budget_bytes`.
    """
    a = weighting.all_pairs_weight
    obs_quadratic = 0.0  # sum over observed of d s^2 - 2 g s + e
    obs_square = 0.0  # sum over observed of s^2
    row_bytes = 2 * users.factors.shape[1] * users.factors.element_size() + 64
    chunk_size = max(1024, memory_budget_bytes // row_bytes)
    for start in range(0, rows.shape[0], chunk_size):
        u, i, v = (t[start : start + chunk_size] for t in (rows, cols, values))
        s = (users.factors[u] * items.factors[i]).sum(1) + global_bias
        if users.bias is not None:
            s = s + users.bias[u] + items.bias[i]
        s, v = s.double(), v.double()
        d, g = weighting.observed_weight(v), weighting.observed_target(v)
        e = weighting.observed_constant(v)
        obs_quadratic += float((d * s * s - 2.0 * g * s + e).sum())
        obs_square += float((s * s).sum())

    ones_u = users.factors.new_ones(users.factors.shape[0])
    ones_i = items.factors.new_ones(items.factors.shape[0])
    item_offset = items.bias + global_bias if items.bias is not None else ones_i * global_bias
    x_hat = users.augmented(users.bias, ones_u)
    y_hat = items.augmented(ones_i, item_offset)
    all_square = float(((x_hat.T @ x_hat) * (y_hat.T @ y_hat)).sum())

    reg = 0.0
    for side in (users, items):
        norms = side.factors.double().pow(2).sum(1)
        if side.bias is not None:
            norms = norms + bias_reg_ratio * side.bias.double().pow(2)
        reg += float((side.reg_scale.double() * norms).sum())

    observed = obs_quadratic + a * obs_square
    unobserved = a * (all_square - obs_square)
    return {
        "loss": observed + unobserved + reg,
        "observed": observed,
        "unobserved": unobserved,
        "regularization": reg,
    }
