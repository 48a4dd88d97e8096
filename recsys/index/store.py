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
from recsys.index.params import ivf_inside
from recsys.index.shards import shard_list
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


#: The Faiss index class each sidecar ``kind`` must load as ("factory" may be any index).
_KIND_CLASSES = {"flat": faiss.IndexFlat, "ivf": faiss.IndexIVF, "hnsw": faiss.IndexHNSW}


def _check_faiss_type(path: Path, index: faiss.Index, meta: dict[str, Any]) -> None:
    """Raise IndexMismatchError unless the loaded index is of the kind and Faiss metric the
    sidecar records (a wrong pair would be searched with the wrong parameters or scores)."""
    parts = shard_list(index) or [index]
    base = faiss.downcast_index(parts[0])
    expected = _KIND_CLASSES.get(meta["kind"])
    if expected is not None and not isinstance(base, expected):
        raise IndexMismatchError(
            f"{path} holds a Faiss {type(base).__name__} but its sidecar says kind "
            f"{meta['kind']!r}; re-export the index with scripts/export_index.py"
        )
    l2 = meta["metric"] == "l2" or bool(meta.get("mips_to_l2"))
    metric_type = faiss.METRIC_L2 if l2 else faiss.METRIC_INNER_PRODUCT
    if base.metric_type != metric_type:
        raise IndexMismatchError(
            f"{path} holds an index with Faiss metric type {base.metric_type} but its sidecar "
            f"says metric {meta['metric']!r} (mips_to_l2={bool(meta.get('mips_to_l2'))}); "
            "re-export the index with scripts/export_index.py"
        )


def _check_ivf_ids(path: Path, index: faiss.Index) -> None:
    """Raise IndexMismatchError unless every IVF shard's inverted lists hold each row id exactly
    once: damaged ids would come back from searches as items that do not exist."""
    for s, part in enumerate(shard_list(index) or [index]):
        ivf = ivf_inside(faiss.downcast_index(part))
        if ivf is None:
            continue
        lists = ivf.invlists
        ids = [
            faiss.rev_swig_ptr(lists.get_ids(j), lists.list_size(j)).copy()
            for j in range(lists.nlist)
            if lists.list_size(j)
        ]
        ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        n = int(part.ntotal)
        if ids.size != n or np.any((ids < 0) | (ids >= n)) or np.unique(ids).size != n:
            raise IndexMismatchError(
                f"the inverted lists of shard {s} of {path} do not hold each of its {n} items "
                "once: the file is damaged; re-export it with scripts/export_index.py"
            )


def _read_checked(path: Path) -> tuple[faiss.Index, dict[str, Any]]:
    """The Faiss index of ``path`` and its sidecar, checked to belong together."""
    if path.is_dir():
        raise IsADirectoryError(
            f"index file {path} is a directory; pass the .faiss file that "
            "scripts/export_index.py wrote"
        )
    if not path.is_file():
        raise FileNotFoundError(f"index file {path} not found")
    meta = read_sidecar(path)
    actual_sha = file_sha256(path)
    if meta["index_sha256"] != actual_sha:
        raise IndexMismatchError(
            f"{path} does not match its sidecar {sidecar_path(path).name} (SHA-256 differs): "
            "the file was changed or damaged since it was saved, or the pair was not written "
            "together; re-export the index with scripts/export_index.py"
        )
    index = read_faiss(path, meta)
    if int(index.ntotal) != meta["n_items"] or int(index.d) != meta["index_dim"]:
        raise IndexMismatchError(
            f"{path} holds {index.ntotal} vectors of dimension {index.d} but its sidecar says "
            f"{meta['n_items']} x {meta['index_dim']}; re-export the index"
        )
    _check_faiss_type(path, index, meta)
    _check_ivf_ids(path, index)
    if meta.get("faiss_version") != faiss.__version__:
        logger.info(
            "index %s was written by faiss %s, loading with %s",
            path,
            meta.get("faiss_version"),
            faiss.__version__,
        )
    return index, meta


def _item_index(path: Path, index: faiss.Index, meta: dict[str, Any]) -> ItemIndex:
    """The ItemIndex a sidecar describes, around its loaded Faiss index.

    A sidecar whose facts contradict each other (an unknown kind or metric, a dimension that
    does not fit the transform, an id map of another length) raises IndexMismatchError naming it.
    """
    try:
        return ItemIndex(
            index,
            kind=meta["kind"],
            metric=meta["metric"],
            dim=meta["dim"],
            params=meta.get("params") or {},
            mips_to_l2=bool(meta.get("mips_to_l2")),
            max_norm=meta.get("max_norm"),
            item_ids=ids_from_json(meta["item_id_type"], meta["item_ids"]),
            vectors=meta.get("vectors", "custom"),
            model_sha256=meta.get("model_sha256"),
        )
    except (ValueError, TypeError) as err:
        raise IndexMismatchError(
            f"index sidecar {sidecar_path(path)} does not describe {path.name}: {err}; "
            "re-export the index with scripts/export_index.py"
        ) from None


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
    item_index = _item_index(path, *_read_checked(path))
    _check_served(item_index, model, item_vectors, item_ids, metric)
    if model_path is not None and verify_model_hash:
        _check_model_hash(item_index, path, model_path)
    if device in ("gpu", "auto"):
        if device == "gpu" or faiss.get_num_gpus() > 0:
            item_index.to_gpu(gpu_id)
    elif device != "cpu":
        raise ValueError(f"device must be 'cpu', 'gpu' or 'auto', got {device!r}")
    return item_index
