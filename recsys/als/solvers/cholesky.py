"""The exact solver: closed-form per-row solutions, choosing the cheaper exact path per chunk.

Both paths work in the eigenbasis of G = F^T F = Q diag(L) Q^T (one float64 eigendecomposition per
half-epoch). There the shared part of every row's matrix, a * G + lambda_u I, is the diagonal
m_u = a * L + lambda_u, even though lambda_u differs per row; the fixed side is rotated once,
Fq = F Q (one GEMM), and every chunk gathers its rows Zq from Fq. Scaling the gathered rows in
place, W = D^(1/2) Zq M^(-1/2), turns each row's system into

    (I + W^T W) x~ = c,   c = M^(-1/2) b,   x' = M^(-1/2) x~,

a well-conditioned matrix with unit shared part (when every row has the same lambda, hence the
same M, the table Fq is scaled by M^(-1/2) once instead of each gathered row), solved by one of
two exact paths:

- direct (rows with many entries): I + W^T W, k x k, one bmm for the chunk, batched Cholesky.
- Woodbury (rows with n < k entries, most rows in practice): with c = W^T u - r (u the scaled
  entry targets, r = M^-1/2 r0 the shared right-hand side term) and S = W W^T,
  (I + W^T W)^-1 c = W^T (I + S)^-1 (u + W r) - r, so each row needs only an n x n Cholesky
  and one or two batched matrix-vector products (three for the textbook form
  c - W^T (I + S)^-1 W c, and those dominate short rows).

Both are exact; the result is rotated back with one GEMM per half-epoch.

Posterior draws (perturb-and-MAP): replacing u by u + sigma e and r by r - sigma z, with e and z
standard normal, adds sigma * (W^T e + z) to c: right-hand side covariance sigma^2 (I + W^T W), so
the same solve returns x~ ~ N((I + W^T W)^-1 c, sigma^2 (I + W^T W)^-1), i.e.
x ~ N(A^-1 b, sigma^2 A^-1) exactly.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch

from recsys.als.batching import Bucket
from recsys.als.errors import TrainingError
from recsys.als.solvers import SOLVERS
from recsys.als.solvers.base import HalfProblem, Solver


@dataclass
class _Eigenbasis:
    eigenvalues: torch.Tensor  # (k,) L of the shared matrix a * G (+ P)
    rotation: torch.Tensor  # (k, k) Q
    rotated_fixed: torch.Tensor  # (n_fixed + 1, k) F Q, with the zero padding row
    rotated_offset_rhs: torch.Tensor  # (k,) Q^T a F^T o
    #: set on the device when a chunk's matrix is not positive definite; read once per solve
    #: (a per-chunk check would stall the GPU at every chunk waiting for the host)
    failed: torch.Tensor  # () bool
    #: whether `rotated_fixed` is F Q M^-1/2 already (all rows share lambda, hence M)
    prescaled: bool
    #: each chunk's largest Cholesky pivot (device scalars, read once per solve): the scaled
    #: systems I + W^T W have every eigenvalue >= 1, so its square bounds the condition number
    #: from below
    pivots: list[torch.Tensor] = field(default_factory=list)


def _cholesky_solve(
    matrices: torch.Tensor, rhs: torch.Tensor, scratch: torch.Tensor, state: _Eigenbasis
) -> None:
    """Solve a batch of SPD systems in place: `matrices` (B, n, n, contiguous; only the upper
    triangle is read) is overwritten by its Cholesky factor and `rhs` (B, n, 1) by the solution
    (`scratch`, like `rhs`, holds the half-way result). `state.failed` is set when a matrix is
    not positive definite and the chunk's largest pivot is kept in `state.pivots`; the caller
    checks both (`_check_solves`) once all chunks ran.

    LAPACK works on column-major matrices; a symmetric matrix is its own transpose, so the
    column-major view `matrices.mT` is factorised in place, without the column-major copy that
    torch makes of a row-major input (a fresh batch of matrices per call). Two triangular solves
    follow, instead of `torch.cholesky_solve`, which copies the factor too.
    """
    factor = matrices.mT  # column-major; lower factor L after the call
    info = torch.empty(matrices.shape[0], dtype=torch.int32, device=matrices.device)
    torch.linalg.cholesky_ex(factor, out=(factor, info))
    failed = state.failed
    if failed.device.type == "cpu":  # chunk workers share `failed`: they only ever set it
        if info.any():
            failed.fill_(True)
    else:  # on the device, without a host sync per chunk (the GPU would idle at each)
        failed.logical_or_(info.any())
    state.pivots.append(factor.diagonal(dim1=-2, dim2=-1).amax())  # list.append: thread-safe
    torch.linalg.solve_triangular(factor, rhs, upper=False, out=scratch)
    torch.linalg.solve_triangular(factor.mT, scratch, upper=True, out=rhs)


#: condition numbers from which float64 keeps no correct digit either
WIDEST = 1.0 / torch.finfo(torch.float64).eps


def _check_solves(state: _Eigenbasis, dtype: torch.dtype) -> None:
    """Raise when a chunk's matrix was not positive definite, or when the systems were so badly
    conditioned that the solutions keep no correct digit, and warn from sqrt(1 / eps) on, where
    they keep half of them (one host sync for all three).

    Every scaled system I + W^T W has eigenvalues >= 1, so the square of its largest Cholesky
    pivot bounds its condition number from below; from 1 / eps of the dtype on (8.4e6 in
    float32) the rounding errors of the solve are as large as the solution.
    """
    ones = torch.ones((), dtype=dtype, device=state.failed.device)
    largest = torch.stack(state.pivots).amax() if state.pivots else ones
    failed, pivot = torch.stack([state.failed.to(largest.dtype), largest]).tolist()
    if failed:
        raise FloatingPointError(
            "a per-row system is not positive definite (singular normal equations); "
            "increase regularization or use dtype='float64'"
        )
    limit = 1.0 / torch.finfo(dtype).eps
    if math.sqrt(limit) <= pivot * pivot < limit:
        warnings.warn(
            f"the per-row systems are ill-conditioned (condition number at least "
            f"{pivot * pivot:.2g}): the solutions lose about half of the "
            f"{str(dtype).removeprefix('torch.')} digits and the observed weights swamp the "
            "regularization; raise regularization or lower alpha",
            RuntimeWarning,
            stacklevel=2,
        )
    if not pivot * pivot < limit:
        raise TrainingError(
            f"the per-row systems are too ill-conditioned for {str(dtype).removeprefix('torch.')} "
            f"(condition number at least {pivot * pivot:.2g}, beyond 1/eps = {limit:.2g}): their "
            "solutions keep no correct digit; raise regularization or lower the observed "
            "weights (alpha)" + (", or use dtype='float64'" if pivot * pivot < WIDEST else "")
        )


#: from this many rows on, `_gram_upper` computes three blocks of the product instead of all of it
#: (one 2,048-row batch at 30 rows: 1.9x slower in blocks; at 217-435 rows 0.74-0.82x the time)
BLOCKED_GRAM_MIN_ROWS = 192


def _gram_upper(a: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The upper triangle (and diagonal) of each a @ a^T, a: (B, n, m), into `out` (B, n, n);
    the strictly lower part is left undefined.

    The factorisation reads only that triangle (the lower one of the column-major view), so for
    large n three of the four n/2 x n/2 blocks are enough: 3/4 of the arithmetic (torch has no
    batched symmetric rank-k product). Small systems are computed whole, where one bmm call is
    faster than three.
    """
    n = a.shape[1]
    if n < BLOCKED_GRAM_MIN_ROWS:
        return torch.bmm(a, a.mT, out=out)
    h = n // 2
    top, bottom = a[:, :h], a[:, h:]
    torch.bmm(top, top.mT, out=out[:, :h, :h])
    torch.bmm(top, bottom.mT, out=out[:, :h, h:])
    torch.bmm(bottom, bottom.mT, out=out[:, h:, h:])
    return out


