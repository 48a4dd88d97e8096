"""Ranking metrics from top-k id lists and a test matrix, batched on torch (CPU or CUDA).

Inputs are the (users x K) item-id lists of a recommender or of an ANN index (-1 marks an empty
slot, as in Faiss) and a scipy CSR test matrix (users x items) whose stored non-zero entries are the
relevant items. Hits are found for all users at once: every (user, item) pair becomes the key
``user * n_items + item``; the test matrix's keys are sorted already (canonical CSR), so one
``torch.searchsorted`` marks every hit. A repeated id in a list counts once (its first position).

Users without relevant test items are not scored (every metric would be undefined or zero); they
are counted as ``n_users_skipped``. All metrics are means over the scored users of these per-user
values, with ``hits@k`` the relevant items among the first k slots, ``n`` the user's relevant
items and ``rank_j`` = 1 if slot j holds a relevant item:

- ``recall@k``         hits@k / n
- ``recall_capped@k``  hits@k / min(k, n), the normalisation of Liang et al. 2018 (VAE-CF) used by
                       Rendle et al. 2022: it reaches 1 whenever the list is as good as it can be
- ``precision@k``      hits@k / k (empty slots count as misses)
- ``hitrate@k``        1 if hits@k > 0
- ``ndcg@k``           sum_j rank_j / log2(j + 1) over j <= k, divided by the ideal DCG
                       sum_{j <= min(k, n)} 1 / log2(j + 1) (binary relevance)
- ``map@k``            sum_j rank_j * precision@j over j <= k, divided by min(k, n)
- ``mrr@k``            1 / (position of the first hit) if it is within the first k slots, else 0
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from recsys.eval.lists import as_id_tensor, first_occurrence, relevant_csr
from recsys.scoring.arrays import ArrayLike, resolve_device

#: The names accepted in ``metrics=`` (each is reported as ``"<name>@<k>"`` for every k).
RANKING_METRICS = (
    "recall",
    "recall_capped",
    "precision",
    "ndcg",
    "map",
    "hitrate",
    "mrr",
)


def check_ks(ks: int | Iterable[int], max_k: int | None = None) -> tuple[int, ...]:
    """The sorted distinct cut-offs, validated (positive, and at most the list length if given)."""
    out = (int(ks),) if isinstance(ks, (int, np.integer)) else tuple(sorted({int(k) for k in ks}))
    if not out or min(out) < 1:
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    if max_k is not None and max(out) > max_k:
        raise ValueError(
            f"k={max(out)} asked for but the id lists hold only {max_k} items per user: "
            "compute at least max(ks) items per user"
        )
    return out


def _check_metric_names(metrics: Sequence[str] | None) -> tuple[str, ...]:
    if metrics is None:
        return RANKING_METRICS
    unknown = sorted(set(metrics) - set(RANKING_METRICS))
    if unknown:
        raise ValueError(f"unknown ranking metrics {unknown}; choose from {list(RANKING_METRICS)}")
    return tuple(m for m in RANKING_METRICS if m in metrics)


def _row_index(users: ArrayLike | None, n_rows: int, n_lists: int, dev: torch.device) -> np.ndarray:
    """Test-matrix row of each id list (identity when ``users`` is None)."""
    if users is None:
        if n_lists != n_rows:
            raise ValueError(
                f"{n_lists} id lists but the test matrix has {n_rows} rows: pass users= (the test "
                "row of each list) or one list per test row"
            )
        return np.arange(n_rows, dtype=np.int64)
    u = users.cpu().numpy() if isinstance(users, torch.Tensor) else np.asarray(users)
    u = u.astype(np.int64).reshape(-1)
    if u.size != n_lists:
        raise ValueError(f"users has {u.size} entries but there are {n_lists} id lists")
    if u.size and (u.min() < 0 or u.max() >= n_rows):
        raise ValueError(f"users holds rows outside [0, {n_rows}) of the test matrix")
    return u


def membership(
    ids: torch.Tensor, matrix: sp.csr_matrix, rows: np.ndarray, dev: torch.device
) -> torch.Tensor:
    """Boolean (U, K): slot j of list u holds an item stored in row ``rows[u]`` of ``matrix``.

    ``matrix`` must be canonical (sorted indices); -1 slots are never members.
    """
    n_items = matrix.shape[1]
    if ids.numel() and int(ids.max()) >= n_items:
        raise ValueError(
            f"an id list holds item {int(ids.max())} but the matrix has {n_items} items"
        )
    counts = np.diff(matrix.indptr).astype(np.int64)
    keys = torch.from_numpy(
        np.repeat(np.arange(matrix.shape[0], dtype=np.int64), counts) * n_items
        + matrix.indices.astype(np.int64)
    ).to(dev)
    if keys.numel() == 0:
        return torch.zeros(ids.shape, dtype=torch.bool, device=dev)
    query = torch.from_numpy(rows).to(dev)[:, None] * n_items + ids.clamp(min=0)
    pos = torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)
    return (ids >= 0) & (keys[pos] == query)


def hit_matrix(
    ids: torch.Tensor, test: sp.csr_matrix, rows: np.ndarray, dev: torch.device
) -> torch.Tensor:
    """Boolean (U, K): slot j of list u holds an item in test row ``rows[u]`` (first time seen)."""
    return membership(ids, test, rows, dev) & first_occurrence(ids)


def per_user_metrics(
    hits: torch.Tensor, n_relevant: torch.Tensor, ks: Sequence[int], metrics: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Per-user float64 metric values from a (U, K) hit mask and each user's relevant count > 0."""
    dev = hits.device
    k_max = max(ks)
    h = hits[:, :k_max].to(torch.float64)
    n = n_relevant.to(torch.float64)
    cum = torch.cumsum(h, dim=1)  # hits within the first j slots
    pos = torch.arange(1, k_max + 1, device=dev, dtype=torch.float64)
    discount = 1.0 / torch.log2(pos + 1.0)
    dcg = torch.cumsum(h * discount, dim=1)
    ideal = torch.cumsum(discount, dim=0)  # ideal DCG with j relevant items on top
    ap_sum = torch.cumsum(h * cum / pos, dim=1)
    any_hit = h > 0
    first = torch.where(any_hit.any(1), any_hit.to(torch.int8).argmax(1), k_max)  # 0-based slot

    out: dict[str, torch.Tensor] = {}
    for k in ks:
        hk = cum[:, k - 1]
        capped = torch.clamp(n, max=k)
        for m in metrics:
            if m == "recall":
                v = hk / n
            elif m == "recall_capped":
                v = hk / capped
            elif m == "precision":
                v = hk / k
            elif m == "hitrate":
                v = (hk > 0).to(torch.float64)
            elif m == "ndcg":
                v = dcg[:, k - 1] / ideal[capped.long() - 1]
            elif m == "map":
                v = ap_sum[:, k - 1] / capped
            else:  # mrr
                v = torch.where(first < k, 1.0 / (first + 1).to(torch.float64), 0.0)
            out[f"{m}@{k}"] = v
    return out


