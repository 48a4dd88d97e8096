"""Train/test splits for implicit-feedback evaluation, deterministic by seed.

Every function takes an :class:`~recsys.data.interactions.Interactions` and returns a
:class:`Split` whose parts all have the *same shape and id maps* as the input (a user or item with
no interactions in a part simply has an empty row/column there), so internal indices mean the same
thing in train, test and fold-in. Timestamps follow their interactions.

Methods:

- :func:`random_holdout`: each user's interactions are split at random; ``test_fraction`` of them
  (rounded, at least 1, and always leaving at least 1 in train) go to test.
- :func:`leave_k_out`: the ``k`` latest interactions of each user (by timestamp when present, ties
  broken at random; otherwise ``k`` random ones) go to test.
- :func:`temporal_split`: one global cut time; everything at or after it goes to test.
- :func:`strong_generalization`: held-out *users* (Liang et al. 2018; Rendle et al. 2022): train
  holds all interactions of the other users; each held-out user's history is split at random into
  a fold-in part (``fold_in``, given to the model at evaluation time) and an evaluation part
  (``test``).

Rules for sparse users and items (the same for every method, and counted in ``report``):

- **Too few interactions**: a user with fewer than ``min_interactions`` interactions is not split;
  all of their interactions stay in train (``report["users_too_few"]``,
  ``report["interactions_too_few"]``). For strong generalization such users are never held out.
- **Cold items** (``drop_cold_items=True``, the default): a test or fold-in interaction on an item
  that has no interaction in train cannot be scored by a model trained on train; it is removed
  (``report["cold_item_interactions_dropped"]``).
- **Cold users** in a temporal split (``drop_cold_users=True``, the default): test interactions of
  users with no train interaction before the cut are removed
  (``report["cold_user_interactions_dropped"]``).

An empty train or test part raises :class:`~recsys.data.errors.DataError` with what to change.

To carve a validation set out of the training data, apply the same function to ``split.train``
(see :func:`validation_split`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.data.errors import DataError
from recsys.data.interactions import Interactions

__all__ = [
    "SPLIT_METHODS",
    "Split",
    "leave_k_out",
    "make_split",
    "random_holdout",
    "strong_generalization",
    "temporal_split",
    "validation_split",
]


@dataclass
class Split:
    """A train/test split sharing one id space.

    Attributes:
        train: interactions to fit on.
        test: held-out interactions to evaluate against.
        fold_in: for strong generalization, the held-out users' interactions the model may see
            at evaluation time (to compute their embeddings); otherwise ``None``.
        report: what the split did, as plain Python scalars (sizes, counts of users/interactions
            handled by the rules above, the parameters).
    """

    train: Interactions
    test: Interactions
    fold_in: Interactions | None = None
    report: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parts = [self.test] + ([self.fold_in] if self.fold_in is not None else [])
        for p in parts:
            if p.shape != self.train.shape:
                raise DataError(
                    f"split parts have different shapes: train {self.train.shape}, other {p.shape}"
                )
            if not (
                np.array_equal(p.user_ids, self.train.user_ids)
                and np.array_equal(p.item_ids, self.train.item_ids)
            ):
                raise DataError("split parts must share the same user and item id maps")

    @property
    def test_users(self) -> np.ndarray:
        """Internal indices of the users with at least one test interaction."""
        return np.flatnonzero(self.test.user_degrees() > 0)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _rank_within_user(
    data: Interactions, rng: np.random.Generator, latest_first: bool
) -> np.ndarray:
    """For each stored entry, its 0-based rank within its user's row: in random order, or
    latest timestamp first (ties in random order)."""
    rows = data.entry_users()
    r = rng.random(data.nnz)
    if latest_first:
        assert data.timestamps is not None
        order = np.lexsort((r, -data.timestamps.data.astype(np.float64), rows))
    else:  # rows are already grouped: a row index plus U[0, 1) orders at random within rows
        order = np.argsort(rows + r)
    rank = np.empty(data.nnz, dtype=np.int64)
    rank[order] = np.arange(data.nnz) - data.matrix.indptr[rows[order]]
    return rank


def _finish(
    data: Interactions,
    train_mask: np.ndarray,
    test_mask: np.ndarray,
    report: dict[str, Any],
    *,
    drop_cold_items: bool,
    fold_in_mask: np.ndarray | None = None,
) -> Split:
    """Apply the cold-item rule, build the parts, check they are not empty."""
    cols = data.matrix.indices
    warm = np.bincount(cols[train_mask], minlength=data.n_items) > 0
    cold = ~warm[cols]
    n_cold = int((test_mask & cold).sum())
    report["cold_item_interactions_dropped"] = n_cold if drop_cold_items else 0
    report["cold_item_interactions_kept"] = 0 if drop_cold_items else n_cold
    if drop_cold_items:
        test_mask = test_mask & ~cold
        if fold_in_mask is not None:
            report["cold_item_fold_in_dropped"] = int((fold_in_mask & cold).sum())
            fold_in_mask = fold_in_mask & ~cold
    train = data.select_entries(train_mask)
    test = data.select_entries(test_mask)
    fold_in = None if fold_in_mask is None else data.select_entries(fold_in_mask)
    method = report.get("method", "split")
    if train.nnz == 0:
        raise DataError(
            f"the {method} split left no training interactions",
            path=data.source,
            fix="use a smaller test fraction / k, or a later cut",
        )
    if test.nnz == 0:
        raise DataError(
            f"the {method} split produced an empty test set ({data.nnz} interactions, "
            f"{report.get('users_too_few', 0)} users below min_interactions, "
            f"{report.get('cold_item_interactions_dropped', 0)} cold-item interactions dropped)",
            path=data.source,
            fix="lower min_interactions, hold out more, or check the data/timestamps",
        )
    report.update(
        {
            "n_users": data.n_users,
            "n_items": data.n_items,
            "train_interactions": train.nnz,
            "test_interactions": test.nnz,
            "test_users": int((test.user_degrees() > 0).sum()),
            "train_users": int((train.user_degrees() > 0).sum()),
            "train_items": int((train.item_degrees() > 0).sum()),
        }
    )
    if fold_in is not None:
        report["fold_in_interactions"] = fold_in.nnz
    return Split(train, test, fold_in, report)


def _check_not_empty(data: Interactions, method: str) -> None:
    if data.nnz == 0:
        raise DataError(
            f"cannot make a {method} split of an empty data set",
            path=data.source,
            fix="check the input data",
        )


# --------------------------------------------------------------------------------------------
# the splits
# --------------------------------------------------------------------------------------------


def random_holdout(
    data: Interactions,
    test_fraction: float = 0.2,
    *,
    seed: int = 0,
    min_interactions: int = 2,
    drop_cold_items: bool = True,
) -> Split:
    """Hold out a random ``test_fraction`` of each user's interactions.

    A user with ``n >= min_interactions`` interactions gets ``clip(round(test_fraction * n), 1,
    n - 1)`` of them in test; users below ``min_interactions`` stay entirely in train.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    min_interactions = max(int(min_interactions), 2)
    _check_not_empty(data, "random holdout")
    rng = np.random.default_rng(seed)
    deg = data.user_degrees()
    eligible = deg >= min_interactions
    n_test = np.clip(np.floor(test_fraction * deg + 0.5), 1, np.maximum(deg - 1, 1)).astype(int)
    n_test[~eligible] = 0
    rows = data.entry_users()
    test = _rank_within_user(data, rng, latest_first=False) < n_test[rows]
    report = {
        "method": "random_holdout",
        "seed": seed,
        "test_fraction": float(test_fraction),
        "min_interactions": min_interactions,
        "users_too_few": int(((deg > 0) & ~eligible).sum()),
        "interactions_too_few": int(deg[~eligible].sum()),
    }
    return _finish(data, ~test, test, report, drop_cold_items=drop_cold_items)


