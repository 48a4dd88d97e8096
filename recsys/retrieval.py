"""Candidate generation: a model (or plain embeddings) plus a Faiss index -> top-k items per user.

Scores follow the model: score(u, i) = user_embeddings(u) . item_embeddings(i) + user_offsets(u),
so with an exact inner-product index the candidates equal ``model.recommend`` (ids and scores).
Approximate indexes (IVF, HNSW) decide *which* items come back; every returned score is then
recomputed exactly from the embeddings and each row is sorted by it, so scores always mean the
same thing whatever index (or MIPS transform) produced them.

Filtering guarantees, for every index type:

* never an item the user has seen (``exclude_seen``), never an excluded item, only allowed items;
* exactly k items per user whenever at least k valid items exist. The global allow / deny mask
  goes into Faiss as an ID selector where the index supports it (CPU Flat, IVF, HNSW); each
  user's seen items are removed after an over-fetch of k + (that batch's largest seen count),
  plus the number of globally excluded items where the index ignores selectors (GPU). Rows left
  short (an approximate index that missed valid items) are searched again with twice the fetch
  and twice the nprobe / efSearch, and after a few rounds scored exhaustively;
* ids are never -1, except as padding at the end of a row when fewer than k valid items exist
  at all for that user (scores there are -inf).

Users are batched after sorting by seen count, so heavy users do not inflate everyone's
over-fetch. Unknown user ids raise :class:`UnknownUserError` unless ``fallback="popular"``, which
gives them the most popular valid items (scored by their interaction counts).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.index.builder import build_index
from recsys.index.errors import IndexMismatchError, UnknownUserError
from recsys.index.item_index import ItemIndex
from recsys.index.vectors import (
    allowed_mask,
    as_float32_matrix,
    check_item_ids,
    model_item_vectors,
)
from recsys.scoring import topk_items

logger = logging.getLogger(__name__)

FALLBACKS = (None, "error", "popular")

#: the most memory the exact rescoring of one search batch gathers at once
RESCORE_BLOCK_BYTES = 64 << 20


def _is_model(source: Any) -> bool:
    return hasattr(source, "item_embeddings") and hasattr(source, "user_embeddings")


def _as_csr(seen: Any, n_items: int, name: str = "seen") -> sp.csr_matrix:
    matrix = getattr(seen, "matrix", seen)  # accept recsys.data.Interactions
    if not sp.issparse(matrix):
        raise ValueError(f"{name} must be a scipy sparse users x items matrix or Interactions")
    csr = sp.csr_matrix(matrix)
    if csr.shape[1] != n_items:
        raise IndexMismatchError(
            f"{name} has {csr.shape[1]} item columns but the model has {n_items} items; use "
            "the interaction matrix the model was trained on"
        )
    csr = csr.copy()
    csr.sum_duplicates()
    csr.eliminate_zeros()  # an explicitly stored 0 is not an interaction
    csr.sort_indices()
    return csr


class CandidateGenerator:
    """Top-k candidates per user from a model and an item index, with filtering.

    Args:
        source: a fitted model (``item_embeddings()``, ``user_embeddings(ids)``,
            ``user_offsets(ids)``, optionally ``item_factors``) or a plain (n_items, d) item
            embedding matrix (then queries come from ``user_vectors``).
        index: an :class:`~recsys.index.ItemIndex` over the same item embeddings (metric "ip"
            for model scores). Default: an exact Flat IP index built here.
        seen: users x items sparse matrix (or Interactions) of items each user has seen; its
            rows are internal user ids.
        fallback: what unknown user ids get: None / "error" (raise UnknownUserError) or
            "popular" (most popular valid items).
        popularity: per-item popularity for the fallback; default: column counts of ``seen``.
        item_factors: vectors for :meth:`similar_items` (default ``model.item_factors``, else
            the item embeddings).
        similar_index: a prebuilt cosine index for :meth:`similar_items` (default: exact).
        batch_size: users per Faiss search call.
        exact_below: when at most this many items are valid (a small allow list), score them
            exhaustively instead of searching the index: exact and cheaper.
        max_retries: re-search rounds for rows left short before scoring them exhaustively.
    """

    def __init__(
        self,
        source: Any,
        index: ItemIndex | None = None,
        seen: Any = None,
        *,
        fallback: str | None = None,
        popularity: Any = None,
        item_factors: Any = None,
        similar_index: ItemIndex | None = None,
        batch_size: int = 1024,
        exact_below: int = 2048,
        max_retries: int = 3,
    ) -> None:
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = source if _is_model(source) else None
        if self.model is not None:
            self.item_embeddings = model_item_vectors(self.model, "embeddings")
        else:
            self.item_embeddings = as_float32_matrix(source, "item embeddings")
        self.n_items, self.dim = self.item_embeddings.shape
        self.n_users: int | None = None
        if self.model is not None and getattr(self.model, "user_factors", None) is not None:
            self.n_users = int(self.model.user_factors.shape[0])
        self.seen: sp.csr_matrix | None = None
        if seen is not None:
            self.seen = _as_csr(seen, self.n_items)
            if self.n_users is None:
                self.n_users = self.seen.shape[0]
            elif self.seen.shape[0] != self.n_users:
                raise IndexMismatchError(
                    f"seen has {self.seen.shape[0]} user rows but the model has {self.n_users} "
                    "users; use the interaction matrix the model was trained on"
                )
        if index is None:
            index = build_index(self.item_embeddings, "flat", "ip", vectors="embeddings")
        if index.metric != "ip":
            logger.info(
                "candidate index uses metric %r: it picks the candidates, which are then "
                "ranked by the model's inner-product score",
                index.metric,
            )
        index.check_compatible(
            dim=self.dim, n_items=self.n_items, what="the model's item embeddings"
        )
        self.index = index
        self.fallback = fallback
        if popularity is not None:
            pop = np.asarray(popularity, dtype=np.float64).ravel()
            if pop.shape != (self.n_items,):
                raise ValueError(f"popularity must have one value per item ({self.n_items})")
            self.popularity: np.ndarray | None = pop
        elif self.seen is not None:
            self.popularity = np.bincount(self.seen.indices, minlength=self.n_items).astype(
                np.float64
            )
        else:
            self.popularity = None
        if fallback == "popular" and self.popularity is None:
            raise ValueError("fallback='popular' needs popularity=... or a seen matrix")
        self._item_factors = item_factors
        self._similar_index = similar_index
        self.batch_size = int(batch_size)
        self.exact_below = int(exact_below)
        self.max_retries = int(max_retries)
        #: how many rows the last candidates() call scored exhaustively (for monitoring)
        self.last_exhaustive_rows = 0

    # ------------------------------------------------------------------ public API
    def candidates(
        self,
        user_ids: Any = None,
        k: int = 10,
        exclude_seen: bool = True,
        allowed_items: Any = None,
        excluded_items: Any = None,
        user_vectors: Any = None,
        *,
        user_offsets: Any = None,
        seen_rows: Any = None,
        fallback: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item ids and scores per user: (ids int64 (n, k), scores float32 (n, k)).

        Args:
            user_ids: internal user indices (rows of the model / seen matrix). May be None when
                ``user_vectors`` are given for new users.
            k: candidates per user; a k above the number of items is clipped to it (like
                ``implicit``): no user can get more.
            exclude_seen: drop items the user has seen (the seen matrix row, or ``seen_rows``).
            allowed_items: if given, only these internal item indices may be returned.
            excluded_items: internal item indices never to return (a global deny list).
            user_vectors: (n, d) query vectors overriding the model's, e.g. from
                ``model.fold_in(rows)`` for new users.
            user_offsets: (n,) per-user score offsets for ``user_vectors`` (default 0; ranks do
                not depend on it).
            seen_rows: (n, n_items) sparse seen items for ``user_vectors`` rows without
                ``user_ids`` (e.g. the rows that were folded in).
            fallback: per-call override of the generator's unknown-user policy.

        Returns ids sorted by score, best first; scores are model scores (query . item +
        offset). Rows are -1 / -inf padded at the end only when that user has fewer than k
        valid items in total.
        """
        k = _clip_k(k, self.n_items)
        fallback = self.fallback if fallback is None else fallback
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
        mask = allowed_mask(self.n_items, allowed_items, excluded_items)
        if user_vectors is not None:
            queries = as_float32_matrix(user_vectors, "user_vectors")
            if queries.shape[1] != self.dim:
                raise IndexMismatchError(
                    f"user_vectors have dimension {queries.shape[1]}, the item embeddings "
                    f"{self.dim}; fold users in with the same model"
                )
            offsets = _query_offsets(user_offsets, queries.shape[0])
            seen = self._query_seen(user_ids, seen_rows, exclude_seen, queries.shape[0])
            return self._topk(queries, offsets, seen, mask, k)
        if user_ids is None:
            raise ValueError("give user_ids (known users) or user_vectors (e.g. folded-in users)")
        if self.model is None:
            raise ValueError(
                "this generator was built from plain embeddings: pass user_vectors (and "
                "user_offsets) for the queries"
            )
        return self._model_candidates(self._user_array(user_ids), k, exclude_seen, mask, fallback)

    def _query_seen(
        self, user_ids: Any, seen_rows: Any, exclude_seen: bool, n: int
    ) -> sp.csr_matrix | None:
        """The seen items of ``n`` given query vectors: from ``user_ids`` or ``seen_rows``."""
        if user_ids is not None:
            uids = self._user_array(user_ids)
            if len(uids) != n:
                raise ValueError(f"{len(uids)} user_ids for {n} user_vectors")
            unknown = self._unknown(uids)
            if unknown.any():
                raise UnknownUserError(self._unknown_message(uids[unknown]))
            return self._seen_for(uids) if exclude_seen else None
        if exclude_seen and seen_rows is not None:
            seen = _as_csr(seen_rows, self.n_items, "seen_rows")
            if seen.shape[0] != n:
                raise ValueError(f"seen_rows has {seen.shape[0]} rows for {n} user_vectors")
            return seen
        return None

    def _model_candidates(
        self,
        uids: np.ndarray,
        k: int,
        exclude_seen: bool,
        mask: np.ndarray | None,
        fallback: str | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidates of known users from the model's vectors; unknown ones per ``fallback``."""
        unknown = self._unknown(uids)
        if unknown.any() and fallback != "popular":
            raise UnknownUserError(self._unknown_message(uids[unknown]))
        known_ids = uids[~unknown]
        ids = np.full((len(uids), k), -1, dtype=np.int64)
        scores = np.full((len(uids), k), -np.inf, dtype=np.float32)
        if known_ids.size:
            queries = as_float32_matrix(
                self.model.user_embeddings(known_ids), "model.user_embeddings()"
            )
            offsets = np.asarray(self.model.user_offsets(known_ids), dtype=np.float32).ravel()
            seen = self._seen_for(known_ids) if exclude_seen else None
            ids[~unknown], scores[~unknown] = self._topk(queries, offsets, seen, mask, k)
        if unknown.any():
            logger.info("%d unknown users get the popularity fallback", int(unknown.sum()))
            pop_ids, pop_scores = self._popular(mask, k)
            ids[unknown] = pop_ids
            scores[unknown] = pop_scores
        return ids, scores

    def similar_items(
        self, item_ids: Any, k: int = 10, *, exclude_self: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k most cosine-similar items to each item: (ids (n, k), cosine scores (n, k)).

        Uses a cosine index over the item factors (``model.item_factors``, no bias; exact Flat
        unless ``similar_index`` was given). With ``exclude_self`` the query item itself is
        not returned. Rows are -1 / -inf padded only when fewer than k other items exist (or
        an approximate ``similar_index`` found fewer). A k above the number of items is clipped
        to it.
        """
        k = _clip_k(k, self.n_items)
        items = check_item_ids(item_ids, self.n_items, "item_ids")
        index, factors = self._similarity()
        fetch = min(k + int(exclude_self), index.max_k)
        ids, scores = index.search(factors[items], fetch)
        if exclude_self:
            drop = ids == items[:, None]
            keep_order = np.argsort(drop, axis=1, kind="stable")
            ids = np.take_along_axis(ids, keep_order, axis=1)
            scores = np.take_along_axis(scores, keep_order, axis=1)
            dropped = np.take_along_axis(drop, keep_order, axis=1)
            ids[dropped] = -1
            scores[dropped] = -np.inf
        out_ids = np.full((len(items), k), -1, dtype=np.int64)
        out_scores = np.full((len(items), k), -np.inf, dtype=np.float32)
        width = min(k, ids.shape[1])
        out_ids[:, :width] = ids[:, :width]
        out_scores[:, :width] = scores[:, :width]
        return out_ids, out_scores

    # ------------------------------------------------------------------ users
    def _user_array(self, user_ids: Any) -> np.ndarray:
        arr = np.asarray(user_ids)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.size and arr.dtype.kind not in "iu":
            raise UnknownUserError(
                f"user ids must be internal integer indices, got dtype {arr.dtype} (e.g. "
                f"{arr.ravel()[:3].tolist()}); map external ids with Interactions.user_index()"
            )
        return arr.astype(np.int64).ravel()

    def _unknown(self, uids: np.ndarray) -> np.ndarray:
        if self.n_users is None:
            return np.zeros(len(uids), dtype=bool)
        return (uids < 0) | (uids >= self.n_users)

    def _unknown_message(self, bad: np.ndarray) -> str:
        shown = np.unique(bad)[:10].tolist()
        return (
            f"{len(np.unique(bad))} unknown user ids (first: {shown}); the model knows "
            f"internal users 0..{(self.n_users or 0) - 1}. For new users pass "
            "user_vectors=model.fold_in(rows), or use fallback='popular'"
        )

    def _seen_for(self, uids: np.ndarray) -> sp.csr_matrix:
        if self.seen is None:
            raise ValueError(
                "exclude_seen=True needs the seen matrix: CandidateGenerator(..., seen=csr), "
                "or pass exclude_seen=False"
            )
        return self.seen[uids]

    def _popular(self, mask: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
        assert self.popularity is not None
        order = np.argsort(-self.popularity, kind="stable")
        if mask is not None:
            order = order[mask[order]]
        order = order[:k]
        ids = np.full(k, -1, dtype=np.int64)
        scores = np.full(k, -np.inf, dtype=np.float32)
        ids[: len(order)] = order
        scores[: len(order)] = self.popularity[order]
        return ids, scores

    # ------------------------------------------------------------------ core search
    def _topk(
        self,
        queries: np.ndarray,
        offsets: np.ndarray,
        seen: sp.csr_matrix | None,
        mask: np.ndarray | None,
        k: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        n = queries.shape[0]
        out_ids = np.full((n, k), -1, dtype=np.int64)
        self.last_exhaustive_rows = 0
        if n == 0:
            return out_ids, np.full((n, k), -np.inf, dtype=np.float32)
        n_valid = self.n_items if mask is None else int(mask.sum())
        if seen is not None and seen.nnz:
            # seen items that are valid anyway: they reduce what is left for that user
            rows = np.repeat(np.arange(n), np.diff(seen.indptr))
            if mask is not None:
                rows = rows[mask[seen.indices]]
            seen_counts = np.bincount(rows, minlength=n)
        else:
            seen, seen_counts = None, np.zeros(n, dtype=np.int64)
        k_eff = np.minimum(k, n_valid - seen_counts)

        if n_valid <= self.exact_below or k > self.index.max_k:
            self._exhaustive(queries, seen, mask, np.arange(n), out_ids)
        else:
            order = np.argsort(seen_counts, kind="stable")
            for start in range(0, n, self.batch_size):
                rows = order[start : start + self.batch_size]
                self._search_rows(queries, seen, mask, k, k_eff, rows, out_ids, n_valid)
        return self._rescore(queries, offsets, out_ids)

    def _search_rows(
        self,
        queries: np.ndarray,
        seen: sp.csr_matrix | None,
        mask: np.ndarray | None,
        k: int,
        k_eff: np.ndarray,
        rows: np.ndarray,
        out_ids: np.ndarray,
        n_valid: int,
    ) -> None:
        index = self.index
        extra = 0 if seen is None else int(np.diff(seen.indptr)[rows].max())
        if mask is not None and not index.supports_selectors:
            extra += self.n_items - n_valid
        fetch = min(k + extra, index.max_k)
        nprobe = index.params.get("nprobe")
        ef = index.params.get("ef_search")
        pending = rows
        for attempt in range(self.max_retries + 1):
            if attempt:
                fetch = min(2 * fetch, index.max_k)
                nprobe = None if nprobe is None else min(2 * nprobe, index.max_nprobe or nprobe)
                ef = None if ef is None else 2 * ef
            ids, _ = index.search(
                queries[pending],
                fetch,
                allowed=mask,
                nprobe=nprobe,
                ef_search=None if ef is None else max(ef, fetch),
            )
            valid = ids >= 0
            if seen is not None:
                valid &= ~_seen_hits(seen[pending], ids, self.n_items)
            counts = valid.sum(axis=1)
            done = counts >= k_eff[pending]
            first = np.argsort(~valid, axis=1, kind="stable")[:, :k]
            chosen = np.take_along_axis(ids, first, axis=1)
            chosen_valid = np.take_along_axis(valid, first, axis=1)
            chosen[~chosen_valid] = -1
            width = min(k, chosen.shape[1])
            out_ids[pending[done], :width] = chosen[done, :width]
            pending = pending[~done]
            if pending.size == 0:
                return
            if index.exact and fetch >= index.max_k:
                break
        logger.debug("%d rows fall back to exhaustive scoring", pending.size)
        self._exhaustive(queries, seen, mask, pending, out_ids)

    def _exhaustive(
        self,
        queries: np.ndarray,
        seen: sp.csr_matrix | None,
        mask: np.ndarray | None,
        rows: np.ndarray,
        out_ids: np.ndarray,
    ) -> None:
        """Exact top-k over all valid items for ``rows``, by the shared blocked scorer."""
        if rows.size == 0:
            return
        self.last_exhaustive_rows += int(rows.size)
        top = topk_items(
            queries[rows],
            self.item_embeddings,
            out_ids.shape[1],
            exclude=None if seen is None else seen[rows],
            allowed_items=mask,
        )
        out_ids[rows] = top.ids.numpy()

    def _rescore(
        self, queries: np.ndarray, offsets: np.ndarray, ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact model scores for chosen ids; rows sorted by score, -1 padding last.

        The chosen items' vectors are gathered a block of rows at a time (at most
        ``RESCORE_BLOCK_BYTES``): gathered whole, 1024 users x 500 candidates x 1025 dimensions
        would take 2.1 GB.
        """
        present = ids >= 0
        safe = np.where(present, ids, 0)
        scores = np.empty(ids.shape, dtype=np.float32)
        step = max(1, RESCORE_BLOCK_BYTES // max(1, ids.shape[1] * self.dim * 4))
        for start in range(0, ids.shape[0], step):
            rows = slice(start, start + step)
            gathered = self.item_embeddings[safe[rows]]
            scores[rows] = np.einsum("nkd,nd->nk", gathered, queries[rows], dtype=np.float32)
        scores += offsets[:, None]
        scores[~present] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")
        return np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)

    # ------------------------------------------------------------------ similar items
    def _similarity(self) -> tuple[ItemIndex, np.ndarray]:
        if self._item_factors is None:
            if self.model is not None and getattr(self.model, "item_factors", None) is not None:
                self._item_factors = model_item_vectors(self.model, "factors")
            else:
                self._item_factors = self.item_embeddings
        factors = as_float32_matrix(self._item_factors, "item_factors")
        self._item_factors = factors
        if self._similar_index is None:
            self._similar_index = build_index(factors, "flat", "cosine", vectors="factors")
        index = self._similar_index
        if index.metric != "cosine":
            logger.info("similar_items uses a %r index, not cosine", index.metric)
        index.check_compatible(
            dim=factors.shape[1], n_items=factors.shape[0], what="the item factors"
        )
        return index, factors


def _clip_k(k: Any, n_items: int) -> int:
    """``k`` as an int in [1, n_items]: larger values are clipped (a row never holds more items
    than the catalog, and a (users, k) result for a huge k would not fit in memory)."""
    try:
        whole = not isinstance(k, bool) and int(k) == k
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole or k < 1:
        raise ValueError(f"k must be >= 1 and a whole number, got {k!r}")
    return int(min(int(k), max(n_items, 1)))


def _seen_hits(seen_rows: sp.csr_matrix, ids: np.ndarray, n_items: int) -> np.ndarray:
    """Boolean (n, m): whether ids[r, j] is among the stored items of seen_rows row r."""
    n = ids.shape[0]
    if seen_rows.nnz == 0:
        return np.zeros(ids.shape, dtype=bool)
    row_of = np.repeat(np.arange(n, dtype=np.int64), np.diff(seen_rows.indptr))
    keys = row_of * n_items + seen_rows.indices.astype(np.int64)
    keys.sort()
    cand = np.arange(n, dtype=np.int64)[:, None] * n_items + np.where(ids >= 0, ids, 0)
    pos = np.minimum(np.searchsorted(keys, cand), keys.size - 1)
    return (keys[pos] == cand) & (ids >= 0)


def _query_offsets(user_offsets: Any, n: int) -> np.ndarray:
    """Per-query score offsets as float32 (n,); zeros when none are given."""
    if user_offsets is None:
        return np.zeros(n, np.float32)
    offsets = np.asarray(user_offsets, np.float32).ravel()
    if offsets.shape != (n,):
        raise ValueError(f"user_offsets must have {n} entries, got {offsets.shape}")
    return offsets
