"""One-call evaluation: full ranking of a model's embeddings, or metrics of given candidate lists.

``evaluate`` is what the training pipeline calls (each epoch for early stopping, and at the end):
it ranks every catalog item for the users that have test items, excludes their training items,
and returns the ranking and beyond-accuracy metrics as a flat dict of plain Python numbers, ready
for logging. ``evaluate_candidates`` computes the same metrics on lists produced elsewhere (a Faiss
index, a retrieval stage) and, given the exact lists, the index's recall against exact search.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from recsys.eval.beyond import BEYOND_METRICS, beyond_accuracy_metrics
from recsys.eval.lists import as_id_tensor, first_occurrence, relevant_csr
from recsys.eval.ranking import (
    RANKING_METRICS,
    check_ks,
    membership,
    ranking_metrics,
    recall_vs_exact,
)
from recsys.scoring import DEFAULT_MEMORY_BUDGET, topk_items
from recsys.scoring.arrays import ArrayLike, as_float_tensor, canonical_csr, resolve_device

#: Every metric name ``evaluate`` accepts in ``metrics=``.
ALL_METRICS = RANKING_METRICS + BEYOND_METRICS


def _split_metric_names(
    metrics: Sequence[str] | None,
) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """(ranking names, beyond names); None for a group means its defaults."""
    if metrics is None:
        return None, None
    if isinstance(metrics, str):
        metrics = [metrics]
    unknown = sorted(set(metrics) - set(ALL_METRICS) - {"recall_vs_exact"})
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(ALL_METRICS)}")
    return (
        tuple(m for m in metrics if m in RANKING_METRICS),
        tuple(m for m in metrics if m in BEYOND_METRICS),
    )


def _scope(users: ArrayLike | None, n_rows: int) -> np.ndarray:
    if users is None:
        return np.arange(n_rows, dtype=np.int64)
    u = users.cpu().numpy() if isinstance(users, torch.Tensor) else np.asarray(users)
    u = u.astype(np.int64).reshape(-1)
    if u.size and (u.min() < 0 or u.max() >= n_rows):
        raise ValueError(f"users holds rows outside [0, {n_rows})")
    return u


def item_degrees(matrix: sp.spmatrix) -> np.ndarray:
    """Number of users with a stored, non-zero entry for each item (training popularity)."""
    csr = canonical_csr(matrix, "train", (None, None))
    return np.bincount(csr.indices[csr.data != 0], minlength=csr.shape[1]).astype(np.int64)


def _collect(
    ids: torch.Tensor,
    test: sp.csr_matrix,
    rows: np.ndarray,
    n_out_of_scope_skipped: int,
    ks: tuple[int, ...],
    names: tuple[tuple[str, ...] | None, tuple[str, ...] | None],
    n_items: int,
    item_popularity: ArrayLike | None,
    n_users: int | None,
    item_features: ArrayLike | sp.spmatrix | None,
    dev: torch.device,
) -> dict[str, float]:
    ranking_names, beyond_names = names
    out: dict[str, float] = {}
    if ranking_names is None or ranking_names:
        res = ranking_metrics(ids, test, ks, users=rows, metrics=ranking_names, device=dev)
        out.update(res)  # type: ignore[arg-type]
    if beyond_names is None or beyond_names:
        out.update(
            beyond_accuracy_metrics(
                ids,
                n_items,
                ks,
                item_popularity=item_popularity,
                n_users=n_users,
                item_features=item_features,
                metrics=beyond_names,
                device=dev,
            )
        )
    n_scored = int(rows.size)
    out["n_users_evaluated"] = int(out.get("n_users_evaluated", n_scored))
    out["n_users_skipped"] = int(out.get("n_users_skipped", 0)) + n_out_of_scope_skipped
    return out


@torch.no_grad()
def evaluate(
    user_vectors: ArrayLike,
    item_vectors: ArrayLike,
    train: sp.spmatrix | None,
    test: sp.spmatrix,
    ks: int | Iterable[int] = (20,),
    *,
    user_offsets: ArrayLike | None = None,
    item_popularity: ArrayLike | None = None,
    item_features: ArrayLike | sp.spmatrix | None = None,
    metrics: Sequence[str] | None = None,
    users: ArrayLike | None = None,
    relevance_threshold: float | None = None,
    device: str | torch.device | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    precision: str = "auto",
) -> dict[str, float]:
    """Full-ranking evaluation of embeddings: score all items, exclude train items, measure.

    Args:
        user_vectors: (n_users, d) user embeddings (numpy or torch), one row per train/test row,
            e.g. ``model.user_embeddings(np.arange(n_users))``.
        item_vectors: (n_items, d) item embeddings, e.g. ``model.item_embeddings()``.
        train: (n_users x n_items) training interactions; each user's stored items are never
            recommended to them. None ranks every item.
        test: held-out interactions, same shape; stored non-zero entries (or entries >=
            ``relevance_threshold``) are the relevant items.
        ks: cut-offs; the top max(ks) items are computed once.
        user_offsets: per-user constant (b_u + global mean); accepted for symmetry with the model
            API, it cannot change a ranking and is ignored here.
        item_popularity: (n_items,) popularity for ``popularity_percentile`` and ``novelty``;
            default: the number of training users of each item (needs ``train``).
        item_features: feature vectors for ``diversity``; default: ``item_vectors`` (with an ALS
            model that has biases these include the bias dimension: pass ``model.item_factors``
            to measure diversity on the factors alone).
        metrics: names from :data:`ALL_METRICS`; default: all of them.
        users: rows to consider (default: all). Only those with a relevant test item are scored.
        device: where to compute; default: the device of ``user_vectors`` if a tensor, else CPU.
        memory_budget_bytes: bound on one block of scores in the top-k computation.
        precision: how the top-k product runs (see :func:`recsys.scoring.topk_items`); every
            choice returns the float32 top-k, ``"auto"`` picks the fastest.

    Returns:
        ``{"recall@20": ..., "ndcg@20": ..., "coverage@20": ..., "n_users_evaluated": n,
        "n_users_skipped": m, ...}``: Python floats (and the two counts as ints). Every metric,
        beyond-accuracy ones included, is computed over the lists of the scored users.
    """
    del user_offsets  # a constant per user does not change its ranking
    dev = resolve_device(device, user_vectors, item_vectors)
    items = as_float_tensor(item_vectors, "item_vectors", dev)
    n_items = items.shape[0]
    n_rows = int(user_vectors.shape[0])
    test_csr = relevant_csr(
        canonical_csr(test, "test", (n_rows, n_items)), "test", relevance_threshold
    )
    train_csr = None if train is None else canonical_csr(train, "train", (n_rows, n_items))
    ks_ = check_ks(ks)
    names = _split_metric_names(metrics)

    scope = _scope(users, n_rows)
    rows = scope[np.diff(test_csr.indptr)[scope] > 0]
    if item_popularity is None and train_csr is not None:
        item_popularity = item_degrees(train_csr)
    ids = _full_ranking(
        user_vectors, items, train_csr, rows, max(ks_), memory_budget_bytes, precision
    )
    return _collect(
        ids,
        test_csr,
        rows,
        int(scope.size - rows.size),
        ks_,
        names,
        n_items,
        item_popularity,
        None if train_csr is None else n_rows,
        items if item_features is None else item_features,
        dev,
    )


def _full_ranking(
    user_vectors: ArrayLike,
    items: torch.Tensor,
    train: sp.csr_matrix | None,
    rows: np.ndarray,
    k: int,
    memory_budget_bytes: int,
    precision: str,
) -> torch.Tensor:
    """Top-k ids of the given user rows over every item, their training items excluded."""
    dev = items.device
    rows_t = torch.from_numpy(rows).to(dev)
    uv = as_float_tensor(user_vectors, "user_vectors", dev).index_select(0, rows_t)
    exclude = None if train is None else train[rows]
    ids, _ = topk_items(
        uv,
        items,
        k,
        exclude=exclude,
        memory_budget_bytes=memory_budget_bytes,
        device=dev,
        precision=precision,
    )
    return ids


def drop_excluded(
    candidate_ids: ArrayLike,
    exclude: sp.spmatrix,
    users: ArrayLike | None = None,
    *,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Remove each user's excluded items (e.g. seen items) from candidate lists, keeping order.

    Repeated ids are dropped too (the first occurrence stays). The remaining ids move left and the
    freed slots at the end become -1. ``users`` gives the row
    of ``exclude`` for each list (default: list u is row u). Useful for over-fetched ANN results.
    """
    dev = resolve_device(device, candidate_ids)
    ids = as_id_tensor(candidate_ids, "candidate_ids", dev)
    csr = canonical_csr(exclude, "exclude", (None, None))
    rows = _scope(users, csr.shape[0]) if users is not None else np.arange(csr.shape[0])
    if rows.size != ids.shape[0]:
        raise ValueError(f"{ids.shape[0]} candidate lists but {rows.size} users")
    keep = first_occurrence(ids) & ~membership(ids, csr, rows, dev)
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    return torch.where(keep, ids, -1).gather(1, order)


