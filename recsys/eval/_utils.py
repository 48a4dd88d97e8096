"""Small conversions shared by the evaluation modules (numpy/torch inputs, devices, CSR checks)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

ArrayLike = Any  # numpy array, torch tensor or anything np.asarray accepts


def resolve_device(device: str | torch.device | None, *tensors: Any) -> torch.device:
    """The device to compute on.

    ``None`` follows the first torch tensor among ``tensors`` (so CUDA inputs stay on CUDA) and
    falls back to the CPU; ``"auto"`` picks CUDA when it is available.
    """
    if device is None:
        for t in tensors:
            if isinstance(t, torch.Tensor):
                return t.device
        return torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def as_float_tensor(
    x: ArrayLike, name: str, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``x`` as a 2-D floating tensor on ``device`` (no copy when it already is one)."""
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (rows x factors) array, got shape {tuple(t.shape)}")
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must hold numbers, got dtype {t.dtype}")
    return t.to(device=device, dtype=dtype)


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


def as_vector(x: ArrayLike | None, name: str, n: int, device: torch.device) -> torch.Tensor | None:
    """A 1-D float32 tensor of length ``n`` (or None)."""
    if x is None:
        return None
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    t = t.reshape(-1)
    if t.numel() != n:
        raise ValueError(f"{name} must have one value per row ({n}), got {t.numel()}")
    return t.to(device=device, dtype=torch.float32)


def canonical_csr(m: Any, name: str, shape: tuple[int | None, int | None]) -> sp.csr_matrix:
    """``m`` as a CSR matrix with sorted indices and no duplicates, checked against ``shape``.

    ``shape`` entries that are None are not checked. The input is never modified in place.
    """
    if not sp.issparse(m):
        raise TypeError(f"{name} must be a scipy.sparse matrix (users x items), got {type(m)}")
    csr = m.tocsr()
    for axis, (want, have) in enumerate(zip(shape, csr.shape, strict=True)):
        if want is not None and want != have:
            what = "users (rows)" if axis == 0 else "items (columns)"
            raise ValueError(
                f"{name} has {have} {what} but {want} were expected: pass matrices whose rows "
                "match the user vectors and whose columns match the item vectors"
            )
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()  # also sorts the indices
    return csr


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
