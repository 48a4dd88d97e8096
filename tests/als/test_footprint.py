"""A fit refuses settings that cannot fit in memory before allocating anything."""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.als import ALS, footprint

from .reference import random_matrix


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_a_million_factors_are_refused_at_once(solver):
    matrix = sp.random(1000, 800, density=0.05, format="csr", random_state=0)
    start = time.perf_counter()
    with pytest.raises(MemoryError, match=r"n_factors=1000000 .* needs at least .*lower n_factors"):
        ALS(n_factors=1_000_000, solver=solver).fit(matrix)
    assert time.perf_counter() - start < 5


def test_the_refusal_is_a_one_line_training_error(monkeypatch):
    monkeypatch.setattr(footprint, "available_mb", lambda device: 1.0)
    with pytest.raises(FloatingPointError) as info:
        ALS(n_factors=64, dtype="float64").fit(sp.csr_matrix(random_matrix(n_users=5000)))
    assert "\n" not in str(info.value) and "dtype='float32'" in str(info.value)


def test_healthy_fits_are_not_refused_and_the_estimate_is_a_lower_bound():
    matrix = sp.csr_matrix(random_matrix())
    parts = footprint.fit_bytes(matrix, 8, True, torch.float32, exact=True)
    model = ALS(n_factors=8).fit(matrix)
    tables = sum(t.numel() * t.element_size() for t in (model.user_factors, model.item_factors))
    assert parts["factor tables"] >= tables
    assert sum(parts.values()) < 2**20
    assert np.isfinite(model.history[-1]["loss"])
