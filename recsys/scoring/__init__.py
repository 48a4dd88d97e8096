"""Exact top-k scoring over embeddings with exclusions: the one scorer of the library.

``ALS.recommend`` / ``ALS.similar_items``, the exhaustive path of
:class:`recsys.retrieval.CandidateGenerator` and :func:`recsys.eval.evaluate` all rank items with
:func:`topk_items`, so a list means the same thing (scores, exclusions, ties broken by the lower
item id, -1 / -inf padding) wherever it comes from. This package sits below the model, the index
and the evaluation and imports none of them.

- :mod:`recsys.scoring.topk`: the blocked driver (block sizing, exclusions, allowed items).
- :mod:`recsys.scoring.selection`: row-wise selection (two-stage CPU top-k, tie rules).
- :mod:`recsys.scoring.bf16`: the certified bfloat16 candidate path for large factor counts.
- :mod:`recsys.scoring.arrays`: input conversions shared with :mod:`recsys.eval`.
"""

from recsys.scoring.topk import DEFAULT_MEMORY_BUDGET, TopK, block_rows, topk_items

__all__ = ["DEFAULT_MEMORY_BUDGET", "TopK", "block_rows", "topk_items"]
