"""Sharded Faiss indexes: contiguous row ranges joined by ``IndexShards`` with successive ids.

Shard s holds the items ``offset_s .. offset_s + size_s - 1`` and Faiss shifts its local result
ids by ``offset_s``. A filtered search gives each shard its own slice of the allow mask (a
selector passed to ``IndexShards`` would be read with the shards' *local* ids) and the per-shard
results are merged here.
"""

from __future__ import annotations

import faiss
import numpy as np


def shard_bounds(n_items: int, shards: int) -> np.ndarray:
    """Row boundaries of ``shards`` contiguous shards over ``n_items`` rows: shard s holds rows
    ``bounds[s]:bounds[s + 1]``; sizes differ by at most one (the first ones are larger)."""
    base, extra = divmod(int(n_items), int(shards))
    sizes = np.full(int(shards), base, dtype=np.int64)
    sizes[:extra] += 1
    return np.concatenate(([0], np.cumsum(sizes)))


def shard_list(index: faiss.Index) -> list[faiss.Index] | None:
    """The sub-indexes of a Faiss ``IndexShards`` (downcast), or None for any other index."""
    base = faiss.downcast_index(index)
    if not isinstance(base, faiss.IndexShards):
        return None
    return [faiss.downcast_index(base.at(i)) for i in range(base.count())]


def combine_shards(shards: list[faiss.Index], *, threaded: bool = False) -> faiss.Index:
    """One ``IndexShards`` over ``shards`` with successive ids: shard s's local id j is returned
    as ``sum(len(shard t) for t < s) + j``, so rows keep the order of the shards.

    ``threaded`` runs each shard's search in its own thread (wanted for one shard per GPU; on
    the CPU every shard search is already parallel inside Faiss).
    """
    if not shards:
        raise ValueError("need at least one shard")
    combined = faiss.IndexShards(int(shards[0].d), bool(threaded), True)
    for sub in shards:
        combined.add_shard(sub)  # the faiss wrapper keeps a Python reference to sub
    return combined


def merge_shard_results(
    dists: list[np.ndarray],
    ids: list[np.ndarray],
    n: int,
    k: int,
    larger_is_better: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of per-shard (distances, global ids) lists, like ``IndexShards.search``.

    Returns (n, k) distances and ids, best first, -1 where fewer than k items were found.
    """
    if not ids:
        return np.zeros((n, k), np.float32), np.full((n, k), -1, np.int64)
    keys = []
    for d, i in zip(dists, ids, strict=True):
        key = d.astype(np.float64) if larger_is_better else -d.astype(np.float64)
        keys.append(np.where(i >= 0, key, -np.inf))
    key = np.concatenate(keys, axis=1)
    # stable: on equal scores the lower shard (= lower item row) comes first
    order = np.argsort(-key, axis=1, kind="stable")[:, :k]
    out_ids = np.take_along_axis(np.concatenate(ids, axis=1), order, axis=1)
    out_d = np.take_along_axis(np.concatenate(dists, axis=1), order, axis=1)
    if out_ids.shape[1] < k:
        pad = k - out_ids.shape[1]
        out_ids = np.pad(out_ids, ((0, 0), (0, pad)), constant_values=-1)
        out_d = np.pad(out_d, ((0, 0), (0, pad)))
    return out_d, out_ids
