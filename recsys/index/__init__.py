"""Faiss indexes over item vectors: build (exact, IVF, HNSW, factory), search, save and load.

Typical use with a fitted ALS model::

    from recsys.index import build_index_from_model, load_index
    index = build_index_from_model(model, "hnsw")          # metric "ip": scores = model scores
    index.save("items.faiss", model_path="model.npz")      # + items.faiss.json sidecar
    index = load_index("items.faiss", model=model, model_path="model.npz")

Candidate generation with per-user filtering lives in :mod:`recsys.retrieval`.
"""

from recsys.index.builder import (
    DEFAULT_MIPS_TO_L2,
    build_index,
    build_index_from_model,
    default_nlist,
    default_nprobe,
    model_item_vectors,
)
from recsys.index.errors import IndexMismatchError, UnknownUserError
from recsys.index.item_index import GPU_MAX_K, KINDS, METRICS, ItemIndex, faiss_gpu_count
from recsys.index.store import file_sha256, load_index, read_sidecar, save_index, sidecar_path

__all__ = [
    "DEFAULT_MIPS_TO_L2",
    "GPU_MAX_K",
    "KINDS",
    "METRICS",
    "IndexMismatchError",
    "ItemIndex",
    "UnknownUserError",
    "build_index",
    "build_index_from_model",
    "default_nlist",
    "default_nprobe",
    "faiss_gpu_count",
    "file_sha256",
    "load_index",
    "model_item_vectors",
    "read_sidecar",
    "save_index",
    "sidecar_path",
]
