"""Degree-bucketed, padded views of a sparse matrix, so per-row systems are built with bmm.

Rows are sorted by their number of observed entries and grouped so that, within a bucket, the
longest row is at most ~10% (CPU) or ~20% (GPU) longer than the shortest (exact lengths for short
rows). Each bucket stores its rows' column indices padded to the bucket's longest row, and each
entry's weight d and target g from the weighting (zero in padding). The sparsity structure and
the values never change during a fit, so buckets are built once and reused every epoch: the
per-entry terms cost nothing per half-epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from recsys.als.weightings.base import Weighting

#: rows with at most this many entries get a bucket of their exact length
_EXACT_UP_TO = 8
#: above that, bucket boundaries grow geometrically by this ratio, per device type. Padding
#: costs arithmetic (a row's system grows as width^2 to width^3), while each bucket adds chunks
#: with a fixed cost per chunk. On the CPU, 1.1 pads Gowalla's solves by 6-9% instead of 13-18%
#: (62 -> 102 buckets). Measured in paired fits (Gowalla, hkv, 2 threads), 128 factors: 7-14%
#: less wall time than 1.2; 64 factors: a tie. 1.05 won on one thread but lost on two, where
#: every bucket is split between the chunk workers. GPUs keep 1.2, the ratio measured there:
#: each chunk costs a kernel launch per operation.
_GROWTH = {"cpu": 1.1}
_DEFAULT_GROWTH = 1.2


@dataclass
class Bucket:
    """Rows of similar length, padded to the longest.

    Padding points at column `n_cols` (one past the last), so gathering from a table with an
    extra zero row (`HalfProblem.fixed_padded`) yields zero vectors there, and has weight and
    target 0, so it adds nothing to any row's system.
    """

    rows: torch.Tensor  # (B,) int64 row indices
    cols: torch.Tensor  # (B, n) column indices (int32 when they fit), n_cols in padding
    weight: torch.Tensor  # (B, n) observed weight d of each entry, 0 in padding
    target: torch.Tensor  # (B, n) observed target g of each entry, 0 in padding
    #: whether some observed entry has weight d = 0 (e.g. hkv with alpha = 0): its target
    #: still counts, which solvers that scale entries by sqrt(d) must handle apart
    zero_weight: bool = False

    @property
    def width(self) -> int:
        return self.cols.shape[1]

    def __len__(self) -> int:
        return self.rows.shape[0]

    def gather(self, table: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows of `table` at `cols`, shape (B, n, k), into `out` when given.

        index_select beats advanced indexing (table[cols]) by far on the CPU.
        """
        shape = (*self.cols.shape, table.shape[1])
        if out is None:
            return torch.index_select(table, 0, self.cols.reshape(-1)).view(shape)
        torch.index_select(table, 0, self.cols.reshape(-1), out=out.view(-1, table.shape[1]))
        return out.view(shape)

    def chunks(self, max_rows: int) -> Iterator[Bucket]:
        """Consecutive slices of at most `max_rows` rows (memory-bounded batches)."""
        step = max(1, int(max_rows))
        for start in range(0, len(self), step):
            stop = start + step
            yield Bucket(
                self.rows[start:stop],
                self.cols[start:stop],
                self.weight[start:stop],
                self.target[start:stop],
                self.zero_weight,
            )


def bucket_growth(device: torch.device) -> float:
    """The ratio between consecutive bucket widths for rows solved on `device`."""
    return _GROWTH.get(device.type, _DEFAULT_GROWTH)


def _bucket_edges(max_degree: int, growth: float) -> np.ndarray:
    """Upper bounds (inclusive) of the degree buckets, covering 1..max_degree."""
    edges = list(range(1, min(_EXACT_UP_TO, max_degree) + 1))
    while edges[-1] < max_degree:
        edges.append(max(edges[-1] + 1, int(np.ceil(edges[-1] * growth))))
    return np.asarray(edges)


def build_buckets(
    matrix: sp.csr_matrix, weighting: Weighting, device: torch.device, dtype: torch.dtype
) -> tuple[list[Bucket], torch.Tensor]:
    """Bucket the non-empty rows of `matrix`, with each entry's weight and target under
    `weighting`; also return the indices of its empty rows."""
    indptr = matrix.indptr.astype(np.int64)
    degrees = np.diff(indptr)
    empty = np.flatnonzero(degrees == 0)
    buckets: list[Bucket] = []
    # int32 column indices halve the largest array of the structure; gathers take either
    index_dtype = np.int32 if matrix.shape[1] < np.iinfo(np.int32).max else np.int64
    zero = torch.zeros((), device=device, dtype=dtype)
    if matrix.nnz:
        edges = _bucket_edges(int(degrees.max()), bucket_growth(torch.device(device)))
        which = np.searchsorted(edges, degrees)  # bucket of each row; empty rows land in 0
        for b, width in enumerate(edges):
            rows = np.flatnonzero((which == b) & (degrees > 0))
            if rows.size == 0:
                continue
            lengths = degrees[rows]
            offsets = np.arange(width)[None, :]
            mask = offsets < lengths[:, None]
            positions = np.where(mask, indptr[rows][:, None] + offsets, 0)
            cols = np.where(mask, matrix.indices[positions], matrix.shape[1])
            values = torch.from_numpy(matrix.data[positions]).to(device=device, dtype=dtype)
            observed = torch.from_numpy(mask).to(device)
            weight = weighting.observed_weight(values)
            buckets.append(
                Bucket(
                    rows=torch.from_numpy(rows).to(device),
                    cols=torch.from_numpy(cols.astype(index_dtype)).to(device),
                    weight=torch.where(observed, weight, zero),
                    target=torch.where(observed, weighting.observed_target(values), zero),
                    zero_weight=bool(((weight == 0) & observed).any()),  # once per fit
                )
            )
    return buckets, torch.from_numpy(empty).to(device)