@torch.no_grad()
def ranking_metrics(
    topk_ids: ArrayLike,
    test: sp.spmatrix,
    ks: int | Iterable[int] = (10, 20),
    *,
    users: ArrayLike | None = None,
    metrics: Sequence[str] | None = None,
    relevance_threshold: float | None = None,
    device: str | torch.device | None = None,
    per_user: bool = False,
) -> dict[str, float] | dict[str, np.ndarray]:
    """Recall, capped recall, precision, NDCG, MAP, hit rate and MRR at every k in ``ks``.

    Args:
        topk_ids: (U, K) item ids per user, best first (numpy or torch; -1 = empty slot). Works for
            exact top-k lists and for ANN candidates alike. K must be at least max(ks).
        test: scipy sparse (users x items) held-out interactions; stored non-zero entries are the
            relevant items (or those >= ``relevance_threshold`` when given, e.g. ratings >= 4).
        ks: cut-offs.
        users: test row of each id list; default: list u belongs to test row u.
        metrics: subset of :data:`RANKING_METRICS` (default: all).
        device: where to compute (default: the device of ``topk_ids`` if a tensor, else the CPU).
        per_user: return the per-user values (numpy float64, scored users only, plus ``"user"`` =
            their test rows) instead of the means, e.g. for significance tests.

    Returns:
        Flat dict of Python floats: ``"recall@20"``, ``"ndcg@10"``, ... plus ``n_users_evaluated``
        and ``n_users_skipped`` (lists whose user has no relevant test item) as ints.
    """
    dev = resolve_device(device, topk_ids)
    ids = as_id_tensor(topk_ids, "topk_ids", dev)
    ks_ = check_ks(ks, ids.shape[1])
    names = _check_metric_names(metrics)
    rel = relevant_csr(test, "test", relevance_threshold)
    rows = _row_index(users, rel.shape[0], ids.shape[0], dev)

    n_rel_all = np.diff(rel.indptr).astype(np.int64)[rows]
    scored = np.flatnonzero(n_rel_all > 0)
    n_skipped = int(rows.size - scored.size)
    if scored.size < rows.size:
        ids = ids.index_select(0, torch.from_numpy(scored).to(dev))
        rows = rows[scored]
    ids = ids[:, : max(ks_)]
    hits = hit_matrix(ids, rel, rows, dev)
    n_rel = torch.from_numpy(n_rel_all[scored]).to(dev)
    values = per_user_metrics(hits, n_rel, ks_, names)

    if per_user:
        res = {key: v.cpu().numpy() for key, v in values.items()}
        res["user"] = rows
        return res
    out: dict[str, float] = {
        key: (float(v.mean()) if v.numel() else float("nan")) for key, v in values.items()
    }
    out["n_users_evaluated"] = int(scored.size)
    out["n_users_skipped"] = n_skipped
    return out


