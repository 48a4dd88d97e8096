"""Blocked, fused full-ranking top-k: score a block of users, mask their training items, keep top-k.

This is the hot path of evaluation. For each block of users the scores against every item are one
matrix product written into a reused buffer; the block's excluded (training) items are set to -inf
by scattering the block's CSR indices into that buffer; a top-k selection keeps the best ``k``; the
next block overwrites the buffer. Nothing of size users x items ever exists, no dense mask is built
and there is no Python loop per user, so the matrix product dominates at any number of factors. The
same code runs on the CPU and on CUDA.

Ties are broken deterministically: higher score first, then the lower item id. Slots that cannot be
filled (``k`` larger than the number of items left after exclusion) hold id -1 and score -inf, the
same convention as Faiss, so every metric in :mod:`recsys.eval` treats them as empty.

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

import math
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from recsys.eval._utils import ArrayLike, as_float_tensor, as_vector, canonical_csr, resolve_device

#: Default bound on the memory of one block of scores (and its top-k temporaries), in bytes.
DEFAULT_MEMORY_BUDGET = 256 * 2**20
#: Default cap on users per block: larger blocks do not run faster and delay results.
DEFAULT_MAX_BLOCK_USERS = 1024
#: On the CPU a float32 block is sized to stay in cache between the product and the selection.
CPU_BLOCK_BYTES = 12 * 2**20
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
#: Catalogs at least this large use the two-stage top-k on the CPU (below it torch.topk is cheap).
TWO_STAGE_MIN_ITEMS = 4096
#: Chunk widths tried for the two-stage top-k (widest first) and the least chunks per fetched item.
TWO_STAGE_WIDTHS = (64, 32, 16)
TWO_STAGE_CHUNKS_PER_ITEM = 4


class TopK(NamedTuple):
    """Top-k item ids (int64, -1 for empty slots) and their scores (-inf for empty slots)."""

    ids: torch.Tensor
    scores: torch.Tensor


def block_rows(
    n_items: int,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    element_size: int = 4,
    max_rows: int = DEFAULT_MAX_BLOCK_USERS,
) -> int:
    """How many users one block may hold so that its score buffer stays within the budget.

    The buffer holds ``rows x n_items`` scores; the factor 2 leaves room for ``torch.topk``'s and
    the tie fix-up's temporaries.
    """
    per_row = max(1, n_items) * element_size * 2
    return int(max(1, min(max_rows, memory_budget_bytes // per_row)))


def _allowed_index(allowed_items: ArrayLike | None, n_items: int) -> np.ndarray | None:
    """Sorted internal ids of the items that may be recommended (None means all of them)."""
    if allowed_items is None:
        return None
    a = allowed_items.cpu().numpy() if isinstance(allowed_items, torch.Tensor) else allowed_items
    a = np.asarray(a)
    if a.dtype == bool:
        if a.shape != (n_items,):
            raise ValueError(
                f"a boolean allowed_items mask needs one entry per item ({n_items}), got {a.shape}"
            )
        return np.flatnonzero(a)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(
            "allowed_items must be a boolean mask over items or a 1-D array of item ids"
        )
    if a.size and (a.min() < 0 or a.max() >= n_items):
        raise ValueError(f"allowed_items holds ids outside [0, {n_items})")
    return np.unique(a)


def _exclusion_arrays(
    exclude: sp.spmatrix | None,
    n_users: int,
    n_items: int,
    allowed: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """(indptr, indices) of the excluded items, in the column space actually scored."""
    if exclude is None:
        return None
    csr = canonical_csr(exclude, "exclude", (n_users, n_items))
    indptr = csr.indptr.astype(np.int64)
    indices = csr.indices.astype(np.int64)
    if allowed is not None:  # re-number into the allowed subset, drop items that are not scored
        lut = np.full(n_items, -1, dtype=np.int64)
        lut[allowed] = np.arange(allowed.size)
        cols = lut[indices]
        keep = cols >= 0
        kept = np.concatenate([[0], np.cumsum(keep)])
        indptr, indices = kept[indptr], cols[keep]
    return indptr, indices


def _chunk_width(n_items: int, k_fetch: int, device: torch.device) -> int:
    """Chunk width for the two-stage top-k on the CPU, or 0 to use ``torch.topk`` directly.

    ``torch.topk`` on the CPU copies every row into (value, index) pairs before selecting, which
    costs as much as the 64-factor matrix product. The two-stage path reads the row once for the
    chunk maxima and then selects within the best ``k_fetch`` chunks only. On CUDA ``torch.topk``
    is a radix select and already fast.
    """
    if device.type != "cpu" or n_items < TWO_STAGE_MIN_ITEMS:
        return 0
    for width in TWO_STAGE_WIDTHS:
        if -(-n_items // width) >= TWO_STAGE_CHUNKS_PER_ITEM * k_fetch:
            return width
    return 0


def _two_stage_topk(
    buf: torch.Tensor, n_rows: int, k_fetch: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k_fetch`` largest values (unsorted) of each row of ``buf[:n_rows]``, and their columns.

    ``buf`` is (rows, n_chunks * width) with -inf in the padding columns. The k largest values of a
    row lie within the k chunks with the largest maxima (if a chunk holding one of them were left
    out, the k chosen chunk maxima would be k other values at least as large), so selecting inside
    those chunks returns exactly the row's top-k values; which of several equal values is returned
    is settled afterwards by ``_fix_boundary_ties``.
    """
    n_chunks = buf.shape[1] // width
    chunks = buf[:n_rows].view(n_rows, n_chunks, width)
    chunk_max = torch.amax(chunks, dim=2)
    _, best = torch.topk(chunk_max, k_fetch, dim=1, sorted=False)
    cand = chunks.gather(1, best[:, :, None].expand(n_rows, k_fetch, width))
    vals, j = torch.topk(cand.view(n_rows, k_fetch * width), k_fetch, dim=1, sorted=False)
    shift = width.bit_length() - 1
    if 1 << shift == width:  # the usual power-of-two widths: shifts instead of divisions
        cols = (best.gather(1, j >> shift) << shift) | (j & (width - 1))
    else:
        cols = best.gather(1, torch.div(j, width, rounding_mode="floor")) * width + j % width
    return vals, cols


