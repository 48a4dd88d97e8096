"""Evaluation of recommenders: full-ranking evaluation, ranking and beyond-accuracy metrics.

Everything is batched on torch (CPU or CUDA, same code) with no Python loop per user. The full
ranking itself is :func:`recsys.scoring.topk_items` (exact top-k per user in fused blocks, memory
bounded by a budget), the same scorer ``ALS.recommend`` and the candidate generator use.

- :func:`ranking_metrics`: recall, capped recall, precision, NDCG, MAP, hit rate, MRR at any k.
- :func:`beyond_accuracy_metrics`: catalog coverage, Gini of exposure, popularity percentile,
  novelty, intra-list diversity.
- :func:`rating_metrics`, :func:`rmse`, :func:`mae`: explicit-feedback models.
- :func:`evaluate`: the one call of the training pipeline (embeddings in, metrics dict out).
- :func:`evaluate_candidates`, :func:`recall_vs_exact`: the same for ANN candidate lists.
"""

from recsys.eval.beyond import (
    BEYOND_METRICS,
    beyond_accuracy_metrics,
    catalog_coverage,
    exposure_counts,
    gini_from_counts,
    gini_index,
    intra_list_diversity,
    novelty,
    popularity_percentile,
    popularity_percentiles,
)
from recsys.eval.evaluate import (
    ALL_METRICS,
    drop_excluded,
    evaluate,
    evaluate_candidates,
    item_degrees,
)
from recsys.eval.ranking import RANKING_METRICS, ranking_metrics, recall_vs_exact
from recsys.eval.rating import mae, predict_entries, rating_metrics, rmse
from recsys.eval.report import format_metrics, markdown_metrics

__all__ = [
    "ALL_METRICS",
    "BEYOND_METRICS",
    "RANKING_METRICS",
    "beyond_accuracy_metrics",
    "catalog_coverage",
    "drop_excluded",
    "evaluate",
    "evaluate_candidates",
    "exposure_counts",
    "format_metrics",
    "gini_from_counts",
    "gini_index",
    "intra_list_diversity",
    "item_degrees",
    "mae",
    "markdown_metrics",
    "novelty",
    "popularity_percentile",
    "popularity_percentiles",
    "predict_entries",
    "ranking_metrics",
    "rating_metrics",
    "recall_vs_exact",
    "rmse",
]
