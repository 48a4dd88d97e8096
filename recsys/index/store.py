"""Save and load an ItemIndex: the ``.faiss`` file plus a JSON sidecar, both written atomically.

The sidecar (``<path>.json``, e.g. ``items.faiss.json``) records what a raw Faiss file cannot:
the metric as asked for (cosine and MIPS-to-L2 are IP / L2 indexes inside Faiss), the
dimension of the query vectors, the index type and parameters, the external item id map, the
SHA-256 of the model file the index was built from, the SHA-256 of the .faiss file itself (so a
half-replaced pair is detected), and the Faiss version. Loading checks all of it against the
model it is used with and fails with a message that says what differs.

Faiss cannot serialize an ``IndexShards``, so a sharded index (``shards`` > 1 in the sidecar) is
stored as its shards' Faiss serializations written one after the other into the one index file;
the sidecar records the number of shards, each shard's item count and byte length, and loading
joins them again with ``IndexShards`` (successive ids). Such a file is read with
:func:`load_index`, not ``faiss.read_index``. A plain index stays a plain Faiss file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from recsys.index.builder import model_item_vectors
from recsys.index.errors import IndexMismatchError
from recsys.index.item_index import ItemIndex, combine_shards
from recsys.io import atomic_path

logger = logging.getLogger(__name__)

SIDECAR_FORMAT = 1


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The JSON sidecar next to an index file: ``items.faiss`` -> ``items.faiss.json``."""
    p = Path(path)
    return p.with_name(p.name + ".json")


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: Path, write: Any) -> None:
    """Write through ``write(tmp_path)`` to a temp file in the same folder, then os.replace."""
    with atomic_path(path) as tmp:
        write(str(tmp))


def _ids_to_json(ids: np.ndarray) -> tuple[str, list[Any]]:
    if ids.dtype.kind in "iu":
        return "int", [int(v) for v in ids.tolist()]
    return "str", [str(v) for v in ids.tolist()]


def _ids_from_json(kind: str, values: list[Any]) -> np.ndarray:
    if kind == "int":
        return np.asarray(values, dtype=np.int64)
    if kind == "str":
        return np.asarray(values, dtype=str)
    raise IndexMismatchError(f"unknown item id type {kind!r} in sidecar")