def leave_k_out(
    data: Interactions,
    k: int = 1,
    *,
    seed: int = 0,
    min_interactions: int | None = None,
    use_timestamps: bool = True,
    drop_cold_items: bool = True,
) -> Split:
    """Hold out ``k`` interactions per user: the latest ones when timestamps exist (and
    ``use_timestamps``), else ``k`` at random. Users with fewer than ``min_interactions``
    (default ``k + 1``, so at least one stays in train) are not split."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    min_n = k + 1 if min_interactions is None else max(int(min_interactions), k + 1)
    _check_not_empty(data, "leave-k-out")
    rng = np.random.default_rng(seed)
    by_time = use_timestamps and data.timestamps is not None
    deg = data.user_degrees()
    eligible = deg >= min_n
    rows = data.entry_users()
    test = (_rank_within_user(data, rng, latest_first=by_time) < k) & eligible[rows]
    report = {
        "method": "leave_k_out",
        "seed": seed,
        "k": int(k),
        "by_timestamp": bool(by_time),
        "min_interactions": min_n,
        "users_too_few": int(((deg > 0) & ~eligible).sum()),
        "interactions_too_few": int(deg[~eligible].sum()),
    }
    return _finish(data, ~test, test, report, drop_cold_items=drop_cold_items)


def temporal_split(
    data: Interactions,
    *,
    test_fraction: float | None = 0.2,
    cut: float | None = None,
    min_interactions: int = 1,
    drop_cold_users: bool = True,
    drop_cold_items: bool = True,
) -> Split:
    """One global cut in time: interactions with ``timestamp >= cut`` go to test.

    Give either ``cut`` (a timestamp) or ``test_fraction`` (the cut is the ``1 - test_fraction``
    quantile of all timestamps, so roughly that fraction lands in test). Test interactions of users
    with fewer than ``min_interactions`` train interactions (cold users) are dropped when
    ``drop_cold_users``; no randomness is involved.
    """
    _check_not_empty(data, "temporal")
    if data.timestamps is None:
        raise DataError(
            "a temporal split needs timestamps, but this data set has none",
            path=data.source,
            fix="load a file with a timestamp column or use random_holdout / leave_k_out",
        )
    t = data.timestamps.data
    if cut is None:
        if test_fraction is None or not 0.0 < test_fraction < 1.0:
            raise ValueError("give cut, or test_fraction in (0, 1)")
        cut = float(np.quantile(t, 1.0 - test_fraction, method="higher"))
    test = t >= cut
    train = ~test
    rows = data.entry_users()
    report: dict[str, Any] = {
        "method": "temporal",
        "cut": float(cut),
        "test_fraction": None if test_fraction is None else float(test_fraction),
        "min_interactions": int(min_interactions),
    }
    if drop_cold_users:
        n_train = np.bincount(rows[train], minlength=data.n_users)
        cold = (n_train < min_interactions)[rows] & test
        report["cold_user_interactions_dropped"] = int(cold.sum())
        report["cold_users_dropped"] = int(np.count_nonzero(np.bincount(rows[cold], minlength=1)))
        test &= ~cold
    return _finish(data, train, test, report, drop_cold_items=drop_cold_items)


def strong_generalization(
    data: Interactions,
    *,
    test_users: int | float = 0.1,
    eval_fraction: float = 0.2,
    seed: int = 0,
    min_interactions: int = 2,
    drop_cold_items: bool = True,
) -> Split:
    """Held-out users, each split into fold-in and evaluation interactions.

    Args:
        test_users: how many users to hold out: a count (int) or a fraction of the eligible users
            (float in (0, 1)).
        eval_fraction: per held-out user, the fraction of their interactions in ``test`` (rounded,
            at least 1, leaving at least 1 for fold-in); the rest is ``fold_in``.
        min_interactions: only users with at least this many interactions (>= 2) can be held out.

    Returns:
        ``Split(train, test, fold_in, report)``: ``train`` has all interactions of the other
        users; the held-out users' rows are empty in train.
    """
    _check_not_empty(data, "strong generalization")
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    min_n = max(int(min_interactions), 2)
    rng = np.random.default_rng(seed)
    deg = data.user_degrees()
    eligible = np.flatnonzero(deg >= min_n)
    if isinstance(test_users, float) and not 0.0 < test_users < 1.0:
        raise ValueError(f"test_users as a fraction must be in (0, 1), got {test_users}")
    n_hold = round(test_users * eligible.size) if isinstance(test_users, float) else int(test_users)
    if n_hold < 1 or n_hold >= np.count_nonzero(deg):
        raise DataError(
            f"cannot hold out {n_hold} of {eligible.size} eligible users (users with >= {min_n} "
            "interactions) and keep others for training",
            path=data.source,
            fix="change test_users or min_interactions",
        )
    if n_hold > eligible.size:
        raise DataError(
            f"asked for {n_hold} held-out users but only {eligible.size} have >= {min_n} "
            "interactions",
            path=data.source,
            fix="hold out fewer users or lower min_interactions",
        )
    held = np.zeros(data.n_users, dtype=bool)
    held[rng.choice(eligible, size=n_hold, replace=False)] = True
    n_eval = np.clip(np.floor(eval_fraction * deg + 0.5), 1, np.maximum(deg - 1, 1)).astype(int)
    rows = data.entry_users()
    is_eval = _rank_within_user(data, rng, latest_first=False) < n_eval[rows]
    in_held = held[rows]
    report = {
        "method": "strong_generalization",
        "seed": seed,
        "held_out_users": n_hold,
        "eval_fraction": float(eval_fraction),
        "min_interactions": min_n,
        "users_too_few": int(((deg > 0) & (deg < min_n)).sum()),
        "interactions_too_few": int(deg[(deg > 0) & (deg < min_n)].sum()),
    }
    return _finish(
        data,
        ~in_held,
        in_held & is_eval,
        report,
        drop_cold_items=drop_cold_items,
        fold_in_mask=in_held & ~is_eval,
    )


#: Name -> function, for configuration files (``make_split(data, "leave_k_out", k=1)``).
SPLIT_METHODS = {
    "random": random_holdout,
    "random_holdout": random_holdout,
    "leave_k_out": leave_k_out,
    "temporal": temporal_split,
    "strong_generalization": strong_generalization,
}


def make_split(data: Interactions, method: str = "random", **kwargs: Any) -> Split:
    """Split ``data`` with the named method (a key of :data:`SPLIT_METHODS`)."""
    if method not in SPLIT_METHODS:
        raise ValueError(f"unknown split method {method!r}; choose one of {sorted(SPLIT_METHODS)}")
    return SPLIT_METHODS[method](data, **kwargs)


def validation_split(train: Interactions | Split, method: str = "random", **kwargs: Any) -> Split:
    """Carve a validation split out of training data: the same methods applied to ``train``.

    Pass a :class:`Split` to split its ``train`` part; the result's ``test`` is the validation
    set and its ``train`` the reduced training set (same shape and id maps as the original).
    """
    base = train.train if isinstance(train, Split) else train
    out = make_split(base, method, **kwargs)
    out.report["validation"] = True
    return out
