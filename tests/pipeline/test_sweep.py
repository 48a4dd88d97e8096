"""The sweep summary: complete jobs best first, the overrides that differ as columns."""

from __future__ import annotations

import json
from pathlib import Path

from recsys.pipeline import write_sweep_summary
from recsys.pipeline.sweep import sweep_jobs


def _job(sweep: Path, name: str, overrides: list[str], value, *, minimize=False, done=True):
    folder = sweep / name
    folder.mkdir(parents=True)
    meta = {"overrides": overrides,
            "objective": {"name": "rmse" if minimize else "recall@20", "value": value,
                          "minimize": minimize}}  # fmt: skip
    (folder / "metadata.json").write_text(json.dumps(meta))
    if done:
        (folder / "metrics.json").write_text(json.dumps({"epochs": 3, "train_seconds": 1.5}))


def test_summary_ranks_complete_jobs_best_first(tmp_path: Path) -> None:
    assert write_sweep_summary(tmp_path) is None  # nothing complete yet
    _job(tmp_path, "0", ["data.preset=tiny", "als.n_factors=2"], 0.1)
    _job(tmp_path, "1", ["data.preset=tiny", "als.n_factors=3"], 0.3)
    _job(tmp_path, "2", ["data.preset=tiny", "als.n_factors=4"], None)  # NaN objective
    _job(tmp_path, "3", ["data.preset=tiny", "als.n_factors=5"], 0.9, done=False)
    path = write_sweep_summary(tmp_path)
    assert path == tmp_path / "summary.md"
    lines = path.read_text().splitlines()
    assert "3 complete jobs, best first (largest recall@20)." in lines
    assert "Overrides of every job: `data.preset=tiny`" in lines
    table = [line for line in lines if line.startswith("| ")]
    assert table == [
        "| job | als.n_factors | recall@20 (test) | epochs | train_seconds |",
        "| 1 | 3 | 0.3 | 3 | 1.5 |",
        "| 0 | 2 | 0.1 | 3 | 1.5 |",
        "| 2 | 4 | - | 3 | 1.5 |",
    ]


def test_a_minimised_objective_sorts_smallest_first(tmp_path: Path) -> None:
    _job(tmp_path, "0", ["als.regularization=0.1"], 0.95, minimize=True)
    _job(tmp_path, "1", ["als.regularization=1"], 0.91, minimize=True)
    assert [job["job"] for job in sweep_jobs(tmp_path)] == ["1", "0"]
