"""Errors raised by the index package, each one saying what to fix."""

from __future__ import annotations


class IndexMismatchError(ValueError):
    """A saved or given index does not fit the model or embeddings it is used with.

    Raised when the dimension, metric, number of items, item id map or model file hash differ;
    the message names both sides and says how to fix it (usually: rebuild the index from the
    current model with ``build_index`` / ``scripts/export_index.py``).
    """


class UnknownUserError(KeyError):
    """Candidates were asked for user ids the model does not know.

    Pass ``user_vectors`` (for example ``model.fold_in(rows)``) for new users, or opt in to the
    popularity fallback with ``fallback="popular"``.
    """

    def __str__(self) -> str:  # KeyError would quote the message; show it as written
        return str(self.args[0]) if self.args else ""
