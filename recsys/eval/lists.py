"""Id lists and relevant items as the metrics read them (numpy/torch ids, test matrices).

Embedding and device conversions live in :mod:`recsys.scoring.arrays`, shared with the scorer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recsys.scoring.arrays import ArrayLike, canonical_csr


def as_id_tensor(ids: ArrayLike, name: str, device: torch.device) -> torch.Tensor:
    """Top-k / candidate ids as an int64 tensor (U, K) on ``device``; -1 marks an empty slot."""
    t = ids if isinstance(ids, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(ids))
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (users x k) id array, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer item ids, got dtype {t.dtype}")
    return t.to(device=device, dtype=torch.int64)


def relevant_csr(test: Any, name: str, relevance_threshold: float | None) -> sp.csr_matrix:
    """The test matrix reduced to its relevant entries (stored, non-zero, >= threshold if given)."""
    csr = canonical_csr(test, name, (None, None))
    keep = csr.data != 0 if relevance_threshold is None else csr.data >= relevance_threshold
    if not keep.all():
        csr = csr.copy()
        csr.data = keep.astype(np.float32)
        csr.eliminate_zeros()
    return csr


def first_occurrence(ids: torch.Tensor) -> torch.Tensor:
    """Mask of the slots that hold a valid id not seen earlier in the same row."""
    sorted_ids, order = torch.sort(ids, dim=1, stable=True)
    repeat = torch.zeros_like(sorted_ids, dtype=torch.bool)
    repeat[:, 1:] = sorted_ids[:, 1:] == sorted_ids[:, :-1]
    first = torch.empty_like(repeat)
    first.scatter_(1, order, ~repeat)
    return first & (ids >= 0)
