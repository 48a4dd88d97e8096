"""Beyond-accuracy metrics of top-k lists: coverage, exposure inequality, popularity, diversity.

All functions take (users x K) item-id lists (numpy or torch, -1 = empty slot, a repeated id in a
list counts once) and look at the first ``k`` slots (default: all K). They are batched on torch, so
they run on CPU and CUDA alike without a loop per user.

- ``coverage@k``: fraction of the catalog recommended to at least one user.
- ``gini@k``: Gini index of item exposure (how often each catalog item appears in the lists),
  over all catalog items including those never recommended: 0 when every item is shown equally
  often, (n - 1) / n when a single item takes all the exposure.
- ``popularity_percentile@k``: mean popularity percentile of the recommended items (popularity
  bias; 1 = only the most popular item). An item's percentile is the fraction of catalog items
  whose training popularity is at most its own.
- ``novelty@k``: mean self-information -log2(popularity / n_users) of the recommended items (Zhou
  et al. 2010); items nobody interacted with count as popularity 1.
- ``diversity@k``: intra-list diversity, 1 - mean pairwise cosine similarity of the recommended
  items' feature vectors (item embeddings, or metadata such as genre indicators).

Per-list values (popularity, novelty, diversity) are averaged over the lists that have enough
valid slots (1 for popularity and novelty, 2 for diversity).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from recsys.eval.lists import as_id_tensor, first_occurrence
from recsys.eval.ranking import check_ks
from recsys.scoring.arrays import ArrayLike, resolve_device

#: The names accepted in ``metrics=`` (each reported as ``"<name>@<k>"``).
BEYOND_METRICS = ("coverage", "gini", "popularity_percentile", "novelty", "diversity")


class _Lists(NamedTuple):
    """Id lists already converted, with their first-occurrence mask (computed once, reused)."""

    ids: torch.Tensor
    valid: torch.Tensor


def _prepare(
    topk_ids: ArrayLike | _Lists,
    k: int | None,
    n_items: int | None,
    device: str | torch.device | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids[:, :k], mask of valid first occurrences), checked against the catalog size."""
    if isinstance(topk_ids, _Lists):
        ids, valid = topk_ids
    else:
        ids = as_id_tensor(topk_ids, "topk_ids", resolve_device(device, topk_ids))
        valid = None
    if k is not None:
        if not 1 <= k <= ids.shape[1]:
            raise ValueError(f"k={k} must be between 1 and the list width {ids.shape[1]}")
        ids = ids[:, :k]
    if n_items is not None and ids.numel() and int(ids.max()) >= n_items:
        raise ValueError(f"an id list holds item {int(ids.max())} but the catalog has {n_items}")
    # a first occurrence within the first k slots is a first occurrence in the whole list
    return ids, first_occurrence(ids) if valid is None else valid[:, : ids.shape[1]]


