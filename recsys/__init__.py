"""recsys: exact, fast ALS candidate generation in PyTorch, with Faiss retrieval."""

__version__ = "0.1.0"
