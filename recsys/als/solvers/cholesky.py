"""The exact solver: closed-form per-row solutions, choosing the cheaper exact path per chunk.

Both paths work in the eigenbasis of G = F^T F = Q diag(L) Q^T (one float64 eigendecomposition per
half-epoch). There the shared part of every row's matrix, a * G + lambda_u I, is the diagonal
m_u = a * L + lambda_u, even though lambda_u differs per row; the fixed side is rotated once,
Fq = F Q (one GEMM), and every chunk gathers its rows Zq from Fq.

- direct (rows with n >= k entries): A'_u = diag(m_u) + Zq^T D Zq, built for the whole chunk with
  one bmm and solved by batched Cholesky.
- Woodbury (rows with n < k entries, most rows in practice): with V = D^(1/2) Zq,
  A'^-1 = M^-1 - M^-1 V^T (I + V M^-1 V^T)^-1 V M^-1, so each row needs only an n x n Cholesky.

Both are exact; the result is rotated back with one GEMM per half-epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recsys.als.batching import Bucket
from recsys.als.solvers import SOLVERS
from recsys.als.solvers.base import HalfProblem, Solver


@dataclass
class _Eigenbasis:
    eigenvalues: torch.Tensor  # (k,) L, scaled by a
    rotation: torch.Tensor  # (k, k) Q
    rotated_fixed: torch.Tensor  # (n_fixed, k) F Q
    rotated_offset_rhs: torch.Tensor  # (k,) Q^T a F^T o


def _cholesky_solve(matrices: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve a batch of SPD systems; raise a clear error when one is not positive definite."""
    factor, info = torch.linalg.cholesky_ex(matrices)
    if bool((info > 0).any()):
        raise FloatingPointError(
            "a per-row system is not positive definite (singular normal equations); "
            "increase regularization or use dtype='float64'"
        )
    return torch.cholesky_solve(rhs.unsqueeze(-1), factor).squeeze(-1)


@SOLVERS.register("cholesky")
@dataclass
class CholeskySolver(Solver):
    """Exact least squares per row (Woodbury for short rows, direct Cholesky for long ones)."""

    def prepare(self, problem: HalfProblem) -> _Eigenbasis:
        a = problem.all_pairs_weight
        fixed = problem.fixed
        k = problem.rank
        if a == 0.0:  # no shared term: any orthonormal basis diagonalises it, keep the identity
            eye = torch.eye(k, dtype=fixed.dtype, device=fixed.device)
            zeros = torch.zeros(k, dtype=fixed.dtype, device=fixed.device)
            return _Eigenbasis(zeros, eye, fixed, problem.offset_rhs)
        evals, evecs = torch.linalg.eigh(problem.gram.double())
        rotation = evecs.to(fixed.dtype)
        return _Eigenbasis(
            eigenvalues=(a * evals.clamp_min(0.0)).to(fixed.dtype),
            rotation=rotation,
            rotated_fixed=fixed @ rotation,
            rotated_offset_rhs=problem.offset_rhs @ rotation,
        )

    def finish(self, problem: HalfProblem, state: _Eigenbasis, out: torch.Tensor) -> torch.Tensor:
        if problem.all_pairs_weight == 0.0:
            return out
        return out @ state.rotation.T

    @staticmethod
    def use_woodbury(width: int, rank: int) -> bool:
        """Woodbury costs ~n^2 k + n^3/3 per row, direct ~n k^2 + k^3/3: pick the cheaper."""
        return width * width * rank + width**3 / 3 < width * rank * rank + rank**3 / 3

    def bytes_per_row(self, problem: HalfProblem, bucket: Bucket) -> int:
        n, k = bucket.width, problem.rank
        size = problem.fixed.element_size()
        inner = n * n if self.use_woodbury(n, k) else k * k
        return size * (3 * n * k + 2 * inner + 4 * k + 4 * n)

    def solve_chunk(
        self, problem: HalfProblem, state: _Eigenbasis, chunk: Bucket, current: torch.Tensor
    ) -> torch.Tensor:
        d, h = problem.entry_terms(chunk)
        zq = state.rotated_fixed[chunk.cols]  # (B, n, k)
        m = state.eigenvalues + problem.row_reg[chunk.rows, None]  # (B, k)
        rhs = torch.bmm(h.unsqueeze(1), zq).squeeze(1) - state.rotated_offset_rhs
        # Woodbury needs the shared part invertible (m > 0): true unless a = 0 and lambda_u = 0.
        if self.use_woodbury(chunk.width, problem.rank) and bool((m > 0).all()):
            return self._woodbury(zq, d, m, rhs)
        a_mat = torch.bmm(zq.transpose(1, 2) * d.unsqueeze(1), zq)
        a_mat.diagonal(dim1=1, dim2=2).add_(m)
        return _cholesky_solve(a_mat, rhs)

    @staticmethod
    def _woodbury(
        zq: torch.Tensor, d: torch.Tensor, m: torch.Tensor, rhs: torch.Tensor
    ) -> torch.Tensor:
        """x = M^-1 b - M^-1 V^T S^-1 V M^-1 b with S = I + V M^-1 V^T and V = D^(1/2) Zq."""
        m_inv = 1.0 / m
        v = zq * d.sqrt().unsqueeze(-1)  # (B, n, k)
        x0 = m_inv * rhs
        s = torch.bmm(v * m_inv.unsqueeze(1), v.transpose(1, 2))  # (B, n, n)
        s.diagonal(dim1=1, dim2=2).add_(1.0)
        y = _cholesky_solve(s, torch.bmm(v, x0.unsqueeze(-1)).squeeze(-1))
        return x0 - m_inv * torch.bmm(y.unsqueeze(1), v).squeeze(1)