@torch.no_grad()
def evaluate_candidates(
    candidate_ids: ArrayLike,
    test: sp.spmatrix,
    ks: int | Iterable[int] = (20,),
    *,
    users: ArrayLike | None = None,
    exact_ids: ArrayLike | None = None,
    exclude: sp.spmatrix | None = None,
    item_popularity: ArrayLike | None = None,
    n_users: int | None = None,
    item_features: ArrayLike | sp.spmatrix | None = None,
    metrics: Sequence[str] | None = None,
    relevance_threshold: float | None = None,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """The metrics of :func:`evaluate` on given candidate lists (e.g. a Faiss index's results).

    Args:
        candidate_ids: (U, K) item ids, best first, -1 for empty slots (Faiss convention).
        test: (users x items) held-out interactions; ``users`` maps lists to its rows.
        ks: cut-offs (each at most K).
        users: test row of each list (default: list u is row u).
        exact_ids: (U, >= max(ks)) exact top lists for the same users: adds ``recall_vs_exact@k``.
        exclude: (users x items) items to drop from the lists first (e.g. training items when the
            index was searched without a filter); the rest move up.
        item_popularity, n_users, item_features: inputs of the beyond-accuracy metrics (see
            :func:`recsys.eval.beyond.beyond_accuracy_metrics`); those without inputs are left out.
        metrics: names from :data:`ALL_METRICS` (plus ``"recall_vs_exact"``); default: all.
    """
    dev = resolve_device(device, candidate_ids)
    ids = as_id_tensor(candidate_ids, "candidate_ids", dev)
    test_csr = relevant_csr(test, "test", relevance_threshold)
    n_items = test_csr.shape[1]
    ks_ = check_ks(ks, ids.shape[1])
    names = _split_metric_names(metrics)
    scope = _scope(users, test_csr.shape[0])
    if scope.size != ids.shape[0]:
        raise ValueError(
            f"{ids.shape[0]} candidate lists for {scope.size} users: pass users= (the test row of "
            "each list) or one list per test row"
        )
    if exclude is not None:
        ids = drop_excluded(ids, exclude, scope, device=dev)

    exact = None if exact_ids is None else as_id_tensor(exact_ids, "exact_ids", dev)
    if exact is not None and exact.shape[0] != ids.shape[0]:
        raise ValueError(f"exact_ids has {exact.shape[0]} rows for {ids.shape[0]} candidate lists")

    has_test = np.diff(test_csr.indptr)[scope] > 0
    keep = torch.from_numpy(np.flatnonzero(has_test)).to(dev)
    out = _collect(
        ids.index_select(0, keep),
        test_csr,
        scope[has_test],
        int(scope.size - has_test.sum()),
        ks_,
        names,
        n_items,
        item_popularity,
        n_users,
        item_features,
        dev,
    )
    if exact is not None and (metrics is None or "recall_vs_exact" in metrics):
        for k in ks_:  # over all lists: the index's recall does not depend on the test items
            out[f"recall_vs_exact@{k}"] = recall_vs_exact(ids, exact, k)
    return out
