"""Warm-started conjugate gradient (Takacs et al. 2011): a few steps per row per half-epoch.

Approximate but cheap: the matrix a * G + F_u^T D_u F_u + lambda_u I is never formed; each step
costs two batched matrix-vector products with the gathered rows F_u plus one product with G.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from recsys.als.batching import Bucket
from recsys.als.registry import require
from recsys.als.solvers import SOLVERS
from recsys.als.solvers.base import HalfProblem, Solver


@SOLVERS.register("cg")
@dataclass
class ConjugateGradientSolver(Solver):
    """`cg_steps` CG iterations from the previous vectors (3 is the usual speed/quality
    trade-off)."""

    cg_steps: int = 3

    #: 40 steps reach the exact solution to 1e-3 on the small systems of the contract tests
    converged_params: ClassVar[dict[str, Any]] = {"cg_steps": 40}

    def __post_init__(self) -> None:
        require(int(self.cg_steps) >= 1, "cg_steps", self.cg_steps, "must be >= 1")

    def bytes_per_row(self, problem: HalfProblem, bucket: Bucket) -> int:
        n, k = bucket.width, problem.rank
        return problem.fixed.element_size() * (2 * n * k + 8 * k + 4 * n)

    def solve_chunk(
        self, problem: HalfProblem, state: object, chunk: Bucket, current: torch.Tensor
    ) -> torch.Tensor:
        if problem.noise_scale > 0:
            raise ValueError(
                "posterior sampling needs exact solves; use solver='cholesky' (cg only "
                "approximates the mean of each row's posterior)"
            )
        d, h = problem.entry_terms(chunk)
        shape = (len(chunk), chunk.width, problem.rank)
        z = chunk.gather(problem.fixed_padded, out=self.workspace.take("gather", shape, current))
        reg = problem.row_reg[chunk.rows, None]
        shared = problem.shared

        def matvec(p: torch.Tensor) -> torch.Tensor:
            zp = torch.bmm(z, p.unsqueeze(-1)).squeeze(-1) * d  # (B, n)
            return p @ shared + torch.bmm(zp.unsqueeze(1), z).squeeze(1) + reg * p

        rhs = torch.bmm(h.unsqueeze(1), z).squeeze(1) - problem.offset_rhs
        x = current.clone()
        r = rhs - matvec(x)
        p = r.clone()
        rr = (r * r).sum(1, keepdim=True)
        tiny = torch.finfo(x.dtype).tiny
        for _ in range(int(self.cg_steps)):
            ap = matvec(p)
            step = rr / (p * ap).sum(1, keepdim=True).clamp_min(tiny)
            x = x + step * p
            r = r - step * ap
            rr_new = (r * r).sum(1, keepdim=True)
            p = r + (rr_new / rr.clamp_min(tiny)) * p
            rr = rr_new
        return x
