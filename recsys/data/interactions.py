"""`Interactions`: a users x items sparse matrix together with the id maps that give it meaning.

Everything downstream (ALS, evaluation, retrieval) works on *internal* indices 0..n-1; the id
maps translate to and from the *external* ids found in the files (MovieLens user/movie ids,
strings from a CSV, ...). Keeping both in one object means a split's train and test can share one
id space and a recommendation can always be reported with the original ids and titles.

Conventions (all enforced in ``__post_init__``):

- ``matrix`` is a float32 CSR matrix in canonical form: indices sorted within each row and no
  duplicate entries. A stored entry is an observed interaction, even if its value is 0.
- ``user_ids`` / ``item_ids`` are 1-d numpy arrays of unique external ids (int64 or str), one per
  row / column.
- ``timestamps``, when present, is a CSR matrix with exactly the same sparsity structure as
  ``matrix`` (same ``indptr`` and ``indices``), int64 or float64.
- ``item_titles``, when present, is a str array with one entry per item ("" where unknown).

Nothing is copied that does not have to be: an ``Interactions`` may share arrays with the matrix it
was built from, so treat its arrays as read-only.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from recsys.data.columns import timestamp_column, title_column, value_column
from recsys.data.csr import (
    DUPLICATE_RULES,
    Duplicates,
    coded_csr,
    csr,
    csr_problem,
    structure_equal,
)
from recsys.data.errors import DataError
from recsys.data.ids import as_ids, check_unique, encode, lookup
from recsys.io import atomic_path

__all__ = [
    "Interactions",
    "require_nonnegative",
    "to_implicit",
]


# --------------------------------------------------------------------------------------------
# Interactions
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Interactions:
    """A users x items interaction matrix with its external <-> internal id maps.

    Build one with :meth:`from_columns` (the usual way) or directly from a CSR matrix and the id
    arrays. See the module docstring for the invariants.

    Attributes:
        matrix: users x items, float32, canonical CSR. Values are ratings, counts or confidences.
        user_ids: external id of each internal user index.
        item_ids: external id of each internal item index.
        timestamps: same sparsity structure as ``matrix`` (int64 or float64), or ``None``.
        item_titles: a title per internal item ("" where unknown), or ``None``.
        source: where the data came from (a file or a description), used in error messages.
    """

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    timestamps: sp.csr_matrix | None = None
    item_titles: np.ndarray | None = None
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        src = self.source
        if not sp.issparse(self.matrix):
            raise DataError("matrix must be a scipy.sparse matrix", path=src)
        m = self.matrix
        if not isinstance(m, sp.csr_matrix):
            m = sp.csr_matrix(m)
        if m.dtype != np.float32:
            m = m.astype(np.float32)
        if not m.has_canonical_format:
            if self.timestamps is not None:
                raise DataError(
                    "matrix has unsorted or duplicate entries and cannot be matched to timestamps",
                    path=src,
                    fix="build it with Interactions.from_columns, which combines duplicates",
                )
            m = m.copy()
            m.sum_duplicates()
        self.matrix = m
        self.user_ids = as_ids(self.user_ids, "user_ids", src)
        self.item_ids = as_ids(self.item_ids, "item_ids", src)
        if m.shape != (self.user_ids.size, self.item_ids.size):
            raise DataError(
                f"matrix shape {m.shape} does not match {self.user_ids.size} user ids x "
                f"{self.item_ids.size} item ids",
                path=src,
            )
        check_unique(self.user_ids, "user_ids", src)
        check_unique(self.item_ids, "item_ids", src)
        if self.timestamps is not None:
            t = self.timestamps
            if not isinstance(t, sp.csr_matrix):
                t = sp.csr_matrix(t)
            if t.dtype.kind not in "iuf":
                raise DataError(f"timestamps must be numeric, got {t.dtype}", path=src)
            if t.dtype.kind in "iu":
                t = t.astype(np.int64, copy=False)
            elif t.dtype != np.float64:
                t = t.astype(np.float64)
            if not structure_equal(t, m):
                raise DataError(
                    "timestamps do not have the same sparsity structure as the matrix",
                    path=src,
                    fix="give a timestamp for exactly the stored interactions",
                )
            self.timestamps = t
        if self.item_titles is not None:
            titles = np.asarray(self.item_titles).astype(str)
            if titles.shape != (self.item_ids.size,):
                raise DataError(
                    f"item_titles has {titles.size} entries for {self.item_ids.size} items",
                    path=src,
                )
            self.item_titles = titles

    # ---- construction ---------------------------------------------------------------------

    @classmethod
    def from_columns(
        cls,
        users: Sequence[Any] | np.ndarray,
        items: Sequence[Any] | np.ndarray,
        values: Sequence[float] | np.ndarray | None = None,
        timestamps: Sequence[float] | np.ndarray | None = None,
        *,
        duplicates: Duplicates = "sum",
        item_titles: Mapping[Any, str] | Sequence[str] | np.ndarray | None = None,
        user_ids: Sequence[Any] | np.ndarray | None = None,
        item_ids: Sequence[Any] | np.ndarray | None = None,
        source: str | None = None,
        allow_empty: bool = False,
    ) -> Interactions:
        """Build from parallel columns of (user, item[, value][, timestamp]).

        Args:
            users, items: external ids (int or str), one per interaction.
            values: a value per interaction (rating, count, confidence); 1.0 when omitted. Must be
                finite.
            timestamps: a timestamp per interaction (numeric, e.g. Unix seconds), or ``None``.
            duplicates: how repeated (user, item) pairs are combined: ``"sum"`` (default: counts
                add up), ``"max"``, ``"first"`` or ``"last"`` (in input order). Whatever the rule,
                a combined pair keeps the *latest* of its timestamps.
            item_titles: either a mapping external item id -> title (items without one get ""),
                or a sequence aligned with ``item_ids`` (which must then be given).
            user_ids, item_ids: fix the id maps (and so the matrix shape and internal order), e.g.
                to build train and test in one shared id space. Ids that do not occur get empty
                rows/columns; an id in the data that is not listed raises :class:`DataError`.
                When omitted, the ids are the sorted unique ids of the data.
            source: a file name or description used in error messages.
            allow_empty: accept zero interactions (otherwise :class:`DataError`).

        Returns:
            A canonical :class:`Interactions`.
        """
        if duplicates not in DUPLICATE_RULES:
            raise ValueError(f"duplicates must be one of {DUPLICATE_RULES}, got {duplicates!r}")
        u = as_ids(users, "users", source)
        i = as_ids(items, "items", source)
        n = u.size
        if i.size != n:
            raise DataError(
                f"users has {n} entries but items has {i.size}",
                path=source,
                fix="pass columns of equal length",
            )
        if n == 0 and not allow_empty:
            raise DataError("no interactions", path=source, fix="check that the input has data")
        v = value_column(values, u, i, source)
        t = timestamp_column(timestamps, n, source)
        ucode, uids = encode(u, None if user_ids is None else np.asarray(user_ids), "user", source)
        icode, iids = encode(i, None if item_ids is None else np.asarray(item_ids), "item", source)
        matrix, tmat = coded_csr(ucode, icode, v, t, (uids.size, iids.size), duplicates, source)
        titles = None if item_titles is None else title_column(item_titles, iids, item_ids)
        return cls(matrix, uids, iids, tmat, titles, source)

    def with_matrix(
        self, matrix: sp.spmatrix, timestamps: sp.spmatrix | None = None
    ) -> Interactions:
        """Same id maps and titles, new matrix (same shape).

        Timestamps: the given ones; else this object's timestamps if the new matrix has exactly
        the same sparsity structure (e.g. only the values changed); else none.
        """
        m = sp.csr_matrix(matrix)
        if m.shape != self.matrix.shape:
            raise DataError(
                f"new matrix has shape {m.shape}, expected {self.matrix.shape}", path=self.source
            )
        if m.dtype != np.float32:
            m = m.astype(np.float32)
        if not m.has_canonical_format:
            m = m.copy()
            m.sum_duplicates()
        if timestamps is None and self.timestamps is not None and structure_equal(m, self.matrix):
            timestamps = self.timestamps
        return Interactions(
            m, self.user_ids, self.item_ids, timestamps, self.item_titles, self.source
        )

    # ---- sizes and statistics -------------------------------------------------------------

    @property
    def n_users(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_users, self.n_items)

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)

    @property
    def density(self) -> float:
        cells = self.n_users * self.n_items
        return float(self.nnz / cells) if cells else 0.0

    def user_degrees(self) -> np.ndarray:
        """Number of interactions of each user (int64, length n_users)."""
        return np.diff(self.matrix.indptr).astype(np.int64)

    def item_degrees(self) -> np.ndarray:
        """Number of interactions of each item (int64, length n_items)."""
        return np.bincount(self.matrix.indices, minlength=self.n_items).astype(np.int64)

    def stats(self) -> dict[str, int | float | bool]:
        """Sizes, density and degree/value statistics as plain Python scalars (for logging)."""
        out: dict[str, int | float | bool] = {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "nnz": self.nnz,
            "density": self.density,
        }
        for name, deg in (("user", self.user_degrees()), ("item", self.item_degrees())):
            if deg.size:
                out[f"{name}_degree_min"] = int(deg.min())
                out[f"{name}_degree_max"] = int(deg.max())
                out[f"{name}_degree_mean"] = float(deg.mean())
                out[f"{name}_degree_median"] = float(np.median(deg))
                out[f"{name}_degree_p90"] = float(np.percentile(deg, 90))
                out[f"n_{name}s_empty"] = int((deg == 0).sum())
        if self.nnz:
            d = self.matrix.data
            out["value_min"] = float(d.min())
            out["value_max"] = float(d.max())
            out["value_mean"] = float(d.mean(dtype=np.float64))
        out["has_timestamps"] = self.timestamps is not None
        out["has_titles"] = self.item_titles is not None
        return out

    def __repr__(self) -> str:
        src = f", source={self.source!r}" if self.source else ""
        return (
            f"Interactions(n_users={self.n_users}, n_items={self.n_items}, nnz={self.nnz}, "
            f"timestamps={self.timestamps is not None}, titles={self.item_titles is not None}{src})"
        )

    # ---- id maps --------------------------------------------------------------------------

    def user_index(self, ids: Any) -> np.ndarray:
        """Internal indices of the given external user ids; unknown ids raise ``KeyError``."""
        return self._index(self.user_ids, ids, "user")

    def item_index(self, ids: Any) -> np.ndarray:
        """Internal indices of the given external item ids; unknown ids raise ``KeyError``."""
        return self._index(self.item_ids, ids, "item")

    @staticmethod
    def _index(table: np.ndarray, ids: Any, what: str) -> np.ndarray:
        q = np.asarray(ids)
        scalar = q.ndim == 0
        q = q.reshape(-1)
        if q.dtype.kind in "iu":
            q = q.astype(np.int64)
        elif q.dtype.kind == "S":
            q = q.astype(str)
        idx, found = lookup(table, q)
        if not np.all(found):
            missing = q[~found][:10].tolist()
            raise KeyError(f"unknown {what} id(s): {missing}")
        return idx if not scalar else idx[:1]

    # ---- entry-level selection ------------------------------------------------------------

    def entry_users(self) -> np.ndarray:
        """The internal user index of every stored entry, aligned with ``matrix.data``."""
        return np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(self.matrix.indptr))

    def select_entries(self, mask: np.ndarray) -> Interactions:
        """Keep the stored entries where ``mask`` (aligned with ``matrix.data``) is True.

        The shape, id maps and titles stay the same; timestamps follow the entries.
        """
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.nnz,):
            raise ValueError(f"mask must have shape ({self.nnz},), got {mask.shape}")
        m = self.matrix
        cs = np.zeros(m.nnz + 1, dtype=np.int64)
        np.cumsum(mask, out=cs[1:])
        indptr = cs[m.indptr]
        if indptr[-1] < np.iinfo(np.int32).max:
            indptr = indptr.astype(np.int32)
        indices = m.indices[mask]
        new = csr(m.data[mask], indices, indptr, m.shape)
        ts = None
        if self.timestamps is not None:
            ts = csr(self.timestamps.data[mask], indices, indptr, m.shape)
        return Interactions(new, self.user_ids, self.item_ids, ts, self.item_titles, self.source)

    def select_users(self, users: np.ndarray) -> Interactions:
        """Keep only the rows of the given internal users (bool mask or indices); same shape."""
        sel = np.asarray(users)
        if sel.dtype == bool:
            keep = sel
        else:
            keep = np.zeros(self.n_users, dtype=bool)
            keep[sel] = True
        return self.select_entries(keep[self.entry_users()])

    def subset(
        self, users: np.ndarray | None = None, items: np.ndarray | None = None
    ) -> Interactions:
        """A smaller ``Interactions`` with only the given users/items (bool masks or indices).

        Unlike :meth:`select_entries`, the shape and id maps shrink; internal order is kept.
        """
        keep_u = np.ones(self.n_users, dtype=bool)
        keep_i = np.ones(self.n_items, dtype=bool)
        for keep, sel in ((keep_u, users), (keep_i, items)):
            if sel is None:
                continue
            sel = np.asarray(sel)
            if sel.dtype == bool:
                keep[:] = sel
            else:
                keep[:] = False
                keep[sel] = True
        rows = self.entry_users()
        cols = self.matrix.indices
        emask = keep_u[rows] & keep_i[cols]
        new_row = np.cumsum(keep_u) - 1
        new_col = (np.cumsum(keep_i) - 1).astype(np.int32)
        n_u, n_i = int(keep_u.sum()), int(keep_i.sum())
        r = new_row[rows[emask]]
        c = new_col[cols[emask]]
        indptr = np.zeros(n_u + 1, dtype=np.int64)
        np.cumsum(np.bincount(r, minlength=n_u), out=indptr[1:])
        m = csr(self.matrix.data[emask], c, indptr, (n_u, n_i))
        ts = None
        if self.timestamps is not None:
            ts = csr(self.timestamps.data[emask], c, indptr, (n_u, n_i))
        titles = None if self.item_titles is None else self.item_titles[keep_i]
        return Interactions(
            m, self.user_ids[keep_u], self.item_ids[keep_i], ts, titles, self.source
        )

    def filter_min_interactions(
        self, min_user: int = 1, min_item: int = 1, *, max_rounds: int = 100
    ) -> Interactions:
        """Drop users with < ``min_user`` and items with < ``min_item`` interactions.

        Repeats until stable (a "k-core"), since dropping items can push users under the limit
        and vice versa; the result has smaller id maps. Raises :class:`DataError` if nothing is
        left.
        """
        cur = self
        for _ in range(max_rounds):
            ku = cur.user_degrees() >= min_user
            ki = cur.item_degrees() >= min_item
            if ku.all() and ki.all():
                break
            cur = cur.subset(ku, ki)
        if cur.nnz == 0:
            raise DataError(
                f"no interactions left after keeping users with >= {min_user} and items with >= "
                f"{min_item} interactions",
                path=self.source,
                fix="lower the minimum counts",
            )
        return cur

    # ---- value transforms -----------------------------------------------------------------

    def binarize(self, threshold: float = 4.0) -> Interactions:
        """Implicit feedback from ratings: entries with value >= ``threshold`` become 1.0, the
        others are dropped (e.g. MovieLens rating >= 4 counts as a positive)."""
        keep = self.matrix.data >= threshold
        out = self.select_entries(keep)
        out.matrix.data[:] = 1.0
        return out

    # ---- persistence ----------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write to an ``.npz`` file (no pickle), atomically: a failure leaves no partial file."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {
            "shape": np.asarray(self.matrix.shape, dtype=np.int64),
            "indptr": self.matrix.indptr,
            "indices": self.matrix.indices,
            "data": self.matrix.data,
            "user_ids": self.user_ids,
            "item_ids": self.item_ids,
        }
        if self.timestamps is not None:
            arrays["timestamps"] = self.timestamps.data
        if self.item_titles is not None:
            arrays["item_titles"] = self.item_titles
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Interactions:
        """Read a file written by :meth:`save`, checking that its arrays form a valid matrix
        (out-of-range indices would otherwise give wrong results or a crash much later)."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                data, indices, indptr = z["data"], z["indices"], z["indptr"]
                ts = z.get("timestamps")
                problem = csr_problem(data, indices, indptr, z["shape"])
                if problem is None and ts is not None and ts.shape != data.shape:
                    problem = f"timestamps has shape {ts.shape}, data {data.shape}"
                if problem is not None:
                    raise DataError(
                        f"corrupt saved interactions: {problem}",
                        path=path,
                        fix="write the file again (Interactions.save, or rerun what wrote it)",
                    )
                shape = tuple(int(x) for x in z["shape"])
                m = csr(data, indices, indptr, shape)  # type: ignore[arg-type]
                tm = None if ts is None else csr(ts, m.indices, m.indptr, shape)  # type: ignore[arg-type]
                titles = z.get("item_titles")
                return cls(m, z["user_ids"], z["item_ids"], tm, titles, str(path))
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(
                f"cannot read saved interactions ({' '.join(str(exc).split())})",
                path=path,
                fix="pass a file written by Interactions.save",
            ) from None


