"""Blocked, fused full-ranking top-k: score a block of users, mask their excluded items, keep top-k.

This is the hot path of evaluation, of ``ALS.recommend`` and of exhaustive candidate scoring. For
each block of users the scores against every item are one matrix product written into a reused
buffer; the block's excluded (training) items are set to -inf by scattering the block's CSR
indices into that buffer; a top-k selection keeps the best ``k``; the next block overwrites the
buffer. Nothing of size users x items ever exists, no dense mask is built and there is no Python
loop per user, so the matrix product dominates at any number of factors. The same code runs on the
CPU and on CUDA.

Ties are broken deterministically: higher score first, then the lower item id. Slots that cannot be
filled (``k`` larger than the number of items left after exclusion) hold id -1 and score -inf, the
same convention as Faiss, so every metric in :mod:`recsys.eval` treats them as empty.

From ``BF16_MIN_FACTORS`` factors on CPUs with AMX the product can run in bfloat16 to find
candidates that are re-scored in float32 with a per-user proof (:mod:`recsys.scoring.bf16`); the
result is the float32 top-k in every case.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from recsys.scoring.arrays import (
    ArrayLike,
    as_float_tensor,
    as_vector,
    canonical_csr,
    resolve_device,
)
from recsys.scoring.bf16 import BF16_BLOCK_USERS, Bf16Items, resolve_precision
from recsys.scoring.selection import (
    chunk_width,
    fix_boundary_ties,
    padded_columns,
    sort_by_score_then_id,
    two_stage_topk,
)

#: Default bound on the memory of one block of scores (and its top-k temporaries), in bytes.
DEFAULT_MEMORY_BUDGET = 256 * 2**20
#: Default cap on users per block: larger blocks do not run faster and delay results.
DEFAULT_MAX_BLOCK_USERS = 1024
#: On the CPU a float32 block is sized to stay in cache between the product and the selection.
CPU_BLOCK_BYTES = 12 * 2**20

Masked = tuple[torch.Tensor, torch.Tensor]


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


class _Exclusion:
    """The excluded (user, item) entries, in the scored column space, sliceable per user range."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, dev: torch.device) -> None:
        self.indptr = indptr
        self.cols = torch.from_numpy(indices).to(dev)
        rows = np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))
        self.rows = torch.from_numpy(rows).to(dev)  # the user of every excluded entry
        self.dev = dev

    def range(self, s: int, e: int) -> Masked:
        """(row within the block, column) of the entries of users s..e-1."""
        a, b = int(self.indptr[s]), int(self.indptr[e])
        return self.rows[a:b] - s, self.cols[a:b]

    def subset(self, users: np.ndarray) -> Masked:
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
    masked: Masked | None,
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
        vals, idx = two_stage_topk(buf, n, k_fetch, width)
    else:
        vals, idx = torch.topk(block, k_fetch, dim=1, sorted=False)
    vals, idx = sort_by_score_then_id(vals, idx)
    if k_fetch > kk:
        fix_boundary_ties(block, idx, vals, kk)
    return idx[:, :kk], vals[:, :kk]