def save_index(
    item_index: ItemIndex,
    path: str | os.PathLike[str],
    *,
    model_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``path`` (Faiss index) and ``<path>.json`` (sidecar) atomically; return the sidecar.

    ``model_path``: the saved model file the index was built from; its SHA-256 goes into the
    sidecar so loading can tell when the model has changed since. GPU indexes are copied to the
    CPU for writing (Faiss writes CPU indexes only).
    """
    path = Path(path)
    model_sha = file_sha256(model_path) if model_path is not None else item_index.model_sha256
    shard_bytes: list[int] = []
    if item_index.shards == 1:
        cpu_index = item_index.cpu_index()
        index_dim = int(cpu_index.d)
        _atomic_write(path, lambda tmp: faiss.write_index(cpu_index, str(tmp)))
    else:
        parts = item_index.cpu_shards()
        index_dim = int(parts[0].d)

        def write_shards(tmp: str) -> None:
            with open(tmp, "wb") as f:
                for part in parts:  # one shard's bytes in memory at a time
                    blob = faiss.serialize_index(part)
                    f.write(blob.tobytes())
                    shard_bytes.append(int(blob.size))
                    del blob

        _atomic_write(path, write_shards)
    id_kind, id_values = _ids_to_json(item_index.item_ids)
    meta = {
        "format": SIDECAR_FORMAT,
        "faiss_version": faiss.__version__,
        "kind": item_index.kind,
        "metric": item_index.metric,
        "dim": item_index.dim,
        "index_dim": index_dim,
        "n_items": item_index.n_items,
        "shards": item_index.shards,
        "shard_sizes": item_index.shard_sizes,
        "shard_bytes": shard_bytes or None,
        "params": item_index.params,
        "mips_to_l2": item_index.mips_to_l2,
        "max_norm": item_index.max_norm,
        "vectors": item_index.vectors,
        "model_sha256": model_sha,
        "model_file": None if model_path is None else Path(model_path).name,
        "index_file": path.name,
        "index_sha256": file_sha256(path),
        "item_id_type": id_kind,
        "item_ids": id_values,
    }
    side = sidecar_path(path)

    def write_json(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(meta, f)

    _atomic_write(side, write_json)
    item_index.model_sha256 = model_sha
    logger.info("saved %r to %s (+ %s)", item_index, path, side.name)
    return side


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed sidecar of index file ``path`` (raises FileNotFoundError naming it)."""
    side = sidecar_path(path)
    if not side.is_file():
        raise FileNotFoundError(
            f"index sidecar {side} not found: an index must be saved with "
            "recsys.index.save_index, which writes the .faiss file and its .json sidecar"
        )
    with open(side, encoding="utf-8") as f:
        meta = json.load(f)
    if meta.get("format") != SIDECAR_FORMAT:
        raise IndexMismatchError(
            f"{side} has sidecar format {meta.get('format')!r}, this code reads "
            f"{SIDECAR_FORMAT}; re-export the index"
        )
    return meta


def _read_faiss(path: Path, meta: dict[str, Any]) -> faiss.Index:
    """The Faiss index of ``path``: a plain Faiss file, or the shards a sharded save wrote."""
    shards = int(meta.get("shards") or 1)
    if shards == 1:
        return faiss.read_index(str(path))
    sizes = meta.get("shard_sizes") or []
    lengths = meta.get("shard_bytes") or []
    if len(sizes) != shards or len(lengths) != shards or sum(lengths) != path.stat().st_size:
        raise IndexMismatchError(
            f"{sidecar_path(path).name} describes {shards} shards but its shard_sizes / "
            f"shard_bytes do not fit {path.name} ({path.stat().st_size} bytes); re-export the index"
        )
    parts = []
    with open(path, "rb") as f:
        for s, (size, length) in enumerate(zip(sizes, lengths, strict=True)):
            blob = np.frombuffer(f.read(int(length)), dtype=np.uint8)
            try:
                part = faiss.deserialize_index(blob)
            except RuntimeError as err:
                raise IndexMismatchError(
                    f"shard {s} of {path} cannot be read ({err}); re-export the index"
                ) from None
            if int(part.ntotal) != int(size):
                raise IndexMismatchError(
                    f"shard {s} of {path} holds {part.ntotal} items but the sidecar says {size}; "
                    "re-export the index"
                )
            parts.append(part)
    return combine_shards(parts)


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
    if not path.is_file():
        raise FileNotFoundError(f"index file {path} not found")
    meta = read_sidecar(path)
    actual_sha = file_sha256(path)
    if meta.get("index_sha256") != actual_sha:
        raise IndexMismatchError(
            f"{path} does not match its sidecar {sidecar_path(path).name} (SHA-256 differs): "
            "the pair was not written together; re-export the index"
        )
    index = _read_faiss(path, meta)
    if int(index.ntotal) != int(meta["n_items"]) or int(index.d) != int(meta["index_dim"]):
        raise IndexMismatchError(
            f"{path} holds {index.ntotal} vectors of dimension {index.d} but its sidecar says "
            f"{meta['n_items']} x {meta['index_dim']}; re-export the index"
        )
    item_index = ItemIndex(
        index,
        kind=meta["kind"],
        metric=meta["metric"],
        dim=int(meta["dim"]),
        params=meta.get("params") or {},
        mips_to_l2=bool(meta.get("mips_to_l2")),
        max_norm=meta.get("max_norm"),
        item_ids=_ids_from_json(meta["item_id_type"], meta["item_ids"]),
        vectors=meta.get("vectors", "custom"),
        model_sha256=meta.get("model_sha256"),
    )
    if meta.get("faiss_version") != faiss.__version__:
        logger.info(
            "index %s was written by faiss %s, loading with %s",
            path,
            meta.get("faiss_version"),
            faiss.__version__,
        )

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

    if model_path is not None and verify_model_hash:
        recorded = item_index.model_sha256
        if recorded is None:
            logger.warning(
                "index %s was saved without a model hash: cannot verify it was built from %s",
                path,
                model_path,
            )
        else:
            given = file_sha256(model_path)
            if given != recorded:
                raise IndexMismatchError(
                    f"index {path} was built from a model file with SHA-256 {recorded[:12]}..., "
                    f"but {model_path} has {given[:12]}...: the model changed since the index "
                    "was exported. Re-export the index (or pass verify_model_hash=False)"
                )
    if device in ("gpu", "auto"):
        if device == "gpu" or faiss.get_num_gpus() > 0:
            item_index.to_gpu(gpu_id)
    elif device != "cpu":
        raise ValueError(f"device must be 'cpu', 'gpu' or 'auto', got {device!r}")
    return item_index
