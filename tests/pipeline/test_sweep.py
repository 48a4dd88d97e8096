"""The sweep summary: complete jobs best first, the overrides that differ as columns, the
split of the objective, the objective against each parameter (PNG) and the importances."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from recsys.pipeline import write_sweep_summary
from recsys.pipeline.sweep import (
    IMPORTANCE_PLOT,
    objective_plot_name,
    parameter_scale,
    sweep_jobs,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _job(
    sweep: Path, name: str, overrides: list[str], value, *, minimize=False, done=True, split=None
):
    folder = sweep / name
    folder.mkdir(parents=True)
    meta = {"overrides": overrides,
            "objective": {"name": "rmse" if minimize else "recall@20", "value": value,
                          "minimize": minimize}}  # fmt: skip
    if split is not None:
        meta["objective"]["split"] = split
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


def _study_folder(sweep: Path) -> None:
    """Four validation-split trials over a log-spaced, a linear and a categorical parameter."""
    _job(sweep, "0", ["als.regularization=0.001", "als.n_factors=8", "als.cg=true"], 0.20,
         split="validation")  # fmt: skip
    _job(sweep, "1", ["als.regularization=0.1", "als.n_factors=16", "als.cg=false"], 0.35,
         split="validation")  # fmt: skip
    _job(sweep, "2", ["als.regularization=1.0", "als.n_factors=12", "als.cg=true"], 0.30,
         split="validation")  # fmt: skip
    _job(sweep, "3", ["als.regularization=0.01", "als.n_factors=10", "als.cg=false"], None,
         split="validation")  # fmt: skip


def test_the_objective_column_names_its_split(tmp_path: Path) -> None:
    _study_folder(tmp_path)
    table = [line for line in write_sweep_summary(tmp_path).read_text().splitlines()
             if line.startswith("| ")]  # fmt: skip
    assert table[0] == (
        "| job | als.regularization | als.n_factors | als.cg | recall@20 (validation) | epochs "
        "| train_seconds |"
    )
    assert [row.split(" | ")[0] for row in table[1:]] == ["| 1", "| 2", "| 0", "| 3"]


def test_jobs_on_different_splits_say_their_split_per_row(tmp_path: Path) -> None:
    _job(tmp_path, "0", ["als.n_factors=2"], 0.1, split="validation")
    _job(tmp_path, "1", ["als.n_factors=3"], 0.3)  # older metadata: no split, the test split
    lines = write_sweep_summary(tmp_path).read_text().splitlines()
    assert (
        "The jobs measured recall@20 on different splits (test, validation): only values of the "
        "same split compare." in lines
    )
    assert [line for line in lines if line.startswith("| ")] == [
        "| job | als.n_factors | recall@20 | split | epochs | train_seconds |",
        "| 1 | 3 | 0.3 | test | 3 | 1.5 |",
        "| 0 | 2 | 0.1 | validation | 3 | 1.5 |",
    ]


def test_one_png_per_swept_parameter_linked_from_the_summary(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    _study_folder(tmp_path)
    text = write_sweep_summary(tmp_path).read_text()
    names = [objective_plot_name(k) for k in ("als.regularization", "als.n_factors", "als.cg")]
    assert names[0] == "objective_vs_als.regularization.png"
    for name in names:
        assert (tmp_path / name).read_bytes().startswith(PNG_SIGNATURE)
        assert f"]({name})" in text
    assert "## Objective against each parameter" in text
    assert not (tmp_path / IMPORTANCE_PLOT).exists() and "importances" not in text
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_importances_are_listed_largest_first_with_a_bar_chart(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    _study_folder(tmp_path)
    importances = {"als.n_factors": 0.1, "als.regularization": 0.7, "als.cg": 0.2}
    lines = write_sweep_summary(tmp_path, importances=importances).read_text().splitlines()
    at = lines.index("## Parameter importances")
    table = [line for line in lines[at:] if line.startswith("| ")]
    assert table == [
        "| parameter | importance |",
        "| als.regularization | 0.7 |",
        "| als.cg | 0.2 |",
        "| als.n_factors | 0.1 |",
    ]
    assert f"![parameter importances]({IMPORTANCE_PLOT})" in lines
    assert (tmp_path / IMPORTANCE_PLOT).read_bytes().startswith(PNG_SIGNATURE)


def test_without_matplotlib_the_summary_has_no_plots(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)  # import fails
    caplog.set_level(logging.INFO, logger="recsys.pipeline")
    _study_folder(tmp_path)
    text = write_sweep_summary(tmp_path, importances={"als.cg": 1.0}).read_text()
    assert not list(tmp_path.glob("*.png")) and "![" not in text
    assert "| als.cg | 1 |" in text  # the importances' table is still written
    assert [r.getMessage() for r in caplog.records if "matplotlib" in r.getMessage()] == [
        "sweep summary: matplotlib is not installed (the dev extra); no plots"
    ]


@pytest.mark.parametrize(
    ("values", "scale"),
    [
        (["0.001", "0.1", "1.0"], "log"),  # positive, spanning a factor of 1000
        (["8", "16", "12"], "linear"),  # a factor of 2
        (["0", "0.5", "100"], "linear"),  # zero has no log
        (["-1", "1e3"], "linear"),
        (["true", "false"], "category"),
        (["cholesky", "cg"], "category"),
        (["1", "nan"], "category"),
        (["[1,2]", "3"], "category"),
    ],
)
def test_parameter_scale(values: list[str], scale: str) -> None:
    assert parameter_scale(values) == scale


def test_plot_names_are_safe_file_names() -> None:
    assert objective_plot_name("+als/weighting.alpha") == "objective_vs__als_weighting.alpha.png"
