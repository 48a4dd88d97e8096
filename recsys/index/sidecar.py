"""Index files on disk: the ``.faiss`` file plus a JSON sidecar, both written atomically.

The sidecar (``<path>.json``, e.g. ``items.faiss.json``) records what a raw Faiss file cannot:
the metric as asked for (cosine and MIPS-to-L2 are IP / L2 indexes inside Faiss), the
dimension of the query vectors, the index type and parameters, the external item id map, the
SHA-256 of the model file the index was built from, the SHA-256 of the .faiss file itself (so a
half-replaced pair is detected), and the Faiss version.

Faiss cannot serialize an ``IndexShards``, so a sharded index (``shards`` > 1 in the sidecar) is
stored as its shards' Faiss serializations written one after the other into the one index file;
the sidecar records the number of shards, each shard's item count and byte length, and reading
joins them again with ``IndexShards`` (successive ids). Such a file is read with
:func:`recsys.index.load_index`, not ``faiss.read_index``. A plain index stays a plain Faiss file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from recsys.index.errors import IndexMismatchError
from recsys.index.shards import combine_shards
from recsys.io import atomic_path

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


def ids_to_json(ids: np.ndarray) -> tuple[str, list[Any]]:
    """(type tag, values) of an item id map, as the sidecar stores it."""
    if ids.dtype.kind in "iu":
        return "int", [int(v) for v in ids.tolist()]
    return "str", [str(v) for v in ids.tolist()]


def ids_from_json(kind: str, values: list[Any]) -> np.ndarray:
    """The item id map stored by :func:`ids_to_json`."""
    if kind == "int":
        return np.asarray(values, dtype=np.int64)
    if kind == "str":
        return np.asarray(values, dtype=str)
    raise IndexMismatchError(f"unknown item id type {kind!r} in sidecar")


def write_faiss(path: Path, parts: list[faiss.Index]) -> list[int]:
    """Write one CPU index (a plain Faiss file) or several shards; return the shards' byte sizes."""
    shard_bytes: list[int] = []
    if len(parts) == 1:
        _atomic_write(path, lambda tmp: faiss.write_index(parts[0], str(tmp)))
        return shard_bytes

    def write_shards(tmp: str) -> None:
        with open(tmp, "wb") as f:
            for part in parts:  # one shard's bytes in memory at a time
                blob = faiss.serialize_index(part)
                f.write(blob.tobytes())
                shard_bytes.append(int(blob.size))
                del blob

    _atomic_write(path, write_shards)
    return shard_bytes


def write_sidecar(path: Path, meta: dict[str, Any]) -> Path:
    """Write ``meta`` as the JSON sidecar of index file ``path``, atomically; return its path."""
    side = sidecar_path(path)

    def write_json(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(meta, f)

    _atomic_write(side, write_json)
    return side


#: Sidecar fields every reader needs, with the JSON types they must have.
_REQUIRED = {
    "kind": str,
    "metric": str,
    "dim": int,
    "index_dim": int,
    "n_items": int,
    "item_id_type": str,
    "item_ids": list,
    "index_sha256": str,
}
#: Fields a sidecar may leave out (or set to null), with the JSON types they must have otherwise.
_OPTIONAL = {"shards": int, "shard_sizes": list, "shard_bytes": list, "params": dict}


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed sidecar of index file ``path``, with its required fields checked.

    Raises FileNotFoundError naming it when it is missing and IndexMismatchError naming it when
    it is not JSON, another format version, or lacks a field (or has one of the wrong type).
    """
    side = sidecar_path(path)
    if not side.is_file():
        raise FileNotFoundError(
            f"index sidecar {side} not found: an index must be saved with "
            "recsys.index.save_index, which writes the .faiss file and its .json sidecar"
        )
    try:
        with open(side, encoding="utf-8") as f:
            meta = json.load(f)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise IndexMismatchError(
            f"index sidecar {side} is not valid JSON ({err}); re-export the index with "
            "scripts/export_index.py"
        ) from None
    if not isinstance(meta, dict):
        raise IndexMismatchError(
            f"index sidecar {side} holds a JSON {type(meta).__name__}, not an object; re-export "
            "the index with scripts/export_index.py"
        )
    if meta.get("format") != SIDECAR_FORMAT:
        raise IndexMismatchError(
            f"{side} has sidecar format {meta.get('format')!r}, this code reads "
            f"{SIDECAR_FORMAT}; re-export the index"
        )
    for key, kind in [*_REQUIRED.items(), *_OPTIONAL.items()]:
        value = meta.get(key)
        if key in _OPTIONAL and value is None:
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            raise IndexMismatchError(
                f"index sidecar {side}: field {key!r} must be a JSON {kind.__name__}, got "
                f"{value!r:.60}; re-export the index with scripts/export_index.py"
            )
    return meta


def faiss_error(err: BaseException) -> str:
    """The reason of a Faiss exception, without the C++ function and source location."""
    text = " ".join(str(err).split())
    return re.sub(r"^Error in .*? at \S+:\d+: (Error: )?", "", text)


def unreadable(path: Path, what: str, err: BaseException) -> IndexMismatchError:
    """The error for Faiss bytes that cannot be read back: one line naming the file and the fix."""
    return IndexMismatchError(
        f"{what} of {path} cannot be read by Faiss ({faiss_error(err)}): the file is damaged or "
        "not a Faiss index; re-export it with scripts/export_index.py"
    )


def read_faiss(path: Path, meta: dict[str, Any]) -> faiss.Index:
    """The Faiss index of ``path``: a plain Faiss file, or the shards a sharded save wrote."""
    shards = int(meta.get("shards") or 1)
    if shards == 1:
        try:
            return faiss.read_index(str(path))
        except (RuntimeError, MemoryError) as err:
            raise unreadable(path, "the index", err) from None
    sizes = meta.get("shard_sizes") or []
    lengths = meta.get("shard_bytes") or []
    if len(sizes) != shards or len(lengths) != shards or sum(lengths) != path.stat().st_size:
        raise IndexMismatchError(
            f"{sidecar_path(path)} describes {shards} shards but its shard_sizes / shard_bytes "
            f"do not fit {path.name} ({path.stat().st_size} bytes); re-export the index with "
            "scripts/export_index.py"
        )
    parts = []
    with open(path, "rb") as f:
        for s, (size, length) in enumerate(zip(sizes, lengths, strict=True)):
            blob = np.frombuffer(f.read(int(length)), dtype=np.uint8)
            try:
                part = faiss.deserialize_index(blob)
            except (RuntimeError, MemoryError) as err:
                raise unreadable(path, f"shard {s}", err) from None
            if int(part.ntotal) != int(size):
                raise IndexMismatchError(
                    f"shard {s} of {path} holds {part.ntotal} items but the sidecar says {size}; "
                    "re-export the index"
                )
            parts.append(part)
    return combine_shards(parts)
