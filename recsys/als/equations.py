"""The normal equations of one side given the other: what training, posterior sampling and
fold-in all solve.

A side's rows (users, or items in the other half-epoch) are solved against the fixed other side
F. With biases F gets a column of constant c (``c^2 = lambda / lambda_b`` keeps one lambda for
the factors and the bias, and the solved bias is the last unknown times c); the fixed side's
biases plus the global mean are the score offsets the solvers subtract.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from recsys.als.batching import Bucket, build_buckets
from recsys.als.errors import TrainingError
from recsys.als.solvers import HalfProblem, Solver
from recsys.als.solvers.base import Workspace
from recsys.als.weightings import Weighting


@dataclass
class Rows:
    """One side's interaction structure, fixed during a fit: degree buckets, the rows without
    entries (their vectors are zero) and every row's regularization lambda * (n + a N)^nu."""

    buckets: list[Bucket]
    empty: torch.Tensor
    reg: torch.Tensor

    def without_regularization(self) -> Rows:
        """The same rows with lambda_u = 0 (a learned prior replaces it)."""
        return dataclasses.replace(self, reg=torch.zeros_like(self.reg))


@dataclass
class NormalEquations:
    """Everything a side's solve needs besides the factors: the parts and the model's settings."""

    weighting: Weighting
    solver: Solver
    n_factors: int
    regularization: float
    bias_regularization: float
    reg_exponent: float
    memory_budget_mb: float
    global_bias: float
    device: torch.device
    dtype: torch.dtype

    @property
    def bias_column(self) -> float:
        """Value c of the fixed side's bias column: c^2 = lambda / lambda_b keeps one lambda."""
        return math.sqrt(self.regularization / self.bias_regularization)

    @property
    def bias_reg_ratio(self) -> float:
        """lambda_b / lambda, the loss's weight of the squared biases."""
        return self.bias_regularization / self.regularization if self.regularization else 0.0

    def rows(self, matrix: sp.csr_matrix) -> Rows:
        """Buckets, empty rows and per-row regularization of the rows of `matrix`."""
        buckets, empty = build_buckets(matrix, self.weighting, self.device, self.dtype)
        counts = torch.from_numpy(np.diff(matrix.indptr).astype(np.float64))
        scale = (counts + self.weighting.all_pairs_weight * matrix.shape[1]) ** self.reg_exponent
        reg = (self.regularization * scale).to(self.dtype)
        if not bool(torch.isfinite(reg).all()):
            raise TrainingError(
                f"regularization={self.regularization:g} times the per-row scale "
                f"(n + a * N) ** {self.reg_exponent:g} (at most {float(scale.max()):g}) exceeds "
                f"the range of {str(self.dtype).removeprefix('torch.')}: lower regularization"
            )
        return Rows(buckets, empty, reg.to(self.device))

    def fixed_side(
        self, factors: torch.Tensor, bias: torch.Tensor | None, workspace: Workspace | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The fixed side F (with the bias column c when biases are on) and its score offsets;
        F is built in `workspace` when given (reused every half-epoch of a fit)."""
        if bias is None:
            offsets = (
                None if self.global_bias == 0 else torch.full_like(factors[:, 0], self.global_bias)
            )
            return factors, offsets
        return with_column(factors, self.bias_column, "fixed", workspace), bias + self.global_bias

    def solve(
        self,
        rows: Rows,
        fixed_factors: torch.Tensor,
        fixed_bias: torch.Tensor | None,
        current_factors: torch.Tensor,
        current_bias: torch.Tensor | None,
        *,
        noise_scale: float = 0.0,
        generator: torch.Generator | None = None,
        gram: torch.Tensor | None = None,
        prior: tuple[torch.Tensor, torch.Tensor] | None = None,
        workspace: Workspace | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Solve every row of one side against the other side; return factors and biases.

        They are views of the solver's scratch, valid until its next solve: callers copy them
        (a fit into its own factor tensors, in place). `workspace` holds the stacked inputs
        across the half-epochs of a fit.

        With `noise_scale` sigma > 0 each row is drawn from its conditional posterior
        N(solution, sigma^2 A_u^-1) instead (see `ALS.sample_posterior`). `gram` is the fixed
        side's F^T F when the caller has it already (summed across ranks in sharded fits).
        `prior` = (P, mu) adds a Gaussian prior N(mu, P^-1) shared by all rows (in the solve's
        coordinates [x, b / c]).
        """
        fixed, offsets = self.fixed_side(fixed_factors, fixed_bias, workspace)
        problem = HalfProblem(
            fixed=fixed,
            all_pairs_weight=self.weighting.all_pairs_weight,
            offsets=offsets,
            row_reg=rows.reg,
            weighting=self.weighting,
            buckets=rows.buckets,
            memory_budget_bytes=int(self.memory_budget_mb * 2**20),
            noise_scale=noise_scale,
            generator=generator,
            gram=gram,
            prior_precision=None if prior is None else prior[0],
            prior_mean=None if prior is None else prior[1],
        )
        c = self.bias_column if current_bias is not None else 1.0
        current = None
        if self.solver.warm_start:
            current = (
                current_factors
                if current_bias is None
                else with_column(current_factors, current_bias / c, "current", workspace)
            )
        solved = self.solver.solve(problem, current)
        solved[rows.empty] = 0
        f = self.n_factors
        return solved[:, :f], (None if current_bias is None else solved[:, f].mul_(c))

    def solve_copy(
        self, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`solve` with the result copied out of the solver's scratch."""
        factors, bias = self.solve(*args, **kwargs)
        return factors.clone(), None if bias is None else bias.clone()


def with_column(
    factors: torch.Tensor, column: float | torch.Tensor, name: str, workspace: Workspace | None
) -> torch.Tensor:
    """[factors, column] (n, f + 1), in `workspace` buffer `name` when given."""
    shape = (factors.shape[0], factors.shape[1] + 1)
    out = factors.new_empty(shape) if workspace is None else workspace.take(name, shape, factors)
    out[:, :-1] = factors
    out[:, -1] = column
    return out
