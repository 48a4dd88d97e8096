"""Save and load an ItemIndex: the ``.faiss`` file plus its JSON sidecar (see
:mod:`recsys.index.sidecar` for the format), checked against the model it will serve.

Loading checks everything the sidecar records against the model it is used with and fails with
a message that says what differs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from recsys.index.errors import IndexMismatchError
from recsys.index.item_index import ItemIndex
from recsys.index.sidecar import file_sha256, ids_from_json, read_faiss, read_sidecar, sidecar_path
from recsys.index.vectors import model_item_vectors

logger = logging.getLogger(__name__)


def save_index(
    item_index: ItemIndex,
    path: str | os.PathLike[str],
    *,
    model_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``path`` (Faiss index) and ``<path>.json`` (sidecar) atomically; return the sidecar.

    The function form of :meth:`ItemIndex.save`, the counterpart of :func:`load_index`.
    """
    return item_index.save(path, model_path=model_path)


def _read_checked(path: Path) -> tuple[faiss.Index, dict[str, Any]]:
    """The Faiss index of ``path`` and its sidecar, checked to belong together."""
    if not path.is_file():
        raise FileNotFoundError(f"index file {path} not found")
    meta = read_sidecar(path)
    actual_sha = file_sha256(path)
    if meta.get("index_sha256") != actual_sha:
        raise IndexMismatchError(
            f"{path} does not match its sidecar {sidecar_path(path).name} (SHA-256 differs): "
            "the pair was not written together; re-export the index"
        )
    index = read_faiss(path, meta)
    if int(index.ntotal) != int(meta["n_items"]) or int(index.d) != int(meta["index_dim"]):
        raise IndexMismatchError(
            f"{path} holds {index.ntotal} vectors of dimension {index.d} but its sidecar says "
            f"{meta['n_items']} x {meta['index_dim']}; re-export the index"
        )
    if meta.get("faiss_version") != faiss.__version__:
        logger.info(
            "index %s was written by faiss %s, loading with %s",
            path,
            meta.get("faiss_version"),
            faiss.__version__,
        )
    return index, meta


def _item_index(index: faiss.Index, meta: dict[str, Any]) -> ItemIndex:
    """The ItemIndex a sidecar describes, around its loaded Faiss index."""
    return ItemIndex(
        index,
        kind=meta["kind"],
        metric=meta["metric"],
        dim=int(meta["dim"]),
        params=meta.get("params") or {},
        mips_to_l2=bool(meta.get("mips_to_l2")),
        max_norm=meta.get("max_norm"),
        item_ids=ids_from_json(meta["item_id_type"], meta["item_ids"]),
        vectors=meta.get("vectors", "custom"),
        model_sha256=meta.get("model_sha256"),
    )


def _check_served(
    item_index: ItemIndex, model: Any, item_vectors: Any, item_ids: Any, metric: str | None
) -> None:
    """Raise IndexMismatchError unless the index fits ``model`` (or ``item_vectors``)."""
    dim = n_items = None
    what = "the given item vectors"
    if model is not None:
        vec_kind = "factors" if item_index.vectors == "factors" else "embeddings"
        vecs = model_item_vectors(model, vec_kind)
        dim, n_items = vecs.shape[1], vecs.shape[0]
        what = f"the model's item {vec_kind}"
        model_ids = getattr(model, "item_ids", None)
        saved_default = np.array_equal(item_index.item_ids, np.arange(item_index.n_items))
        if item_ids is None and model_ids is not None and not saved_default:
            # the index carries an external id map: it must be the model's
            item_ids = model_ids
    elif item_vectors is not None:
        shape = np.shape(item_vectors)
        n_items, dim = int(shape[0]), int(shape[1])
    item_index.check_compatible(
        dim=dim, n_items=n_items, metric=metric, item_ids=item_ids, what=what
    )


def _check_model_hash(
    item_index: ItemIndex, path: Path, model_path: str | os.PathLike[str]
) -> None:
    """Raise IndexMismatchError when ``model_path`` is not the model file the index recorded."""
    recorded = item_index.model_sha256
    if recorded is None:
        logger.warning(
            "index %s was saved without a model hash: cannot verify it was built from %s",
            path,
            model_path,
        )
        return
    given = file_sha256(model_path)
    if given != recorded:
        raise IndexMismatchError(
            f"index {path} was built from a model file with SHA-256 {recorded[:12]}..., "
            f"but {model_path} has {given[:12]}...: the model changed since the index "
            "was exported. Re-export the index (or pass verify_model_hash=False)"
        )


def load_index(
    path: str | os.PathLike[str],
    *,
    model: Any = None,
    item_vectors: Any = None,
    item_ids: Any = None,
    metric: str | None = None,
    model_path: str | os.PathLike[str] | None = None,
    verify_model_hash: bool = True,
    device: str = "cpu",
    gpu_id: int = 0,
) -> ItemIndex:
    """Load an index saved by :func:`save_index` and check it against what it will serve.

    Checks (each failure raises IndexMismatchError saying what differs and how to fix it):
    the sidecar belongs to this .faiss file (SHA-256); the dimension and number of items match
    ``model`` (its item embeddings, or item factors for a cosine/"factors" index) or
    ``item_vectors``; ``metric`` matches when given; ``item_ids`` (default: ``model.item_ids``
    when the index was saved with an external id map) equals the saved id map; the SHA-256 of
    ``model_path`` equals the recorded model hash when both exist (``verify_model_hash=False``
    skips that last check). ``device="gpu"`` moves Flat / IVF indexes to the GPU after loading.
    """
    path = Path(path)
    item_index = _item_index(*_read_checked(path))
    _check_served(item_index, model, item_vectors, item_ids, metric)
    if model_path is not None and verify_model_hash:
        _check_model_hash(item_index, path, model_path)
    if device in ("gpu", "auto"):
        if device == "gpu" or faiss.get_num_gpus() > 0:
            item_index.to_gpu(gpu_id)
    elif device != "cpu":
        raise ValueError(f"device must be 'cpu', 'gpu' or 'auto', got {device!r}")
    return item_index
