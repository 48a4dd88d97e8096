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
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from recsys.eval._utils import ArrayLike, as_float_tensor, as_vector, canonical_csr, resolve_device

#: Default bound on the memory of one block of scores (and its top-k temporaries), in bytes.
DEFAULT_MEMORY_BUDGET = 256 * 2**20
#: Default cap on users per block: larger blocks do not run faster on the CPU and delay results.
DEFAULT_MAX_BLOCK_USERS = 1024
#: Catalogs at least this large use the two-stage top-k on the CPU (below it torch.topk is cheap).
TWO_STAGE_MIN_ITEMS = 4096
#: Chunk widths tried for the two-stage top-k (widest first) and the least chunks per fetched item.
TWO_STAGE_WIDTHS = (64, 32)
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
        block_size: users per block; default: as many as ``memory_budget_bytes`` allows, at most
            ``DEFAULT_MAX_BLOCK_USERS``.
        memory_budget_bytes: bound on the score buffer (plus temporaries) of one block.
        device: where to compute; default: the device of ``user_vectors`` if it is a tensor, else
            the CPU. ``"auto"`` picks CUDA when available.
        dtype: score dtype (float32; float64 only for references, it is several times slower).

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

    allowed = _allowed_index(allowed_items, n_items)
    excl = _exclusion_arrays(exclude, n_users, n_items, allowed)
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

    if block_size is None:
        elem = torch.empty((), dtype=dtype).element_size()
        block_size = block_rows(n_scored, memory_budget_bytes, elem)
    block_size = max(1, min(int(block_size), n_users))
    width = _chunk_width(n_scored, k_fetch, dev)
    n_cols = -(-n_scored // width) * width if width else n_scored
    buf = torch.empty((block_size, n_cols), dtype=dtype, device=dev)
    buf[:, n_scored:] = float("-inf")  # padding of the last chunk, never written again
    items_t = items.T  # a transposed view: the GEMM reads it in place
    neg_inf = torch.tensor(float("-inf"), dtype=dtype, device=dev)
    if excl is not None:
        ex_indptr, ex_indices_np = excl
        ex_indices = torch.from_numpy(ex_indices_np).to(dev)
        ex_rows_np = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(ex_indptr))
        ex_rows = torch.from_numpy(ex_rows_np).to(dev)  # the user of every excluded entry

    for s in range(0, n_users, block_size):
        e = min(s + block_size, n_users)
        block = buf[: e - s, :n_scored]
        torch.mm(users[s:e], items_t, out=block)
        if excl is not None:
            a, b = int(ex_indptr[s]), int(ex_indptr[e])
            if b > a:
                block.index_put_((ex_rows[a:b] - s, ex_indices[a:b]), neg_inf)
        if width:
            vals, idx = _two_stage_topk(buf, e - s, k_fetch, width)
        else:
            vals, idx = torch.topk(block, k_fetch, dim=1, sorted=False)
        # order by (score desc, id asc): sort by id, then a stable sort by score
        idx, order = torch.sort(idx, dim=1)
        vals = vals.gather(1, order)
        vals, order = torch.sort(vals, dim=1, descending=True, stable=True)
        idx = idx.gather(1, order)
        if k_fetch > kk:
            _fix_boundary_ties(block, idx, vals, kk)
        idx, vals = idx[:, :kk], vals[:, :kk]
        if allowed_t is not None:
            idx = allowed_t[idx]
        idx = idx.masked_fill(vals == float("-inf"), -1)
        if offsets is not None:
            vals = vals + offsets[s:e, None]
        out_ids[s:e, :kk] = idx
        out_scores[s:e, :kk] = vals
    return TopK(out_ids, out_scores)
