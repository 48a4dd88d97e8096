"""The evaluate stage: a model's metrics on a held-out split, for early stopping and the test."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.config import RATING_METRICS, ConfigError, TrainConfig

__all__ = ["evaluate_model", "require_objective"]


def _user_rows(matrix: sp.csr_matrix) -> np.ndarray:
    return np.flatnonzero(np.diff(matrix.indptr) > 0)


def evaluate_model(
    model: Any,
    cfg: TrainConfig,
    seen: sp.csr_matrix,
    truth: sp.csr_matrix,
    *,
    fold_in: sp.csr_matrix | None = None,
    max_users: int | None = None,
    seed: int = 0,
    objective_only: bool = False,
) -> dict[str, float]:
    """Metrics of `model` against `truth` (users x items), `seen` items excluded from rankings.

    Ranking metrics over all items for every model (``recsys.eval.evaluate``); rmse and mae too
    for models that predict ratings (a weighting with ``uses_global_mean``). `fold_in` (strong
    generalization) holds the histories of held-out users: their vectors come from
    ``model.fold_in`` and their history is what is excluded. `max_users` evaluates a random
    sample of the users with held-out items; `objective_only` computes just the metric early
    stopping needs, ranking no deeper than the objective's k (a validation every epoch then
    never pays for the candidate-depth cut-offs of the test).
    """
    from recsys.eval import evaluate, rating_metrics

    truth = sp.csr_matrix(truth)
    users = _user_rows(truth)
    if max_users is not None and users.size > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    if users.size == 0:
        raise ConfigError("the evaluation split holds no interactions; check the split settings")
    if fold_in is not None:
        seen_rows = sp.csr_matrix(fold_in)[users]
        user_vectors = model.fold_in(seen_rows)
        offsets = None
    else:
        seen_rows = sp.csr_matrix(seen)[users]
        user_vectors = model.user_embeddings(users)
        offsets = model.user_offsets(users)
    names = _ranking_metrics(cfg, objective_only)
    metrics: dict[str, float] = {}
    if names is None or names:
        popularity = np.bincount(sp.csr_matrix(seen).indices, minlength=truth.shape[1])
        found = evaluate(
            user_vectors,
            model.item_embeddings(),
            seen_rows,
            truth[users],
            ks=_cutoffs(cfg, objective_only),
            item_popularity=popularity,
            metrics=names,
        )
        metrics.update(found)
    if model.weighting.uses_global_mean:
        clip = None if cfg.eval.rating_clip is None else tuple(cfg.eval.rating_clip)
        found = rating_metrics(
            user_vectors, model.item_embeddings(), truth[users], user_offsets=offsets, clip=clip
        )
        metrics.update(found)
    return {k: (v if isinstance(v, int) else float(v)) for k, v in metrics.items()}


def _ranking_metrics(cfg: TrainConfig, objective_only: bool) -> list[str] | None:
    """The ranking metrics to compute: all (None), ``eval.metrics``, or just the objective's
    (none when the objective is a rating metric)."""
    if not objective_only:
        return None if cfg.eval.metrics is None else list(cfg.eval.metrics)
    name = cfg.eval.objective.partition("@")[0]
    return [] if name in RATING_METRICS else [name]


def _cutoffs(cfg: TrainConfig, objective_only: bool) -> list[int]:
    """``eval.k``, or with `objective_only` those up to the objective's k (all for a rating
    objective, whose ranking metrics are not computed then)."""
    ks = list(cfg.eval.k)
    _, _, at = cfg.eval.objective.partition("@")
    if objective_only and at.isdigit():
        ks = [k for k in ks if k <= int(at)]
    return ks


def require_objective(metrics: dict[str, float], objective: str) -> None:
    """ConfigError (one line) when the evaluation produced no `objective` metric."""
    if objective not in metrics:
        raise ConfigError(
            f"eval.objective={objective}: the evaluation produced no such metric; it has "
            f"{', '.join(sorted(metrics))}"
        )