@torch.no_grad()
def recall_vs_exact(
    approx_ids: ArrayLike,
    exact_ids: ArrayLike,
    k: int | None = None,
    *,
    device: str | torch.device | None = None,
) -> float:
    """Mean fraction of the exact top-k found in the approximate top-k (the ANN index's recall).

    Both arrays are (U, >=k) item ids with -1 for empty slots (as Faiss returns them). Per row the
    denominator is the number of valid exact ids among the first k (rows with none are left out);
    an approximate id counts once even if repeated. ``k`` defaults to the width of ``exact_ids``.
    Returns NaN when no row has a valid exact id.
    """
    dev = resolve_device(device, approx_ids, exact_ids)
    a = as_id_tensor(approx_ids, "approx_ids", dev)
    x = as_id_tensor(exact_ids, "exact_ids", dev)
    if a.shape[0] != x.shape[0]:
        raise ValueError(f"approx_ids has {a.shape[0]} rows but exact_ids has {x.shape[0]}")
    k = x.shape[1] if k is None else int(k)
    if k < 1 or k > min(a.shape[1], x.shape[1]):
        raise ValueError(
            f"k={k} must be between 1 and the width of both id arrays "
            f"({a.shape[1]} approximate, {x.shape[1]} exact)"
        )
    a, x = a[:, :k], x[:, :k]
    x_valid = first_occurrence(x)
    x_sorted = torch.sort(torch.where(x_valid, x, -1), dim=1).values.contiguous()
    pos = torch.searchsorted(x_sorted, a.contiguous()).clamp(max=k - 1)
    found = first_occurrence(a) & (x_sorted.gather(1, pos) == a)
    denom = x_valid.sum(1)
    keep = denom > 0
    if not bool(keep.any()):
        return float("nan")
    frac = found.sum(1)[keep].to(torch.float64) / denom[keep].to(torch.float64)
    return float(frac.mean())


def n_relevant(test: sp.spmatrix, relevance_threshold: float | None = None) -> np.ndarray:
    """Relevant test items per user (row), as used to decide which users are scored."""
    return np.diff(relevant_csr(test, "test", relevance_threshold).indptr).astype(np.int64)
