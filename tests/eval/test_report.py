"""The metric tables: plain text (console) and markdown (run reports) from one layout."""

from __future__ import annotations

from recsys.eval import format_metrics, markdown_metrics

METRICS = {"recall@10": 0.1, "recall@20": 0.2, "ndcg@20": 0.3, "n_users_evaluated": 5}


def test_format_metrics_aligns_one_column_per_cutoff() -> None:
    assert format_metrics(METRICS, title="T").splitlines() == [
        "T",
        "metric      @10      @20",
        "recall   0.1000   0.2000",
        "ndcg          -   0.3000",
        "n_users_evaluated: 5",
    ]


def test_markdown_metrics_has_the_same_cells() -> None:
    assert markdown_metrics(METRICS, digits=3).splitlines() == [
        "| metric | @10 | @20 |",
        "|---|---|---|",
        "| recall | 0.100 | 0.200 |",
        "| ndcg | - | 0.300 |",
        "",
        "| entry | value |",
        "|---|---|",
        "| n_users_evaluated | 5 |",
    ]
    assert markdown_metrics({}) == ""
