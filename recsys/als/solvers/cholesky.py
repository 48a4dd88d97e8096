"""The exact solver: closed-form per-row solutions, choosing the cheaper exact path per chunk.

Both paths work in the eigenbasis of G = F^T F = Q diag(L) Q^T (one float64 eigendecomposition per
half-epoch). There the shared part of every row's matrix, a * G + lambda_u I, is the diagonal
m_u = a * L + lambda_u, even though lambda_u differs per row; the fixed side is rotated once,
Fq = F Q (one GEMM), and every chunk gathers its rows Zq from Fq. Scaling the gathered rows in
place, W = D^(1/2) Zq M^(-1/2), turns each row's system into

    (I + W^T W) x~ = c,   c = M^(-1/2) b,   x' = M^(-1/2) x~,

a well-conditioned matrix with unit shared part, solved by one of two exact paths:

- direct (rows with many entries): I + W^T W, k x k, one bmm for the chunk, batched Cholesky.
- Woodbury (rows with n < k entries, most rows in practice):
  (I + W^T W)^-1 c = c - W^T (I + W W^T)^-1 W c, so each row needs only an n x n Cholesky.

Both are exact; the result is rotated back with one GEMM per half-epoch.

Posterior draws (perturb-and-MAP): adding sigma * (W^T e + z) to c, with e and z standard normal,
gives the right-hand side covariance sigma^2 (I + W^T W), so the same solve returns
x~ ~ N((I + W^T W)^-1 c, sigma^2 (I + W^T W)^-1), i.e. x ~ N(A^-1 b, sigma^2 A^-1) exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recsys.als.batching import Bucket
from recsys.als.solvers import SOLVERS
from recsys.als.solvers.base import HalfProblem, Solver


@dataclass
class _Eigenbasis:
    eigenvalues: torch.Tensor  # (k,) L of the shared matrix a * G (+ P)
    rotation: torch.Tensor  # (k, k) Q
    rotated_fixed: torch.Tensor  # (n_fixed + 1, k) F Q, with the zero padding row
    rotated_offset_rhs: torch.Tensor  # (k,) Q^T a F^T o


def _cholesky_solve(
    matrices: torch.Tensor, rhs: torch.Tensor, factor: torch.Tensor
) -> torch.Tensor:
    """Solve a batch of SPD systems, factorising into the scratch tensor `factor`; raise a clear
    error when one is not positive definite."""
    info = torch.empty(matrices.shape[0], dtype=torch.int32, device=matrices.device)
    torch.linalg.cholesky_ex(matrices, out=(factor, info))
    if bool((info > 0).any()):
        raise FloatingPointError(
            "a per-row system is not positive definite (singular normal equations); "
            "increase regularization or use dtype='float64'"
        )
    return torch.cholesky_solve(rhs.unsqueeze(-1), factor).squeeze(-1)


def _rhs_noise(w: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """W^T e + z for standard normal e (B, n) and z (B, k): covariance I + W^T W per row.

    Padding rows of W are zero, so their e contributes nothing.
    """
    b, n, k = w.shape
    e = torch.randn(b, 1, n, generator=generator, device=w.device, dtype=w.dtype)
    z = torch.randn(b, k, generator=generator, device=w.device, dtype=w.dtype)
    return torch.bmm(e, w).squeeze(1) + z


@SOLVERS.register("cholesky")
@dataclass
class CholeskySolver(Solver):
    """Exact least squares per row (Woodbury for short rows, direct Cholesky for long ones)."""

    def prepare(self, problem: HalfProblem) -> _Eigenbasis:
        fixed = problem.fixed
        k = problem.rank
        if not self._rotates(problem):  # no shared term: keep the identity basis
            eye = torch.eye(k, dtype=fixed.dtype, device=fixed.device)
            zeros = torch.zeros(k, dtype=fixed.dtype, device=fixed.device)
            return _Eigenbasis(zeros, eye, problem.fixed_padded, problem.offset_rhs)
        evals, evecs = torch.linalg.eigh(problem.shared.double())
        rotation = evecs.to(fixed.dtype)
        return _Eigenbasis(
            eigenvalues=evals.clamp_min(0.0).to(fixed.dtype),
            rotation=rotation,
            rotated_fixed=problem.fixed_padded @ rotation,
            rotated_offset_rhs=problem.offset_rhs @ rotation,
        )

    def finish(self, problem: HalfProblem, state: _Eigenbasis, out: torch.Tensor) -> torch.Tensor:
        return out @ state.rotation.T if self._rotates(problem) else out

    @staticmethod
    def _rotates(problem: HalfProblem) -> bool:
        """Whether rows share a matrix term (a > 0 or a prior), so the eigenbasis is needed."""
        return problem.all_pairs_weight != 0.0 or problem.prior_precision is not None

    @staticmethod
    def use_woodbury(width: int, rank: int) -> bool:
        """Woodbury costs ~n^2 k + n^3/3 per row, direct ~n k^2 + k^3/3: pick the cheaper."""
        return width * width * rank + width**3 / 3 < width * rank * rank + rank**3 / 3

    def bytes_per_row(self, problem: HalfProblem, bucket: Bucket) -> int:
        n, k = bucket.width, problem.rank
        size = problem.fixed.element_size()
        inner = n * n if self.use_woodbury(n, k) else k * k
        return size * (2 * n * k + 2 * inner + 6 * k + 6 * n)

    def solve_chunk(
        self, problem: HalfProblem, state: _Eigenbasis, chunk: Bucket, current: torch.Tensor
    ) -> torch.Tensor:
        d, h = problem.entry_terms(chunk)
        m = state.eigenvalues + problem.row_reg[chunk.rows, None]  # (B, k) shared diagonal
        if not bool((m > 0).all()):
            raise FloatingPointError(
                "a per-row system is singular (regularization 0 and no all-pairs weight); "
                "set regularization > 0"
            )
        m_isqrt = m.rsqrt()
        ws = self.workspace
        b, n, k = len(chunk), chunk.width, problem.rank
        # (B, n, k) gathered rows Zq, zero in padding
        w = chunk.gather(state.rotated_fixed, out=ws.take("gather", (b, n, k), m))
        if problem.weighting.unit_weights:  # d = 1 on observed entries: D^1/2 is the identity
            u = h
        else:
            sqrt_d = d.sqrt()
            w.mul_(sqrt_d.unsqueeze(-1))
            # padding and zero-weight entries have d = h = 0
            u = torch.where(d > 0, h / sqrt_d.clamp_min(torch.finfo(d.dtype).tiny), 0.0)
        w.mul_(m_isqrt.unsqueeze(1))  # W = D^1/2 Zq M^-1/2
        # c = M^-1/2 (Zq^T h - r0) = W^T (h / sqrt d) - M^-1/2 r0
        c = torch.bmm(u.unsqueeze(1), w).squeeze(1) - m_isqrt * state.rotated_offset_rhs
        if problem.noise_scale > 0:
            c += problem.noise_scale * _rhs_noise(w, problem.generator)
        if self.use_woodbury(chunk.width, problem.rank):
            s = torch.bmm(w, w.transpose(1, 2), out=ws.take("system", (b, n, n), m))
            s.diagonal(dim1=1, dim2=2).add_(1.0)
            factor = ws.take("factor", (b, n, n), m)
            y = _cholesky_solve(s, torch.bmm(w, c.unsqueeze(-1)).squeeze(-1), factor)
            solution = c - torch.bmm(y.unsqueeze(1), w).squeeze(1)
        else:
            a_mat = torch.bmm(w.transpose(1, 2), w, out=ws.take("system", (b, k, k), m))
            a_mat.diagonal(dim1=1, dim2=2).add_(1.0)
            solution = _cholesky_solve(a_mat, c, ws.take("factor", (b, k, k), m))
        return m_isqrt * solution
