"""Degenerate settings that once trained silently wrong models: zero observed weights (hkv with
alpha = 0), factors collapsing under a huge regularization, ill-conditioned solves."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.als import ALS, TrainingError
from recsys.als.weightings.hkv import HuKorenVolinsky
from recsys.data import synthetic_preset

from .reference import random_matrix, reference_user_update

BLOCKS = sp.csr_matrix(np.kron(np.eye(2), np.ones((5, 5))))


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_hkv_with_alpha_zero_learns_the_blocks(solver):
    """alpha = 0 is implicit's objective on binary data (weight 1 per observed pair): the
    observed weight d is 0 but the target still counts."""
    model = ALS(n_factors=2, regularization=0.1, alpha=0.0, use_bias=False, solver=solver)
    model.fit(BLOCKS)
    inside, across = model.predict([0, 0], [0, 9])
    assert inside > 0.9 and abs(across) < 0.01


@dataclass
class _SomeZeroWeights(HuKorenVolinsky):
    """Weight 0 on the entries of value 1, alpha * (r - 1) on the others."""

    def observed_weight(self, values: torch.Tensor) -> torch.Tensor:
        return self.alpha * (values - 1.0)


@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("n_factors", [6, 24])  # mostly direct / mostly Woodbury
@pytest.mark.parametrize("weighting", [HuKorenVolinsky(alpha=0.0), _SomeZeroWeights(alpha=2.0)])
def test_zero_observed_weights_solve_exactly(weighting, n_factors, use_bias):
    dense = random_matrix(seed=5)
    model = ALS(
        n_factors=n_factors, regularization=0.1, weighting=weighting, use_bias=use_bias,
        iterations=2,
    ).fit(sp.csr_matrix(dense))  # fmt: skip
    xs, bs = reference_user_update(model, dense)
    factors, bias = model.fold_in_factors(sp.csr_matrix(dense))
    assert np.abs(factors.double().numpy() - xs).max() / np.abs(xs).max() < 1e-5
    if use_bias:
        assert np.abs(bias.double().numpy() - bs).max() / np.abs(bs).max() < 1e-5


def test_hkv_alpha_zero_without_regularization_trains():
    model = ALS(n_factors=2, regularization=0.0, alpha=0.0, use_bias=False).fit(BLOCKS)
    inside, across = model.predict([0, 0], [0, 9])
    assert inside > 0.9 and abs(across) < 0.01


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("weighting", ["hkv", "ials", "explicit"])
def test_factors_collapsed_by_huge_regularization_fail_the_fit(weighting, dtype):
    reg = 1e38 if dtype == "float32" else 1e300
    model = ALS(n_factors=4, regularization=reg, weighting=weighting, dtype=dtype, iterations=3)
    with pytest.raises(
        TrainingError, match=r"(collapsed at epoch 1|exceeds the range).*lower regularization"
    ):
        model.fit(sp.csr_matrix(random_matrix(seed=1)))


def test_collapse_is_one_line_and_a_floating_point_error():
    with pytest.raises(FloatingPointError) as info:
        ALS(n_factors=4, regularization=1e38).fit(BLOCKS)
    assert "\n" not in str(info.value) and "regularization=1e+38" in str(info.value)


def test_an_empty_matrix_is_not_a_collapse():
    model = ALS(n_factors=4).fit(sp.csr_matrix((3, 4), dtype=np.float32))
    assert model.n_users == 3


def _with_stored_zeros() -> sp.csr_matrix:
    """Ratings 0, 5 / 0, 5: the zeros are stored entries."""
    data = np.array([0.0, 5.0, 0.0, 5.0])
    return sp.csr_matrix((data, ([0, 0, 1, 1], [0, 1, 0, 1])), shape=(2, 2))


def test_explicit_ratings_of_zero_are_ratings():
    ratings = _with_stored_zeros()
    assert ratings.nnz == 4
    model = ALS(n_factors=2, regularization=0.01, weighting="explicit", iterations=5)
    model.fit(ratings)
    assert model.global_bias == pytest.approx(2.5)
    low, high = model.predict([0, 0], [0, 1])
    assert low < 1.0 and high > 4.0  # the 0 pulls its item down, as rating metrics assume
    # fold-in sees the 0 as well: user 0 folded in without it scores item 0 differently
    without = ratings.copy()
    without.eliminate_zeros()
    scores = [model.fold_in(rows) @ model.item_embeddings()[0] for rows in (ratings, without)]
    assert not np.allclose(scores[0], scores[1], atol=0.1)


def test_implicit_stored_zeros_are_no_interactions():
    zeros = _with_stored_zeros()
    dropped = zeros.copy()
    dropped.eliminate_zeros()
    a = ALS(n_factors=2, iterations=3).fit(zeros)
    b = ALS(n_factors=2, iterations=3).fit(dropped)
    assert torch.equal(a.item_factors, b.item_factors)


@pytest.mark.parametrize(("dtype", "alpha"), [("float32", 1e30), ("float64", 1e300)])
def test_ill_conditioned_solves_fail_the_fit(dtype, alpha):
    model = ALS(n_factors=8, regularization=0.0, alpha=alpha, use_bias=False, dtype=dtype)
    with pytest.raises(TrainingError, match=r"too ill-conditioned.*raise regularization") as info:
        model.fit(sp.csr_matrix(random_matrix(seed=1)))
    assert "\n" not in str(info.value) and "float64'" not in str(info.value)


def test_float32_ill_conditioning_suggests_float64():
    model = ALS(n_factors=8, regularization=0.0, alpha=1e9, use_bias=False)
    with pytest.raises(TrainingError, match=r"too ill-conditioned.*use dtype='float64'"):
        model.fit(sp.csr_matrix(random_matrix(seed=1)))
    ALS(n_factors=8, regularization=0.0, alpha=1e9, use_bias=False, dtype="float64").fit(
        sp.csr_matrix(random_matrix(seed=1))
    )


def test_half_the_digits_lost_is_a_warning_naming_the_settings():
    """alpha 1e6 without regularization: finite factors, but recall fell from 0.44 to 0.08
    without a word; the systems' condition number (about 4e6) is past sqrt(1 / eps)."""
    model = ALS(n_factors=8, regularization=0.0, alpha=1e6, use_bias=False, iterations=2)
    with pytest.warns(RuntimeWarning, match=r"ill-conditioned.*regularization or lower alpha"):
        model.fit(synthetic_preset("tiny"))


@pytest.mark.parametrize("weighting", ["hkv", "ials", "explicit"])
def test_well_conditioned_fits_pass(weighting):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        ALS(n_factors=16, weighting=weighting, alpha=40.0, iterations=3).fit(
            sp.csr_matrix(random_matrix(seed=2))
        )


@pytest.mark.parametrize("weighting", ["hkv", "ials"])
def test_negative_confidences_are_a_one_line_data_error(weighting):
    from recsys.data.errors import DataError

    values = sp.csr_matrix(np.array([[1.0, -2.0], [0.0, 3.0]]))
    with pytest.raises(DataError, match=r"needs them >= 0.*Use weighting='explicit'") as info:
        ALS(n_factors=2, weighting=weighting).fit(values)
    assert "\n" not in str(info.value)
