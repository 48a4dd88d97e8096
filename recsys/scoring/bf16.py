"""The bfloat16 candidate path of the top-k scorer: a certified shortcut for large factor counts.

Large factor counts on CPUs with AMX (``precision="bf16"``, chosen by ``"auto"``): the full product
runs in bfloat16 on the matrix units, several times faster than float32, but it only selects
candidates, it never ranks. With u~ and v~ the vectors rounded to bfloat16 and du = u - u~,
dv = v - v~ (known exactly), u.v - u~.v~ = du.v + u~.dv, so |u.v - u~.v~| <= |du| |v| + |u~| |dv|
(Cauchy-Schwarz). Three extra columns add this bound (inflated to cover the rounding of the extra
columns and of float32 sums) to every approximate score, so each computed value, after undoing the
bfloat16 rounding of the output, bounds from above any float32 evaluation of that item's score. The
top-M items by this bound are re-scored exactly in float32 and ranked; a user's list is accepted
only when its k-th exact score is above the largest bound left outside the candidates, which proves
that no other item can enter it. Users without that proof retry with a larger M and finally fall
back to the float32 product, so the result is the float32 top-k in every case.
"""

from __future__ import annotations

import torch

from recsys.scoring.selection import chunk_width, sort_by_score_then_id, two_stage_topk

#: Users per block of the bfloat16 path (the product needs a few hundred rows to run at full speed).
BF16_BLOCK_USERS = 256
#: Candidates re-scored per user in the bfloat16 path: max(32, 2k + 8) first, then x4, then x16.
BF16_CANDIDATES = 32
BF16_CANDIDATES_PER_K = 2
BF16_CANDIDATES_EXTRA = 8
#: Bound on the gathered candidate vectors re-scored at once, in bytes.
BF16_RESCORE_BYTES = 32 * 2**20
#: ``precision="auto"`` uses bfloat16 from this many factors on (below it the product is cheap).
BF16_MIN_FACTORS = 256


def cpu_has_amx() -> bool:
    """Whether this CPU has the AMX bfloat16 matrix units (Linux /proc/cpuinfo; False elsewhere)."""
    global _AMX
    if _AMX is None:
        try:
            with open("/proc/cpuinfo") as f:
                _AMX = any(line.startswith("flags") and "amx_bf16" in line.split() for line in f)
        except OSError:
            _AMX = False
    return _AMX


_AMX: bool | None = None