def _fix_boundary_ties(
    block: torch.Tensor,
    ids: torch.Tensor,
    vals: torch.Tensor,
    k: int,
) -> None:
    """Rows whose k-th and (k+1)-th scores tie: fill the tied slots with the lowest tied ids.

    ``ids``/``vals`` (rows x k+1) are sorted by (score desc, id asc) and are fixed in place. Only
    the flagged rows of ``block`` are read again, so this costs nothing when there are no ties.
    """
    t = vals[:, k - 1]
    flagged = (vals[:, k] == t) & (t != float("-inf"))
    rows = torch.nonzero(flagged).flatten()
    if rows.numel() == 0:
        return
    sub = block.index_select(0, rows)
    tr = t.index_select(0, rows)
    n_gt = (vals.index_select(0, rows)[:, :k] > tr[:, None]).sum(1)
    need = k - n_gt
    eq = sub == tr[:, None]
    rank = torch.cumsum(eq, dim=1, dtype=torch.int64)
    sel = eq & (rank <= need[:, None])
    r, c = torch.nonzero(sel, as_tuple=True)
    pos = n_gt[r] + rank[r, c] - 1
    ids[rows[r], pos] = c
    vals[rows[r], pos] = tr[r]


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


def _bf16_with_bounds(x: torch.Tensor, users: bool) -> torch.Tensor:
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


def _resolve_precision(precision: str, dev: torch.device, dtype: torch.dtype, d: int) -> str:
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    if precision == "auto":
        use = dev.type == "cpu" and d >= BF16_MIN_FACTORS and dtype == torch.float32
        return "bf16" if use and cpu_has_amx() else "fp32"
    if precision == "bf16" and (dev.type != "cpu" or dtype != torch.float32):
        # CUDA may reduce bf16 products in reduced precision (split-K): the bound would not hold
        raise ValueError("precision='bf16' needs the CPU and dtype=float32; use 'fp32' or 'auto'")
    return precision


