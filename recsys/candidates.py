"""Candidate export: every user's top-k items with the features a ranker reads, as Parquet.

One row per (user, candidate): the dataset's external ``user_id`` and ``item_id``, ``rank``
(1 = best) and ``score``, the ALS model score ``x_u . y_i + b_u + b_i + mu`` (recomputed exactly
by :class:`~recsys.retrieval.CandidateGenerator` whatever index picked the items, so it equals
``ALS.predict``), plus what the model already knows about the pair: ``item_bias`` (null when the
model has no biases), ``item_popularity`` and ``user_activity`` (training interaction counts) and
``item_norm`` (the L2 norm of the item's factors, bias excluded).

Users are processed in batches: each batch is searched, turned into one Arrow table and written
as one Parquet row group, so memory stays bounded by the batch (not the user count) and a reader
can stream the file row group by row group. The file is written atomically
(:func:`recsys.io.atomic_path`): an interrupted export leaves no partial file behind.

Needs pyarrow (``pip install recsys[parquet]``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.io import atomic_path
from recsys.retrieval import CandidateGenerator

__all__ = ["COLUMNS", "CandidateFeatures", "export_candidates", "require_pyarrow"]

#: the columns of a candidate file, in order
COLUMNS = (
    "user_id",
    "item_id",
    "rank",
    "score",
    "item_bias",
    "item_popularity",
    "user_activity",
    "item_norm",
)


def require_pyarrow() -> Any:
    """The ``pyarrow`` module, or ImportError saying what to install (one line)."""
    try:
        import pyarrow
        import pyarrow.parquet  # the writer lives in the submodule
    except ImportError:
        raise ImportError(
            "writing candidates as Parquet needs pyarrow: pip install recsys[parquet] "
            "(or pip install pyarrow)"
        ) from None
    return pyarrow


@dataclass(frozen=True)
class CandidateFeatures:
    """Per-item and per-user features of a trained model, looked up for each candidate row.

    ``item_bias`` is None when the model has no biases (the column is then null).
    """

    item_bias: np.ndarray | None
    item_popularity: np.ndarray
    item_norm: np.ndarray
    user_activity: np.ndarray

    @classmethod
    def from_generator(cls, generator: CandidateGenerator) -> CandidateFeatures:
        """Features from the generator's model and seen matrix (the training interactions)."""
        model, seen = generator.model, generator.seen
        if model is None or seen is None:
            raise ValueError(
                "candidate features need a generator built from a model with its training "
                "matrix: CandidateGenerator(model, index, seen=train.matrix)"
            )
        bias = getattr(model, "item_bias", None)
        factors = np.asarray(_numpy(model.item_factors), dtype=np.float64)
        return cls(
            item_bias=None if bias is None else _numpy(bias).astype(np.float32),
            item_popularity=np.bincount(seen.indices, minlength=seen.shape[1]).astype(np.int64),
            item_norm=np.linalg.norm(factors, axis=1).astype(np.float32),
            user_activity=np.diff(seen.indptr).astype(np.int64),
        )


def _numpy(x: Any) -> np.ndarray:
    """A torch tensor or array as a numpy array on the CPU."""
    if hasattr(x, "detach"):
        x = x.detach().to("cpu").numpy()
    return np.asarray(x)


def _schema(pa: Any, user_ids: np.ndarray, item_ids: np.ndarray, meta: dict[str, str]) -> Any:
    """The file's Arrow schema: ids typed like the dataset's (int64 or string)."""

    def id_type(ids: np.ndarray) -> Any:
        return pa.int64() if ids.dtype.kind in "iu" else pa.string()

    return pa.schema(
        [
            ("user_id", id_type(user_ids)),
            ("item_id", id_type(item_ids)),
            ("rank", pa.int32()),
            ("score", pa.float32()),
            ("item_bias", pa.float32()),
            ("item_popularity", pa.int64()),
            ("user_activity", pa.int64()),
            ("item_norm", pa.float32()),
        ],
        metadata={f"recsys.{k}": str(v) for k, v in meta.items()},
    )


def _batch_table(
    pa: Any,
    schema: Any,
    users: np.ndarray,
    ids: np.ndarray,
    scores: np.ndarray,
    features: CandidateFeatures,
    external: tuple[np.ndarray, np.ndarray],
) -> Any:
    """One batch's candidates (internal ``users``, (n, k) ``ids`` / ``scores``) as a table.

    The -1 padding the generator leaves when a user has fewer than k valid items is dropped, so
    such a user simply has fewer rows.
    """
    present = ids >= 0
    row_user = np.repeat(users, present.sum(axis=1))
    item = ids[present]
    rank = (np.cumsum(present, axis=1, dtype=np.int32))[present]
    bias = (
        pa.nulls(item.size, pa.float32())
        if features.item_bias is None
        else pa.array(features.item_bias[item], pa.float32())
    )
    columns = [
        pa.array(external[0][row_user], schema.field("user_id").type),
        pa.array(external[1][item], schema.field("item_id").type),
        pa.array(rank, pa.int32()),
        pa.array(scores[present], pa.float32()),
        bias,
        pa.array(features.item_popularity[item], pa.int64()),
        pa.array(features.user_activity[row_user], pa.int64()),
        pa.array(features.item_norm[item], pa.float32()),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _batches(users: np.ndarray, batch_size: int, progress: bool) -> Iterator[np.ndarray]:
    """``users`` in slices of ``batch_size``, with a tqdm bar counting users when asked."""
    from tqdm.auto import tqdm

    with tqdm(total=len(users), unit="user", disable=not progress, desc="candidates") as bar:
        for start in range(0, len(users), batch_size):
            chunk = users[start : start + batch_size]
            yield chunk
            bar.update(len(chunk))


def export_candidates(
    generator: CandidateGenerator,
    path: str | os.PathLike[str],
    user_ids: np.ndarray,
    external_ids: tuple[np.ndarray, np.ndarray],
    *,
    k: int,
    allowed_items: Any = None,
    excluded_items: Any = None,
    batch_size: int = 1024,
    progress: bool = False,
    metadata: dict[str, Any] | None = None,
) -> int:
    """Write the top-``k`` unseen candidates of ``user_ids`` to the Parquet file ``path``.

    Args:
        generator: a :class:`CandidateGenerator` over a model and its training matrix
            (``seen``): seen items are excluded, and the features come from both.
        user_ids: internal user indices, in the order the file lists them.
        external_ids: the dataset's (user ids, item ids) maps, indexed by internal index.
        k: candidates per user (clipped to the number of items, like the generator does).
        allowed_items / excluded_items: internal item indices (a global allow / deny list).
        batch_size: users per batch = rows of one Parquet row group / k.
        progress: show a tqdm bar (users done).
        metadata: extra ``recsys.<key>`` entries for the file's schema metadata.

    Returns the number of rows written (one per user and candidate).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pa = require_pyarrow()
    import pyarrow.parquet as pq

    features = CandidateFeatures.from_generator(generator)
    users = np.asarray(user_ids, dtype=np.int64).ravel()
    schema = _schema(pa, *external_ids, {"k": k, **(metadata or {})})
    rows = 0
    with atomic_path(Path(path)) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for chunk in _batches(users, batch_size, progress):
            ids, scores = generator.candidates(
                chunk, k=k, allowed_items=allowed_items, excluded_items=excluded_items
            )
            table = _batch_table(pa, schema, chunk, ids, scores, features, external_ids)
            writer.write_table(table, row_group_size=max(table.num_rows, 1))
            rows += table.num_rows
    return rows
