"""The least memory a fit needs, estimated before it allocates anything.

Settings that cannot fit (``n_factors=1_000_000`` asks for factor tables and per-row systems of
terabytes) then fail at once with the estimate and the fix, instead of after minutes of setup
or by the kernel's out-of-memory killer. The estimate is a lower bound: what any solve must hold
at the same time, not the solver's memory budget, so healthy runs are never refused.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch

from recsys.als.errors import TrainingError
from recsys.memory import available_mb


class InsufficientMemoryError(TrainingError, MemoryError):
    """A fit that needs more memory than the device has free."""


def fit_bytes(
    matrix: sp.csr_matrix, n_factors: int, use_bias: bool, dtype: torch.dtype, exact: bool
) -> dict[str, int]:
    """Bytes a fit on `matrix` holds at least, by what holds them.

    The factor tables and biases of both sides; per half-epoch the fixed side with its bias
    column, its rotated copy, the solution and its rotated copy (largest side), and the k x k
    Gram matrix and shared term (an exact solver's float64 eigendecomposition too); the
    bucketed entries (index, weight and target per nonzero, both orientations); and one row's
    system of the widest row (an exact solver factorises min(n, k)^2 entries per row; every
    solver gathers n x k).
    """
    size = torch.empty((), dtype=dtype).element_size()
    n_users, n_items = matrix.shape
    k = n_factors + 1 if use_bias else n_factors
    width = int(
        max(np.diff(matrix.indptr).max(initial=0), np.bincount(matrix.indices).max(initial=0))
    )
    system = min(width, k) ** 2 if exact else 0
    dense = 4 * 8 if exact else 2 * size  # Gram, shared term (float64 eigenvectors: exact)
    return {
        "factor tables": (n_users + n_items) * (n_factors + 1) * size,
        "half-epoch tables": 4 * (max(n_users, n_items) + 1) * k * size + dense * k * k,
        "bucketed entries": 2 * matrix.nnz * (8 + 2 * size),
        "one row's system": (width * k + system + 4 * k + 6 * width) * size,
    }


def _show(n_bytes: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    power = min(len(units) - 1, int(math.log(max(n_bytes, 1), 1024)))
    return f"{n_bytes / 1024**power:.1f} {units[power]}"


def check_fit_memory(
    matrix: sp.csr_matrix,
    n_factors: int,
    use_bias: bool,
    dtype: torch.dtype,
    exact: bool,
    device: torch.device,
) -> None:
    """Raise InsufficientMemoryError when the least a fit needs exceeds what `device` has free
    (nothing is checked where the free memory cannot be read)."""
    parts = fit_bytes(matrix, n_factors, use_bias, dtype, exact)
    need, free = sum(parts.values()), available_mb(device) * 2**20
    if not need > free:  # NaN (unknown) passes
        return
    shown = ", ".join(f"{name} {_show(value)}" for name, value in parts.items())
    smaller = " or dtype='float32'" if dtype == torch.float64 else ""
    raise InsufficientMemoryError(
        f"n_factors={n_factors} on {matrix.shape[0]} x {matrix.shape[1]} needs at least "
        f"{_show(need)} ({shown}) but {device} has {_show(free)} free: lower n_factors{smaller}"
    )