def resolve_precision(precision: str, dev: torch.device, dtype: torch.dtype, d: int) -> str:
    """``"fp32"`` or ``"bf16"``: the path ``precision`` asks for (``"auto"``: the fastest exact)."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    if precision == "auto":
        use = dev.type == "cpu" and d >= BF16_MIN_FACTORS and dtype == torch.float32
        return "bf16" if use and cpu_has_amx() else "fp32"
    if precision == "bf16" and (dev.type != "cpu" or dtype != torch.float32):
        # CUDA may reduce bf16 products in reduced precision (split-K): the bound would not hold
        raise ValueError("precision='bf16' needs the CPU and dtype=float32; use 'fp32' or 'auto'")
    return precision


def bf16_with_bounds(x: torch.Tensor, users: bool) -> torch.Tensor:
    """Rows of ``x`` in bfloat16 with three margin columns (see the module docstring).

    The user side appends (|du|, |u~|, t |u|) and the item side (|v|, |dv|, |v|), so the product
    of augmented rows is u~.v~ + |du| |v| + |u~| |dv| + t |u| |v|. ``t`` = 4 (d + 3) 2^-24 covers
    the float32 summation of the d + 3 products and the error of a float32 evaluation of u.v; the
    margins are inflated by 1 + 2^-6 against their own bfloat16 and float32-norm rounding.
    """
    n, d = x.shape
    out = torch.empty((n, d + 3), dtype=torch.bfloat16, device=x.device)
    t = 4 * (d + 3) * 2.0**-24
    step = max(1, 2**22 // max(1, d))  # row chunks keep the float32 temporaries at 16 MiB
    for s in range(0, n, step):
        rows = x[s : s + step]
        low = out[s : s + step, :d]
        low.copy_(rows)
        back = low.float()
        norm = torch.linalg.vector_norm(rows, dim=1)
        resid = torch.linalg.vector_norm(back.sub_(rows), dim=1)
        if users:
            cols = [resid, torch.linalg.vector_norm(low.float(), dim=1), t * norm]
        else:
            cols = [norm, resid, norm]
        out[s : s + step, d:] = (1 + 2.0**-6) * torch.stack(cols, dim=1)
    return out


class Bf16Items:
    """The item side of the bfloat16 path, prepared once per call, and its reused buffers."""

    def __init__(self, items: torch.Tensor, n_cols: int, rows: int) -> None:
        dev = items.device
        self.items = items
        self.n_scored = items.shape[0]
        # (d + 3) x n_items, contiguous: with an odd d + 3 the bfloat16 GEMM reads a transposed
        # view at a third of its speed (256 x 515 by 515 x 40,981: 10.9 ms vs 5.3 ms, 2 threads)
        self.aug_t = bf16_with_bounds(items, users=False).T.contiguous()
        self.buf = torch.empty((rows, n_cols), dtype=torch.bfloat16, device=dev)
        self.buf[:, self.n_scored :] = float("-inf")
        self.gather_buf = torch.empty(BF16_RESCORE_BYTES // 4, dtype=torch.float32, device=dev)

    def rescore(self, q: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """Exact float32 scores of the candidate items ``cand`` (rows x m) of the queries ``q``."""
        m, d = cand.shape[1], q.shape[1]
        exact = torch.empty(cand.shape, dtype=torch.float32, device=q.device)
        rows_per = max(1, self.gather_buf.numel() // (m * d))
        if self.gather_buf.numel() < m * d:
            self.gather_buf = torch.empty(m * d, dtype=torch.float32, device=q.device)
        for r in range(0, cand.shape[0], rows_per):
            c = cand[r : r + rows_per]
            vec = self.gather_buf[: c.numel() * d].view(c.shape[0], m, d)
            torch.index_select(self.items, 0, c.reshape(-1), out=vec.view(-1, d))
            exact[r : r + rows_per] = torch.bmm(vec, q[r : r + rows_per, :, None])[:, :, 0]
        return exact

    def block(
        self,
        users: torch.Tensor,
        masked: tuple[torch.Tensor, torch.Tensor] | None,
        kk: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Certified top-kk of a block via bfloat16 upper bounds and exact float32 re-scoring.

        Returns (ids, scores, rows without a proof); the caller recomputes those rows exactly.
        """
        n = users.shape[0]
        dev, n_scored = users.device, self.n_scored
        bound = self.buf[:n, :n_scored]
        torch.mm(bf16_with_bounds(users, users=True), self.aug_t, out=bound)
        if masked is not None and masked[0].numel():
            bound[masked] = float("-inf")
        ids = torch.full((n, kk), -1, dtype=torch.int64, device=dev)
        scores = torch.full((n, kk), float("-inf"), dtype=torch.float32, device=dev)
        pending = torch.arange(n, device=dev)
        first = max(BF16_CANDIDATES, BF16_CANDIDATES_PER_K * kk + BF16_CANDIDATES_EXTRA)
        for m in (first, 4 * first, 16 * first):
            m = min(m, n_scored)
            width = chunk_width(n_scored, m, dev)
            if pending.numel() == n and width:
                cand_b, cand = two_stage_topk(self.buf, n, m, width)
            else:
                cand_b, cand = torch.topk(bound.index_select(0, pending), m, dim=1, sorted=False)
            c_m = cand_b.min(dim=1).values.float()
            valid = cand_b != float("-inf")
            cand = cand.masked_fill(~valid, 0)
            # undo the output rounding: outside items' float32 scores are at most g(c_m)
            u = 2.0**-8
            limit = torch.where(c_m > 0, c_m / (1 - u), c_m / (1 + u))
            exact = self.rescore(users.index_select(0, pending), cand)
            exact = exact.masked_fill(~valid, float("-inf"))
            exact, cand = sort_by_score_then_id(exact, cand)
            proven = (c_m == float("-inf")) | (exact[:, kk - 1] > limit) | (m >= n_scored)
            done = pending[proven]
            ids[done] = cand[proven, :kk]
            scores[done] = exact[proven, :kk]
            pending = pending[~proven]
            if pending.numel() == 0:
                break
        return ids, scores, pending
