"""Predefined train/test splits: two sets of columns (or two Interactions) in one id space."""

from __future__ import annotations

from typing import Any

import numpy as np

from recsys.data.csr import Duplicates
from recsys.data.errors import DataError
from recsys.data.ids import unique_sorted
from recsys.data.interactions import Interactions
from recsys.data.splits import Split


def union_ids(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if (a.dtype.kind == "U") != (b.dtype.kind == "U"):
        # one file had only integer ids, the other also strings: compare as strings
        a, b = a.astype(str), b.astype(str)
    return unique_sorted(a, b)


def split_from_parts(
    train_cols: dict[str, Any],
    test_cols: dict[str, Any],
    *,
    train_source: str,
    test_source: str,
    duplicates: Duplicates = "sum",
    item_titles: Any = None,
    extra_users: np.ndarray | None = None,
    extra_items: np.ndarray | None = None,
) -> Split:
    """Build a predefined train/test :class:`Split` from two sets of columns, in one shared id
    space (the union of the ids of both parts). Used by the file-based split loaders."""
    users = union_ids(train_cols["user"], test_cols["user"])
    items = union_ids(train_cols["item"], test_cols["item"])
    if extra_users is not None:
        users = unique_sorted(users, extra_users)
    if extra_items is not None:
        items = unique_sorted(items, extra_items)

    def build(cols: dict[str, Any], source: str) -> Interactions:
        u, i = np.asarray(cols["user"]), np.asarray(cols["item"])
        if users.dtype.kind == "U":
            u = u.astype(str)
        if items.dtype.kind == "U":
            i = i.astype(str)
        return Interactions.from_columns(
            u,
            i,
            cols.get("value"),
            cols.get("timestamp"),
            duplicates=duplicates,
            user_ids=users,
            item_ids=items,
            item_titles=item_titles,
            source=source,
            allow_empty=True,
        )

    train = build(train_cols, train_source)
    test = build(test_cols, test_source)
    return predefined_split(train, test, train_source=train_source, test_source=test_source)


def predefined_split(
    train: Interactions, test: Interactions, *, train_source: str, test_source: str
) -> Split:
    """The Split of a train and a test part in one id space, with its report."""
    if train.nnz == 0:
        raise DataError("the training file has no interactions", path=train_source)
    if test.nnz == 0:
        raise DataError("the test file has no interactions", path=test_source)
    train_users = train.user_degrees() > 0
    train_items = train.item_degrees() > 0
    tu = test.entry_users()
    report = {
        "method": "predefined",
        "train_file": train_source,
        "test_file": test_source,
        "n_users": train.n_users,
        "n_items": train.n_items,
        "train_interactions": train.nnz,
        "test_interactions": test.nnz,
        "test_users": int((test.user_degrees() > 0).sum()),
        "test_interactions_cold_user": int((~train_users[tu]).sum()),
        "test_interactions_cold_item": int((~train_items[test.matrix.indices]).sum()),
    }
    return Split(train, test, None, report)
