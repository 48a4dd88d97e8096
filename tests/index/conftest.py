"""Fixtures of the index tests."""

import faiss
import pytest


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    """Tiny searches: one thread avoids OpenMP barrier stalls on a shared 2-core machine."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