def _sort_by_score_then_id(
    vals: torch.Tensor, idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ordered by (score desc, id asc): a sort by id, then a stable sort by score."""
    idx, order = torch.sort(idx, dim=1)
    vals = vals.gather(1, order)
    vals, order = torch.sort(vals, dim=1, descending=True, stable=True)
    return vals, idx.gather(1, order)


class _Exclusion:
    """The excluded (user, item) entries, in the scored column space, sliceable per user range."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, dev: torch.device) -> None:
        self.indptr = indptr
        self.cols = torch.from_numpy(indices).to(dev)
        rows = np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))
        self.rows = torch.from_numpy(rows).to(dev)  # the user of every excluded entry
        self.dev = dev

    def range(self, s: int, e: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(row within the block, column) of the entries of users s..e-1."""
        a, b = int(self.indptr[s]), int(self.indptr[e])
        return self.rows[a:b] - s, self.cols[a:b]

    def subset(self, users: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(position in ``users``, column) of the entries of the given users."""
        starts, ends = self.indptr[users], self.indptr[users + 1]
        counts = ends - starts
        pos = np.repeat(np.arange(users.size, dtype=np.int64), counts)
        offsets = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(
            np.cumsum(counts) - counts, counts
        )
        entries = torch.from_numpy(np.repeat(starts, counts) + offsets).to(self.dev)
        return torch.from_numpy(pos).to(self.dev), self.cols[entries]


def _exact_block(
    users: torch.Tensor,
    items_t: torch.Tensor,
    masked: tuple[torch.Tensor, torch.Tensor] | None,
    buf: torch.Tensor,
    n_scored: int,
    kk: int,
    k_fetch: int,
    width: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-kk (ids, scores) of a block of users by the full product in the buffer's dtype."""
    n = users.shape[0]
    block = buf[:n, :n_scored]
    torch.mm(users, items_t, out=block)
    if masked is not None and masked[0].numel():
        block[masked] = float("-inf")
    if width:
        vals, idx = _two_stage_topk(buf, n, k_fetch, width)
    else:
        vals, idx = torch.topk(block, k_fetch, dim=1, sorted=False)
    vals, idx = _sort_by_score_then_id(vals, idx)
    if k_fetch > kk:
        _fix_boundary_ties(block, idx, vals, kk)
    return idx[:, :kk], vals[:, :kk]


def _bf16_block(
    users: torch.Tensor,
    items: torch.Tensor,
    items_aug_t: torch.Tensor,
    masked: tuple[torch.Tensor, torch.Tensor] | None,
    buf: torch.Tensor,
    gather_buf: torch.Tensor,
    n_scored: int,
    kk: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Certified top-kk of a block via bfloat16 upper bounds and exact float32 re-scoring.

    Returns (ids, scores, rows without a proof); the caller recomputes those rows exactly.
    """
    n, d = users.shape
    dev = users.device
    bound = buf[:n, :n_scored]
    torch.mm(_bf16_with_bounds(users, users=True), items_aug_t, out=bound)
    if masked is not None and masked[0].numel():
        bound[masked] = float("-inf")
    ids = torch.full((n, kk), -1, dtype=torch.int64, device=dev)
    scores = torch.full((n, kk), float("-inf"), dtype=torch.float32, device=dev)
    pending = torch.arange(n, device=dev)
    first = max(BF16_CANDIDATES, BF16_CANDIDATES_PER_K * kk + BF16_CANDIDATES_EXTRA)
    for m in (first, 4 * first, 16 * first):
        m = min(m, n_scored)
        width = _chunk_width(n_scored, m, dev)
        if pending.numel() == n and width:
            cand_b, cand = _two_stage_topk(buf, n, m, width)
        else:
            cand_b, cand = torch.topk(bound.index_select(0, pending), m, dim=1, sorted=False)
        c_m = cand_b.min(dim=1).values.float()
        valid = cand_b != float("-inf")
        cand = cand.masked_fill(~valid, 0)
        # undo the output rounding: outside items' float32 scores are at most g(c_m)
        u = 2.0**-8
        limit = torch.where(c_m > 0, c_m / (1 - u), c_m / (1 + u))
        exact = torch.empty(cand.shape, dtype=torch.float32, device=dev)
        q = users.index_select(0, pending)
        rows_per = max(1, gather_buf.numel() // (m * d))
        if gather_buf.numel() < m * d:
            gather_buf = torch.empty(m * d, dtype=torch.float32, device=dev)
        for r in range(0, cand.shape[0], rows_per):
            c = cand[r : r + rows_per]
            vec = gather_buf[: c.numel() * d].view(c.shape[0], m, d)
            torch.index_select(items, 0, c.reshape(-1), out=vec.view(-1, d))
            exact[r : r + rows_per] = torch.bmm(vec, q[r : r + rows_per, :, None])[:, :, 0]
        exact = exact.masked_fill(~valid, float("-inf"))
        exact, cand = _sort_by_score_then_id(exact, cand)
        proven = (c_m == float("-inf")) | (exact[:, kk - 1] > limit) | (m >= n_scored)
        done = pending[proven]
        ids[done] = cand[proven, :kk]
        scores[done] = exact[proven, :kk]
        pending = pending[~proven]
        if pending.numel() == 0:
            break
    return ids, scores, pending


@torch.no_grad()
def topk_items(
    user_vectors: ArrayLike,
    item_vectors: ArrayLike,
    k: int,
    *,
    exclude: sp.spmatrix | None = None,
    user_offsets: ArrayLike | None = None,
    allowed_items: ArrayLike | None = None,
    block_size: int | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    precision: str = "auto",
) -> TopK:
    """Exact top-``k`` items per user by inner product, computed block by block.

    Args:
        user_vectors: (U, d) user embeddings (numpy or torch).
        item_vectors: (I, d) item embeddings; score(u, i) = user_vectors[u] @ item_vectors[i].
        k: list length. When fewer than ``k`` items are left for a user the tail slots hold id -1
            and score -inf.
        exclude: optional scipy CSR (U x I) whose stored entries are never recommended to that user
            (the training items in evaluation). Rows align with ``user_vectors``.
        user_offsets: optional (U,) constant added to each user's scores (b_u + global mean of the
            ALS model); it does not change the ranking, only the returned scores.
        allowed_items: optional boolean mask (I,) or array of item ids: only these items are ranked
            (the others are never returned). Only the allowed items are scored.
        block_size: users per block; default: sized from ``memory_budget_bytes`` (and, on the CPU,
            from the cache), at most ``DEFAULT_MAX_BLOCK_USERS``.
        memory_budget_bytes: bound on the score buffer (plus temporaries) of one block.
        device: where to compute; default: the device of ``user_vectors`` if it is a tensor, else
            the CPU. ``"auto"`` picks CUDA when available.
        dtype: score dtype (float32; float64 only for references, it is several times slower).
        precision: ``"fp32"``: the full product in ``dtype``. ``"bf16"`` (CPU, float32 only):
            bfloat16 bounds find candidates that are re-scored in float32, with a proof per user
            and a float32 fallback (see the module docstring), so the result is the same float32
            top-k. ``"auto"``: ``"bf16"`` on CPUs with AMX from ``BF16_MIN_FACTORS`` factors on.

    Returns:
        ``TopK(ids, scores)``: (U, k) int64 item ids and scores on the compute device, sorted by
        score descending, ties broken by the lower item id.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    dev = resolve_device(device, user_vectors, item_vectors)
    users = as_float_tensor(user_vectors, "user_vectors", dev, dtype)
    items = as_float_tensor(item_vectors, "item_vectors", dev, dtype)
    if users.shape[1] != items.shape[1]:
        raise ValueError(
            f"user_vectors have {users.shape[1]} dimensions but item_vectors have {items.shape[1]}"
        )
    n_users, n_items = users.shape[0], items.shape[0]
    offsets = as_vector(user_offsets, "user_offsets", n_users, dev)
    mode = _resolve_precision(precision, dev, dtype, users.shape[1])

    allowed = _allowed_index(allowed_items, n_items)
    excl_arrays = _exclusion_arrays(exclude, n_users, n_items, allowed)
    allowed_t = None
    if allowed is not None:
        allowed_t = torch.from_numpy(allowed).to(dev)
        items = items.index_select(0, allowed_t)
    n_scored = items.shape[0]

    out_ids = torch.full((n_users, k), -1, dtype=torch.int64, device=dev)
    out_scores = torch.full((n_users, k), float("-inf"), dtype=dtype, device=dev)
    kk = min(k, n_scored)
    if n_users == 0 or kk == 0:
        return TopK(out_ids, out_scores)
    k_fetch = min(kk + 1, n_scored)  # one extra to detect ties across the k-th slot
    excl = None if excl_arrays is None else _Exclusion(*excl_arrays, dev)

    elem = torch.empty((), dtype=dtype).element_size()
    pad = math.lcm(*TWO_STAGE_WIDTHS)  # room for the chunk padding of every two-stage width
    n_cols = -(-n_scored // pad) * pad
    items_t = items.T  # a transposed view: the GEMM reads it in place
    if mode == "bf16":
        rows = block_size or min(BF16_BLOCK_USERS, block_rows(n_cols, memory_budget_bytes, 2))
        # (d + 3) x n_items, contiguous: with an odd d + 3 the bfloat16 GEMM reads a transposed
        # view at a third of its speed (256 x 515 by 515 x 40,981: 10.9 ms vs 5.3 ms, 2 threads)
        items_aug_t = _bf16_with_bounds(items, users=False).T.contiguous()
        bbuf = torch.empty((max(1, min(rows, n_users)), n_cols), dtype=torch.bfloat16, device=dev)
        bbuf[:, n_scored:] = float("-inf")
        gather_buf = torch.empty(BF16_RESCORE_BYTES // 4, dtype=torch.float32, device=dev)
    else:
        rows = block_size or block_rows(n_cols, memory_budget_bytes, elem)
        if block_size is None and dev.type == "cpu":
            rows = min(rows, max(8, CPU_BLOCK_BYTES // (n_cols * elem)))
    block_size = max(1, min(int(rows), n_users))
    width = _chunk_width(n_scored, k_fetch, dev)
    buf: torch.Tensor | None = None

    def exact(u_rows: torch.Tensor, masked: tuple[torch.Tensor, torch.Tensor] | None):
        nonlocal buf
        if buf is None:
            buf = torch.empty((block_size, n_cols), dtype=dtype, device=dev)
            buf[:, n_scored:] = float("-inf")  # padding of the last chunk, never written again
        return _exact_block(u_rows, items_t, masked, buf, n_scored, kk, k_fetch, width)

    for s in range(0, n_users, block_size):
        e = min(s + block_size, n_users)
        masked = None if excl is None else excl.range(s, e)
        if mode == "bf16":
            idx, vals, failed = _bf16_block(
                users[s:e], items, items_aug_t, masked, bbuf, gather_buf, n_scored, kk
            )
            if failed.numel():
                fail_np = failed.cpu().numpy() + s
                sub = None if excl is None else excl.subset(fail_np)
                idx[failed], vals[failed] = exact(users[s:e].index_select(0, failed), sub)
        else:
            idx, vals = exact(users[s:e], masked)
        empty = vals == float("-inf")  # excluded items, padding columns, unfilled slots
        if allowed_t is not None:
            idx = allowed_t[idx.masked_fill(empty, 0)]
        idx = idx.masked_fill(empty, -1)
        if offsets is not None:
            vals = vals + offsets[s:e, None]
        out_ids[s:e, :kk] = idx
        out_scores[s:e, :kk] = vals
    return TopK(out_ids, out_scores)
