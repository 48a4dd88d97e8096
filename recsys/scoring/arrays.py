"""Conversions of scoring inputs: numpy/torch embeddings, devices and CSR exclusion matrices.

Shared by the top-k scorer and the evaluation metrics, so both accept the same inputs and report
the same errors.
"""

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
