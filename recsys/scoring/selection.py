"""Row-wise top-k selection inside a block of scores: the two-stage CPU path and the tie rules.

Ties are broken deterministically: higher score first, then the lower item id.
"""

from __future__ import annotations

import math

import torch

#: Catalogs at least this large use the two-stage top-k on the CPU (below it torch.topk is cheap).
TWO_STAGE_MIN_ITEMS = 4096
#: Chunk widths tried for the two-stage top-k (widest first) and the least chunks per fetched item.
TWO_STAGE_WIDTHS = (64, 32, 16)
TWO_STAGE_CHUNKS_PER_ITEM = 4


def padded_columns(n_items: int) -> int:
    """Columns of a score buffer: ``n_items`` rounded up to fit every two-stage chunk width."""
    pad = math.lcm(*TWO_STAGE_WIDTHS)
    return -(-n_items // pad) * pad


def chunk_width(n_items: int, k_fetch: int, device: torch.device) -> int:
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


def two_stage_topk(
    buf: torch.Tensor, n_rows: int, k_fetch: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k_fetch`` largest values (unsorted) of each row of ``buf[:n_rows]``, and their columns.

    ``buf`` is (rows, n_chunks * width) with -inf in the padding columns. The k largest values of a
    row lie within the k chunks with the largest maxima (if a chunk holding one of them were left
    out, the k chosen chunk maxima would be k other values at least as large), so selecting inside
    those chunks returns exactly the row's top-k values; which of several equal values is returned
    is settled afterwards by :func:`fix_boundary_ties`.
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


def fix_boundary_ties(
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


def sort_by_score_then_id(
    vals: torch.Tensor, idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ordered by (score desc, id asc): a sort by id, then a stable sort by score."""
    idx, order = torch.sort(idx, dim=1)
    vals = vals.gather(1, order)
    vals, order = torch.sort(vals, dim=1, descending=True, stable=True)
    return vals, idx.gather(1, order)
