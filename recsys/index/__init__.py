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
)
from recsys.index.errors import IndexMismatchError, UnknownUserError
from recsys.index.gpu import GPU_MAX_K, faiss_gpu_count
from recsys.index.item_index import KINDS, METRICS, ItemIndex
from recsys.index.sidecar import file_sha256, read_sidecar, sidecar_path
from recsys.index.store import load_index, save_index
from recsys.index.vectors import model_item_vectors

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