class _BlockScorer:
    """One call's plan: block size, reused buffers, and the top-kk of each block of users."""

    def __init__(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        kk: int,
        mode: str,
        block_size: int | None,
        memory_budget_bytes: int,
    ) -> None:
        dev, dtype = users.device, users.dtype
        self.users, self.kk, self.mode = users, kk, mode
        self.n_scored = items.shape[0]
        self.k_fetch = min(kk + 1, self.n_scored)  # one extra to detect ties across the k-th slot
        self.n_cols = padded_columns(self.n_scored)
        self.items_t = items.T  # a transposed view: the GEMM reads it in place
        n_users = users.shape[0]
        if mode == "bf16":
            rows = block_size or min(
                BF16_BLOCK_USERS, block_rows(self.n_cols, memory_budget_bytes, 2)
            )
            self.bf16 = Bf16Items(items, self.n_cols, max(1, min(rows, n_users)))
        else:
            elem = torch.empty((), dtype=dtype).element_size()
            rows = block_size or block_rows(self.n_cols, memory_budget_bytes, elem)
            if block_size is None and dev.type == "cpu":
                rows = min(rows, max(8, CPU_BLOCK_BYTES // (self.n_cols * elem)))
        self.block_size = max(1, min(int(rows), n_users))
        self.width = chunk_width(self.n_scored, self.k_fetch, dev)
        self.buf: torch.Tensor | None = None

    def exact(
        self, u_rows: torch.Tensor, masked: Masked | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-kk of ``u_rows`` by the full product (the buffer is allocated on first use)."""
        if self.buf is None:
            shape = (self.block_size, self.n_cols)
            self.buf = torch.empty(shape, dtype=self.users.dtype, device=self.users.device)
            self.buf[:, self.n_scored :] = float(
                "-inf"
            )  # padding of the last chunk, never written again
        args = (self.buf, self.n_scored, self.kk, self.k_fetch, self.width)
        return _exact_block(u_rows, self.items_t, masked, *args)

    def block(self, s: int, e: int, excl: _Exclusion | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-kk (ids in the scored column space, scores) of users s..e-1."""
        masked = None if excl is None else excl.range(s, e)
        if self.mode != "bf16":
            return self.exact(self.users[s:e], masked)
        idx, vals, failed = self.bf16.block(self.users[s:e], masked, self.kk)
        if failed.numel():
            fail_np = failed.cpu().numpy() + s
            sub = None if excl is None else excl.subset(fail_np)
            idx[failed], vals[failed] = self.exact(self.users[s:e].index_select(0, failed), sub)
        return idx, vals


def _embeddings(
    user_vectors: ArrayLike, item_vectors: ArrayLike, dev: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both embedding matrices as tensors of ``dtype`` on ``dev``, checked to share a dimension."""
    users = as_float_tensor(user_vectors, "user_vectors", dev, dtype)
    items = as_float_tensor(item_vectors, "item_vectors", dev, dtype)
    if users.shape[1] != items.shape[1]:
        raise ValueError(
            f"user_vectors have {users.shape[1]} dimensions but item_vectors have {items.shape[1]}"
        )
    return users, items


def _store(
    out: TopK,
    s: int,
    e: int,
    idx: torch.Tensor,
    vals: torch.Tensor,
    allowed_t: torch.Tensor | None,
    offsets: torch.Tensor | None,
) -> None:
    """Write a block's result into rows s..e-1 of ``out``: catalog ids, -1 for empty slots."""
    empty = vals == float("-inf")  # excluded items, padding columns, unfilled slots
    if allowed_t is not None:
        idx = allowed_t[idx.masked_fill(empty, 0)]
    idx = idx.masked_fill(empty, -1)
    if offsets is not None:
        vals = vals + offsets[s:e, None]
    kk = idx.shape[1]
    out.ids[s:e, :kk] = idx
    out.scores[s:e, :kk] = vals


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
            and a float32 fallback (see :mod:`recsys.scoring.bf16`), so the result is the same
            float32 top-k. ``"auto"``: ``"bf16"`` on CPUs with AMX from ``BF16_MIN_FACTORS``
            factors on.

    Returns:
        ``TopK(ids, scores)``: (U, k) int64 item ids and scores on the compute device, sorted by
        score descending, ties broken by the lower item id.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    dev = resolve_device(device, user_vectors, item_vectors)
    users, items = _embeddings(user_vectors, item_vectors, dev, dtype)
    n_users, n_items = users.shape[0], items.shape[0]
    offsets = as_vector(user_offsets, "user_offsets", n_users, dev)
    mode = resolve_precision(precision, dev, dtype, users.shape[1])

    allowed = _allowed_index(allowed_items, n_items)
    excl_arrays = _exclusion_arrays(exclude, n_users, n_items, allowed)
    allowed_t = None
    if allowed is not None:
        allowed_t = torch.from_numpy(allowed).to(dev)
        items = items.index_select(0, allowed_t)

    out = TopK(
        torch.full((n_users, k), -1, dtype=torch.int64, device=dev),
        torch.full((n_users, k), float("-inf"), dtype=dtype, device=dev),
    )
    kk = min(k, items.shape[0])
    if n_users == 0 or kk == 0:
        return out
    excl = None if excl_arrays is None else _Exclusion(*excl_arrays, dev)
    scorer = _BlockScorer(users, items, kk, mode, block_size, memory_budget_bytes)
    for s in range(0, n_users, scorer.block_size):
        e = min(s + scorer.block_size, n_users)
        idx, vals = scorer.block(s, e, excl)
        _store(out, s, e, idx, vals, allowed_t, offsets)
    return out
