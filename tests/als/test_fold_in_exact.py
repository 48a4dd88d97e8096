"""Fold-in and partial fits solve exactly whatever solver trained the model."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.als import ALS

from .reference import reference_user_update


def _checkerboard() -> np.ndarray:
    rows, cols = np.indices((50, 50))
    return ((rows + cols) % 2 == 0).astype(np.float64)


def test_fold_in_of_a_cg_model_is_the_exact_solve():
    dense = _checkerboard()
    model = ALS(n_factors=32, regularization=1e-3, solver="cg", iterations=3, alpha=10.0)
    model.fit(sp.csr_matrix(dense))
    xs, bs = reference_user_update(model, dense)
    factors, bias = model.fold_in_factors(sp.csr_matrix(dense))
    scale = np.abs(xs).max()
    assert np.abs(factors.double().numpy() - xs).max() < 1e-4 * scale
    assert np.abs(bias.double().numpy() - bs).max() < 1e-4 * max(1.0, np.abs(bs).max())
    assert model.solver.name == "cg"  # the model keeps its training solver


def test_partial_fits_of_a_cg_model_are_exact():
    dense = _checkerboard()
    model = ALS(
        n_factors=32, regularization=1e-3, solver="cg", iterations=3, alpha=10.0, use_bias=False
    )
    model.fit(sp.csr_matrix(dense))
    xs, _ = reference_user_update(model, dense)
    model.partial_fit_users(np.arange(50), sp.csr_matrix(dense))
    tol = 1e-4 * np.abs(xs).max()
    assert np.abs(model.user_factors.double().numpy() - xs).max() < tol
    # items: the same check on the transposed problem, against the refitted users (by scores:
    # the Gram matrix of rank-2 users is nearly singular, so float32 and float64 solutions
    # differ along directions that no score sees)
    flipped = ALS(n_factors=32, regularization=1e-3, alpha=10.0, use_bias=False)
    flipped.user_factors, flipped.item_factors = model.item_factors, model.user_factors
    ys, _ = reference_user_update(flipped, dense.T)
    model.partial_fit_items(np.arange(50), sp.csr_matrix(dense.T))
    users = model.user_factors.double().numpy()
    expected = users @ ys.T
    scores = users @ model.item_factors.double().numpy().T
    assert np.abs(scores - expected).max() < 1e-3 * np.abs(expected).max()
