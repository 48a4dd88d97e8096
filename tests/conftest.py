"""Shared pytest fixtures: the real datasets, one Faiss thread, a small fitted ALS model."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest
import scipy.sparse as sp

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder with the real datasets (../shared/data); tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _one_faiss_thread() -> Iterator[None]:
    """Tests search tiny indexes: one Faiss thread avoids OpenMP barrier stalls on a shared
    2-core machine."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="session")
def small_als() -> Callable[[float], tuple]:
    """``small_als(density)``: a 6-factor ALS with biases fitted for one epoch on a random
    90 x 250 matrix of that density with values 1-3, and the matrix (cached per density)."""
    from recsys.als import ALS

    @functools.cache
    def fit(density: float) -> tuple[ALS, sp.csr_matrix]:
        rng = np.random.default_rng(0)
        matrix = sp.random(90, 250, density=density, format="csr", random_state=3, dtype=np.float32)
        matrix.data[:] = 1 + rng.integers(0, 3, matrix.nnz)
        model = ALS(n_factors=6, iterations=1, use_bias=True, device="cpu", seed=0).fit(matrix)
        return model, matrix

    return fit
