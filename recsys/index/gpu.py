"""Faiss on GPUs: how many devices it sees, the k limit, and which indexes cannot move there."""

from __future__ import annotations

import faiss

#: Largest k (and nprobe) Faiss GPU indexes accept.
GPU_MAX_K = 2048


def faiss_gpu_count() -> int:
    """Number of GPUs Faiss can use (0 with faiss-cpu or without a device)."""
    if not hasattr(faiss, "index_cpu_to_gpu"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except Exception:  # pragma: no cover - broken driver set-ups
        return 0


def is_hnsw(index: faiss.Index) -> bool:
    """Whether ``index`` is an HNSW index (which has no GPU implementation in Faiss)."""
    return isinstance(faiss.downcast_index(index), faiss.IndexHNSW)