# --------------------------------------------------------------------------------------------
# checks and conversions used by the model / pipeline
# --------------------------------------------------------------------------------------------


def require_nonnegative(data: Interactions, *, what: str = "the implicit ALS model") -> None:
    """Raise :class:`DataError` unless every stored value is finite and >= 0.

    Implicit-feedback weighting (confidence 1 + alpha * r) assumes r >= 0; call this before
    fitting an implicit model so a negative rating produces a clear message rather than a
    silently wrong model.
    """
    d = data.matrix.data
    bad = ~np.isfinite(d)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        u = int(data.entry_users()[k])
        raise DataError(
            f"{int(bad.sum())} value(s) are NaN or infinite (e.g. user {data.user_ids[u]}, item "
            f"{data.item_ids[data.matrix.indices[k]]})",
            path=data.source,
            fix="remove or fill them before training",
        )
    neg = d < 0
    if neg.any():
        k = int(np.flatnonzero(neg)[0])
        u = int(data.entry_users()[k])
        raise DataError(
            f"{int(neg.sum())} of {d.size} values are negative (e.g. user {data.user_ids[u]}, "
            f"item {data.item_ids[data.matrix.indices[k]]}: {float(d[k])}) but {what} needs "
            "non-negative confidences",
            path=data.source,
            fix="binarize the ratings at a threshold (to_implicit(..., mode='binary')), shift or "
            "clip them to >= 0, or use the explicit weighting",
        )


def to_implicit(
    data: Interactions,
    mode: Literal["confidence", "binary"] = "confidence",
    threshold: float | None = None,
) -> Interactions:
    """Turn ratings into implicit feedback.

    Args:
        mode: ``"confidence"`` keeps the values (as the confidence r in c = 1 + alpha * r);
            ``"binary"`` sets every kept entry to 1.0.
        threshold: if given, entries with value < ``threshold`` are dropped first (e.g. 4.0 for
            "MovieLens rating >= 4 is a positive"). With ``mode="binary"`` and no threshold, every
            stored entry becomes 1.0.

    The result is checked with :func:`require_nonnegative`.
    """
    if mode not in ("confidence", "binary"):
        raise ValueError(f"mode must be 'confidence' or 'binary', got {mode!r}")
    out = data
    if threshold is not None:
        out = data.select_entries(data.matrix.data >= threshold)
        if out.nnz == 0:
            raise DataError(
                f"no interactions have a value >= {threshold}",
                path=data.source,
                fix="lower the binarization threshold",
            )
    if mode == "binary":
        if out is data:
            out = data.with_matrix(data.matrix.copy())
        out.matrix.data[:] = 1.0
    require_nonnegative(out)
    return out
