"""Posterior sampling (BPMF): conditional draws, the Normal-Wishart prior, averaging."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.als import ALS
from recsys.als.posterior import draw_normal_wishart

from .reference import (
    explicit_problem,
    random_matrix,
    reference_user_systems,
)


@pytest.mark.parametrize(
    ("weighting", "n_factors"), [("explicit", 6), ("explicit", 24), ("ials", 6), ("ials", 24)]
)
def test_posterior_draws_follow_the_conditional_gaussian(weighting, n_factors):
    """Draws of one user (the row repeated) have mean A^-1 b and covariance sigma^2 A^-1."""
    dense = random_matrix()
    model = ALS(
        n_factors=n_factors, regularization=0.1, bias_regularization=0.05, weighting=weighting,
        alpha0=0.1, iterations=2, device="cpu", dtype="float64",
    ).fit(sp.csr_matrix(dense))  # fmt: skip
    user, draws, sigma = 5, 3000, 0.7
    lhs, rhs = reference_user_systems(model, dense)[user]
    rows = sp.csr_matrix(np.repeat(dense[user : user + 1], draws, axis=0))
    generator = torch.Generator().manual_seed(0)
    zeros = torch.zeros(draws, n_factors, dtype=torch.float64)
    eq = model.equations()
    factors, bias = eq.solve(
        eq.rows(rows), model.item_factors, model.item_bias, zeros, zeros[:, 0],
        noise_scale=sigma, generator=generator,
    )  # fmt: skip
    samples = torch.cat([factors, bias[:, None]], dim=1).numpy()
    # whiten with the reference: z = L^T (x - mean) / sigma must be standard normal
    chol = np.linalg.cholesky(lhs)
    z = (samples - np.linalg.solve(lhs, rhs)) @ chol / sigma
    assert np.abs(z.mean(0)).max() < 4.5 / np.sqrt(draws)
    assert np.abs(np.cov(z.T) - np.eye(z.shape[1])).max() < 0.12


@pytest.mark.parametrize("n_factors", [6, 24])
def test_draws_with_a_shared_prior_follow_the_conditional_gaussian(n_factors):
    """With a prior N(mu, P^-1) and no per-row regularization (the learned-prior sweeps)."""
    dense = random_matrix()
    model = ALS(
        n_factors=n_factors, regularization=0.1, weighting="ials", alpha0=0.1, iterations=2,
        device="cpu", dtype="float64",
    ).fit(sp.csr_matrix(dense))  # fmt: skip
    rng = np.random.default_rng(1)
    k = n_factors + 1  # solve coordinates [x, b / c]
    root = rng.normal(size=(k, k))
    precision, mean = root @ root.T / k + 0.5 * np.eye(k), rng.normal(size=k)
    user, draws, sigma = 7, 3000, 0.5
    eq = model.equations()
    c = eq.bias_column
    fixed = np.hstack([model.item_factors.numpy(), np.full((dense.shape[1], 1), c)])
    offsets = model.item_bias.numpy() + model.global_bias
    a, cols = model.weighting.all_pairs_weight, np.flatnonzero(dense[user])
    values = torch.tensor(dense[user, cols])
    d = model.weighting.observed_weight(values).numpy()
    g = model.weighting.observed_target(values).numpy()
    lhs = a * fixed.T @ fixed + fixed[cols].T @ (d[:, None] * fixed[cols]) + precision
    rhs = fixed[cols].T @ (g - d * offsets[cols]) - a * fixed.T @ offsets + precision @ mean
    rows = sp.csr_matrix(np.repeat(dense[user : user + 1], draws, axis=0))
    structure = eq.rows(rows).without_regularization()
    zeros = torch.zeros(draws, n_factors, dtype=torch.float64)
    factors, bias = eq.solve(
        structure, model.item_factors, model.item_bias, zeros, zeros[:, 0],
        noise_scale=sigma, generator=torch.Generator().manual_seed(0),
        prior=(torch.from_numpy(precision), torch.from_numpy(mean)),
    )  # fmt: skip
    samples = torch.cat([factors, bias[:, None] / c], dim=1).numpy()
    z = (samples - np.linalg.solve(lhs, rhs)) @ np.linalg.cholesky(lhs) / sigma
    assert np.abs(z.mean(0)).max() < 4.5 / np.sqrt(draws)
    assert np.abs(np.cov(z.T) - np.eye(k)).max() < 0.12


def test_normal_wishart_draw_concentrates_on_the_vectors_mean_and_precision():
    rng = np.random.default_rng(0)
    true_mean, root = np.array([1.0, -2.0, 0.5]), rng.normal(size=(3, 3))
    covariance = root @ root.T + np.eye(3)
    vectors = rng.multivariate_normal(true_mean, covariance, size=20000)
    mu, precision = draw_normal_wishart(vectors, rng)
    np.testing.assert_allclose(mu, true_mean, atol=0.06)
    np.testing.assert_allclose(precision, np.linalg.inv(covariance), atol=0.05)
    # two vectors: the hyperprior (mu0 = 0, beta0 = 2) shrinks the mean to 2 * 3 / (2 + 2)
    draws = [draw_normal_wishart(np.full((2, 3), 3.0), rng)[0] for _ in range(2000)]
    np.testing.assert_allclose(np.mean(draws, axis=0), 1.5, atol=0.2)


@pytest.mark.parametrize("prior", ["learned", "fixed"])
def test_posterior_average_predicts_held_out_ratings_better_than_the_point_estimate(prior):
    train, rows, cols, values = explicit_problem()

    def rmse(m: ALS) -> float:
        return float(np.sqrt(np.mean((m.predict(rows, cols) - values) ** 2)))

    model = ALS(
        n_factors=12, regularization=0.02, weighting="explicit", iterations=10, device="cpu"
    ).fit(train)
    point = rmse(model)
    model.sample_posterior(train, samples=40, burn_in=5, prior=prior)
    assert rmse(model) < point - 0.02


def test_sample_posterior_concatenates_draws_and_round_trips(tmp_path):
    train, rows, cols, _ = explicit_problem(n_users=40, n_items=30)
    model = ALS(n_factors=4, regularization=0.1, weighting="explicit", iterations=3, device="cpu")
    model.fit(train)
    twin = ALS.load(model.save(tmp_path / "map.npz"))
    model.sample_posterior(train, samples=3, burn_in=1, seed=7)
    assert model.user_factors.shape == (40, 12) and model.item_factors.shape == (30, 12)
    assert model.item_embeddings().shape == (30, 13)  # 3 draws x 4 factors + the item bias
    history = [h for h in model.history if h.get("phase") == "posterior"]
    assert len(history) == 4 and all(h["noise_precision"] > 0 for h in history)
    # the average of the draws' predictions is the prediction of the side-by-side model
    draws = twin.sample_posterior(train, samples=3, burn_in=1, seed=7)
    assert torch.equal(draws.user_factors, model.user_factors)  # same seed, same draws
    loaded = ALS.load(model.save(tmp_path / "posterior.npz"))
    assert loaded.posterior == {"samples": 3, "burn_in": 1, "seed": 7, "prior": "learned"}
    np.testing.assert_allclose(loaded.predict(rows, cols), model.predict(rows, cols), rtol=1e-6)
    with pytest.raises(ValueError, match="averages 3 posterior draws"):
        loaded.fold_in(train[:2])
    with pytest.raises(ValueError, match="averages 3 posterior draws"):
        loaded.fit(train, resume=True)
    loaded.fit(train)  # from scratch: a single model again
    assert loaded.posterior is None and loaded.user_factors.shape == (40, 4)


def test_sample_posterior_rejects_bad_arguments():
    train, *_ = explicit_problem(n_users=20, n_items=15)
    model = ALS(n_factors=3, regularization=0.1, weighting="explicit", iterations=1, device="cpu")
    with pytest.raises(RuntimeError, match="not fitted"):
        model.sample_posterior(train)
    model.fit(train)
    with pytest.raises(ValueError, match="samples must be"):
        model.sample_posterior(train, samples=0)
    with pytest.raises(ValueError, match="user_items is 20 x 14"):
        model.sample_posterior(train[:, :14])
    cg = ALS(n_factors=3, regularization=0.1, weighting="explicit", solver="cg", iterations=1)
    with pytest.raises(ValueError, match="solver='cholesky'"):
        cg.fit(train).sample_posterior(train)