def _regularization_range(problem: HalfProblem) -> tuple[float, float]:
    """Smallest and largest lambda_u over the rows to solve (one device sync per half-epoch)."""
    regs = torch.cat([problem.row_reg[b.rows] for b in problem.buckets])
    low, high = torch.stack(torch.aminmax(regs)).tolist()
    return low, high


@SOLVERS.register("cholesky")
@dataclass
class CholeskySolver(Solver):
    """Exact least squares per row (Woodbury for short rows, direct Cholesky for long ones)."""

    warm_start = False
    exact = True

    def prepare(self, problem: HalfProblem) -> _Eigenbasis:
        fixed = problem.fixed
        k = problem.rank
        failed = torch.zeros((), dtype=torch.bool, device=fixed.device)
        if not self._rotates(problem):  # no shared term: keep the identity basis
            eigenvalues = torch.zeros(k, dtype=fixed.dtype, device=fixed.device)
            rotation = torch.eye(k, dtype=fixed.dtype, device=fixed.device)
        else:
            evals, evecs = torch.linalg.eigh(problem.shared.double())
            eigenvalues = evals.clamp_min(0.0).to(fixed.dtype)
            rotation = evecs.to(fixed.dtype)
        low, high = _regularization_range(problem) if problem.buckets else (1.0, 1.0)
        if not float(eigenvalues.min()) + low > 0:
            raise FloatingPointError(
                "a per-row system is singular: regularization is 0 and the term shared by all "
                "rows (the all-pairs weight times the fixed side's Gram matrix) is singular; "
                "set regularization > 0"
            )
        if not self._rotates(problem):
            return _Eigenbasis(
                eigenvalues, rotation, problem.fixed_padded, problem.offset_rhs, failed, False
            )
        # F Q and the zero padding row, in a buffer kept across half-epochs
        rotated = self.workspace.take("rotated", (fixed.shape[0] + 1, k), fixed)
        torch.mm(fixed, rotation, out=rotated[:-1])
        rotated[-1] = 0
        if low == high:  # one M for every row: scale the table once, not every gathered row
            rotated.mul_((eigenvalues + low).rsqrt_())
        return _Eigenbasis(
            eigenvalues=eigenvalues,
            rotation=rotation,
            rotated_fixed=rotated,
            rotated_offset_rhs=problem.offset_rhs @ rotation,
            failed=failed,
            prescaled=low == high,
        )

    def finish(self, problem: HalfProblem, state: _Eigenbasis, out: torch.Tensor) -> torch.Tensor:
        _check_solves(state, out.dtype)
        if self._rotates(problem):
            result = self.workspace.take("result", out.shape, out)
            return torch.mm(out, state.rotation.T, out=result)
        return super().finish(problem, state, out)

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
        return size * (n * k + inner + 4 * k + 6 * n)

    def solve_chunk(
        self, problem: HalfProblem, state: _Eigenbasis, chunk: Bucket, current: torch.Tensor | None
    ) -> torch.Tensor:
        ws = self.workspace
        like = state.rotated_fixed
        b, n, k = len(chunk), chunk.width, problem.rank
        # M^-1/2 of every row's shared diagonal m_u = L + lambda_u (B, k)
        m_isqrt = torch.add(
            state.eigenvalues, problem.row_reg[chunk.rows, None], out=ws.take("m", (b, k), like)
        ).rsqrt_()
        # (B, n, k) gathered rows Zq, zero in padding
        w = chunk.gather(state.rotated_fixed, out=ws.take("gather", (b, n, k), like))
        d, h = problem.entry_terms(chunk)
        # u: targets scaled like the rows of W (B, 1, n), in a buffer the solve may overwrite
        u = ws.take("u", (b, 1, n), like)
        # r = M^-1/2 r0, the shared right-hand side term (B, 1, k); None when zero
        r = None
        if problem.offsets is not None or problem.prior_precision is not None:
            r = (m_isqrt * state.rotated_offset_rhs).unsqueeze(1)
        if problem.weighting.unit_weights:  # d = 1 on observed entries: D^1/2 is the identity
            u.copy_(h.unsqueeze(1))
        else:
            if chunk.zero_weight:  # entries with d = 0 are in c but not in W^T u: move to r
                r = self._subtract_unweighted(w, d, h, m_isqrt, state.prescaled, r)
                h = torch.where(d > 0, h, 0.0)
            sqrt_d = d.sqrt()
            w.mul_(sqrt_d.unsqueeze(-1))
            torch.div(h, sqrt_d.clamp_min(torch.finfo(d.dtype).tiny), out=u.squeeze(1))
        if not state.prescaled:
            w.mul_(m_isqrt.unsqueeze(1))  # W = D^1/2 Zq M^-1/2
        if problem.noise_scale > 0:
            u, r = self._perturb(problem, u, r)
        if self.use_woodbury(n, k):
            s = _gram_upper(w, ws.take("system", (b, n, n), like))  # W W^T
            s.diagonal(dim1=1, dim2=2).add_(1.0)
            if r is not None:  # u + W r, as r^T W^T: the faster layout for bmm
                u.baddbmm_(r, w.mT)
            _cholesky_solve(s, u.mT, ws.take("half", (b, n, 1), like), state)
            x = torch.bmm(u, w, out=ws.take("rhs", (b, 1, k), like))  # W^T (I + S)^-1 (u + W r)
            if r is not None:
                x.sub_(r)
        else:
            x = torch.bmm(u, w, out=ws.take("rhs", (b, 1, k), like))  # c = W^T u - r
            if r is not None:
                x.sub_(r)
            s = _gram_upper(w.mT, ws.take("system", (b, k, k), like))  # W^T W
            s.diagonal(dim1=1, dim2=2).add_(1.0)
            _cholesky_solve(s, x.mT, ws.take("half", (b, k, 1), like), state)
        return x.squeeze(1).mul_(m_isqrt)

    @staticmethod
    def _subtract_unweighted(
        zq: torch.Tensor,
        d: torch.Tensor,
        h: torch.Tensor,
        m_isqrt: torch.Tensor,
        prescaled: bool,
        r: torch.Tensor | None,
    ) -> torch.Tensor:
        """r - M^-1/2 Zq^T h0, h0 the targets of the entries of weight d = 0 (B, 1, k).

        The right-hand side c = M^-1/2 Zq^T h - r is written W^T u - r with W = D^1/2 Zq M^-1/2
        and u = D^-1/2 h, which loses entries whose d is 0 (their row of W is zero); moving their
        part of Zq^T h into r keeps c exact. `zq` is the gathered (unscaled by D) rows.
        """
        unweighted = torch.where(d == 0, h, 0.0).unsqueeze(1)
        part = torch.bmm(unweighted, zq)
        if not prescaled:
            part.mul_(m_isqrt.unsqueeze(1))
        return part.neg_() if r is None else r - part

    @staticmethod
    def _perturb(
        problem: HalfProblem, u: torch.Tensor, r: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """u + sigma e and r - sigma z for standard normal e (B, 1, n) and z (B, 1, k): the
        right-hand side c = W^T u - r gains sigma (W^T e + z), of covariance
        sigma^2 (I + W^T W). Padding rows of W are zero, so their e contributes nothing."""
        sigma, generator = problem.noise_scale, problem.generator
        e = torch.randn(u.shape, generator=generator, device=u.device, dtype=u.dtype)
        z = torch.randn(
            (u.shape[0], 1, problem.rank), generator=generator, device=u.device, dtype=u.dtype
        )
        u = u.add_(e, alpha=sigma)
        return u, (z.mul_(-sigma) if r is None else r.sub(z, alpha=sigma))