def exposure_counts(
    topk_ids: ArrayLike,
    n_items: int,
    k: int | None = None,
    *,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """How many lists show each catalog item within their first ``k`` slots: int64 (n_items,)."""
    ids, valid = _prepare(topk_ids, k, n_items, device)
    return torch.bincount(ids[valid], minlength=n_items)


def catalog_coverage(
    topk_ids: ArrayLike,
    n_items: int,
    k: int | None = None,
    *,
    device: str | torch.device | None = None,
) -> float:
    """Fraction of the ``n_items`` catalog items that appear in at least one list."""
    if n_items < 1:
        raise ValueError("n_items must be at least 1")
    counts = exposure_counts(topk_ids, n_items, k, device=device)
    return float((counts > 0).sum()) / n_items


def gini_from_counts(counts: ArrayLike) -> float:
    """Gini index of a non-negative exposure vector (one entry per catalog item).

    G = sum_i (2i - n - 1) x_(i) / (n sum x) with x sorted ascending, i = 1..n. NaN when all zero.
    """
    x = (
        counts
        if isinstance(counts, torch.Tensor)
        else torch.from_numpy(np.ascontiguousarray(counts))
    )
    x = torch.sort(x.reshape(-1).to(torch.float64)).values
    n = x.numel()
    total = x.sum()
    if n == 0 or float(total) == 0.0:
        return float("nan")
    i = torch.arange(1, n + 1, dtype=torch.float64, device=x.device)
    return float(((2 * i - n - 1) * x).sum() / (n * total))


def gini_index(
    topk_ids: ArrayLike,
    n_items: int,
    k: int | None = None,
    *,
    device: str | torch.device | None = None,
) -> float:
    """Gini index of exposure over all ``n_items`` catalog items (never-shown items count as 0)."""
    return gini_from_counts(exposure_counts(topk_ids, n_items, k, device=device))


def popularity_percentiles(item_popularity: ArrayLike) -> np.ndarray:
    """Per item: the fraction of catalog items whose popularity is at most this item's."""
    pop = np.asarray(
        item_popularity.cpu() if isinstance(item_popularity, torch.Tensor) else item_popularity,
        dtype=np.float64,
    ).reshape(-1)
    if pop.size == 0:
        return pop
    srt = np.sort(pop)
    return np.searchsorted(srt, pop, side="right") / pop.size


def _mean_over_lists(
    values: torch.Tensor, valid: torch.Tensor, min_valid: int = 1
) -> tuple[float, int]:
    """Mean over lists of the mean of ``values`` over each list's valid slots."""
    n = valid.sum(1)
    keep = n >= min_valid
    if not bool(keep.any()):
        return float("nan"), 0
    per_list = torch.where(valid, values, 0.0).sum(1)[keep] / n[keep]
    return float(per_list.mean()), int(keep.sum())


def popularity_percentile(
    topk_ids: ArrayLike,
    item_popularity: ArrayLike,
    k: int | None = None,
    *,
    device: str | torch.device | None = None,
) -> float:
    """Mean popularity percentile of the recommended items (higher = more popularity bias).

    ``item_popularity`` (n_items,) is typically each item's number of training interactions.
    """
    pct_np = popularity_percentiles(item_popularity)
    ids, valid = _prepare(topk_ids, k, pct_np.size, device)
    pct = torch.from_numpy(pct_np).to(ids.device)
    return _mean_over_lists(pct[ids.clamp(min=0)], valid)[0]


def novelty(
    topk_ids: ArrayLike,
    item_popularity: ArrayLike,
    n_users: int,
    k: int | None = None,
    *,
    device: str | torch.device | None = None,
) -> float:
    """Mean self-information -log2(popularity_i / n_users) of the recommended items, in bits.

    ``item_popularity`` counts the training users of each item; ``n_users`` is the number of
    training users. Items with popularity 0 are counted as 1 so the value stays finite.
    """
    if n_users < 1:
        raise ValueError("n_users must be at least 1")
    pop_np = np.asarray(
        item_popularity.cpu() if isinstance(item_popularity, torch.Tensor) else item_popularity,
        dtype=np.float64,
    ).reshape(-1)
    ids, valid = _prepare(topk_ids, k, pop_np.size, device)
    info = torch.from_numpy(-np.log2(np.maximum(pop_np, 1.0) / n_users)).to(ids.device)
    return _mean_over_lists(info[ids.clamp(min=0)], valid)[0]


def _features_and_scale(
    item_features: ArrayLike | sp.spmatrix, dev: torch.device
) -> tuple[torch.Tensor | sp.csr_matrix, torch.Tensor]:
    """The features (dense torch on ``dev``, or scipy CSR) and 1 / row norm (0 for zero rows).

    Dense features are not copied (beyond a dtype or device change): scaling each row to unit
    length happens inside the per-list sums, through per-entry weights.
    """
    if sp.issparse(item_features):
        f = sp.csr_matrix(item_features, dtype=np.float64)
        norms = torch.from_numpy(np.sqrt(np.asarray(f.multiply(f).sum(1)).reshape(-1))).to(dev)
    else:
        f = (
            item_features
            if isinstance(item_features, torch.Tensor)
            else torch.from_numpy(np.ascontiguousarray(item_features))
        )
        if f.ndim != 2:
            raise ValueError(f"item_features must be 2-D (items x features), got {tuple(f.shape)}")
        f = f.to(device=dev, dtype=torch.float32)
        norms = torch.linalg.vector_norm(f, dim=1)
    scale = torch.where(norms > 0, 1.0 / norms, 0.0)
    return f, scale


def intra_list_diversity(
    topk_ids: ArrayLike,
    item_features: ArrayLike | sp.spmatrix,
    k: int | None = None,
    *,
    device: str | torch.device | None = None,
    memory_budget_bytes: int = 256 * 2**20,
) -> float:
    """1 - mean pairwise cosine similarity within each list, averaged over lists of >= 2 items.

    ``item_features``: (n_items, F) item embeddings or metadata (dense, or scipy sparse such as a
    genre indicator matrix). A zero feature vector has similarity 0 to everything. Uses
    sum_{j != l} e_j . e_l = |sum_j e_j|^2 - sum_j |e_j|^2 on unit vectors e, so it costs
    O(users * k * F), no k x k similarity matrix is formed and the features are neither copied
    nor normalised up front (the sums weight each row by 1 / |v_i|); lists are processed in blocks
    whose sums stay within ``memory_budget_bytes`` (and 8 MiB).
    """
    dev = resolve_device(device, topk_ids.ids if isinstance(topk_ids, _Lists) else topk_ids)
    feats, scale = _features_and_scale(item_features, dev)
    ids, valid = _prepare(topk_ids, k, feats.shape[0], dev)
    n_lists = ids.shape[0]
    n_items, n_feat = feats.shape
    m = valid.sum(1)
    unit = (scale > 0).to(torch.float64)  # |e_i|^2 of the unit-length rows: 1, or 0 for zero rows
    self_sim = torch.where(valid, unit[ids.clamp(min=0)], 0.0).sum(1)
    # sum_j e_j per list, in blocks of lists: an embedding bag with weights 1 / |v_i| (no gathered
    # or normalised copy of the vectors); blocks of 8 MiB keep the temporaries reusable
    rows = max(1, min(memory_budget_bytes, 8 * 2**20) // max(1, n_feat * 4))
    pair_sum = torch.empty(n_lists, dtype=torch.float64, device=dev)
    for s in range(0, n_lists, rows):
        bval, bid = valid[s : s + rows], ids[s : s + rows]
        crow = torch.zeros(bval.shape[0] + 1, dtype=torch.int64, device=dev)
        crow[1:] = torch.cumsum(bval.sum(1), 0)
        col = bid[bval]  # row-major, so each list's entries are contiguous
        weight = scale[col]
        if isinstance(feats, torch.Tensor):
            total = torch.nn.functional.embedding_bag(
                col, feats, crow[:-1], mode="sum", per_sample_weights=weight.to(feats.dtype)
            )
            sq_total = (total * total).sum(1, dtype=torch.float64)
        else:
            select = sp.csr_matrix(
                (weight.cpu().numpy(), col.cpu().numpy(), crow.cpu().numpy()),
                shape=(bval.shape[0], n_items),
            )
            total_sp = select @ feats
            sq_total = torch.from_numpy(
                np.asarray(total_sp.multiply(total_sp).sum(1)).reshape(-1)
            ).to(dev)
        pair_sum[s : s + rows] = sq_total - self_sim[s : s + rows]
    keep = m >= 2
    if not bool(keep.any()):
        return float("nan")
    mf = m[keep].to(torch.float64)
    return float(1.0 - (pair_sum[keep] / (mf * (mf - 1))).mean())


def beyond_accuracy_metrics(
    topk_ids: ArrayLike,
    n_items: int,
    ks: int | Iterable[int] = (20,),
    *,
    item_popularity: ArrayLike | None = None,
    n_users: int | None = None,
    item_features: ArrayLike | sp.spmatrix | None = None,
    metrics: Sequence[str] | None = None,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """All beyond-accuracy metrics that the inputs allow, at every k: ``"coverage@20"``, ...

    ``metrics`` (subset of :data:`BEYOND_METRICS`) defaults to every metric whose inputs are given
    (popularity needs ``item_popularity``, novelty also ``n_users``, diversity ``item_features``);
    asking explicitly for one whose inputs are missing raises an error.
    """
    dev = resolve_device(device, topk_ids)
    ids = as_id_tensor(topk_ids, "topk_ids", dev)
    ks_ = check_ks(ks, ids.shape[1])
    lists = _Lists(ids, first_occurrence(ids))
    available = {
        "coverage": True,
        "gini": True,
        "popularity_percentile": item_popularity is not None,
        "novelty": item_popularity is not None and n_users is not None,
        "diversity": item_features is not None,
    }
    if metrics is None:
        names = [m for m in BEYOND_METRICS if available[m]]
    else:
        unknown = sorted(set(metrics) - set(BEYOND_METRICS))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; choose from {list(BEYOND_METRICS)}")
        missing = [m for m in metrics if not available[m]]
        if missing:
            raise ValueError(
                f"metrics {missing} need inputs that were not given: popularity_percentile needs "
                "item_popularity, novelty needs item_popularity and n_users, diversity needs "
                "item_features"
            )
        names = [m for m in BEYOND_METRICS if m in metrics]
    out: dict[str, float] = {}
    for k in ks_:
        for m in names:
            if m == "coverage":
                v = catalog_coverage(lists, n_items, k)
            elif m == "gini":
                v = gini_index(lists, n_items, k)
            elif m == "popularity_percentile":
                v = popularity_percentile(lists, item_popularity, k)
            elif m == "novelty":
                v = novelty(lists, item_popularity, n_users, k)  # type: ignore[arg-type]
            else:
                v = intra_list_diversity(lists, item_features, k)  # type: ignore[arg-type]
            out[f"{m}@{k}"] = v
    return out
