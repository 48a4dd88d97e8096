"""The run report (report.md and its PNG plots) and the metrics at the candidate depth."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from recsys import pipeline
from recsys.pipeline.artifacts import PLOT_FILES

from .tiny import CONF, TINY, compose_cfg, script_validation

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _tables(markdown: str) -> list[list[list[str]]]:
    """Every markdown table of `markdown`: its rows (header first, separator dropped) as cells."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            if not line.startswith("|---"):
                current.append([c.strip() for c in line.strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables


def test_report_table_holds_the_numbers_of_metrics_json(tiny_run: pipeline.RunResult) -> None:
    out = tiny_run.output_dir
    metrics = json.loads((out / "metrics.json").read_text())
    text = (out / "report.md").read_text()
    by_k, entries, data = _tables(text)[:3]
    header = by_k[0]
    assert header[0] == "metric" and header[1:] == ["@5", "@10"]
    seen = set()
    for name, *cells in by_k[1:]:
        for at, cell in zip(header[1:], cells, strict=True):
            key = f"{name}{at}"
            if cell == "-":
                assert key not in metrics
            else:
                assert float(cell) == pytest.approx(metrics[key], abs=5e-5), key
                seen.add(key)
    for key, value in entries[1:]:
        assert float(value) == pytest.approx(metrics[key], abs=5e-5), key
        seen.add(key)
    assert seen == set(metrics)  # every number of metrics.json, and nothing else
    meta = json.loads((out / "metadata.json").read_text())
    parts = {row[0]: row[1:] for row in data[1:]}
    for part in ("full", "train", "test", "fit", "validation"):
        stats = meta["data"][part]
        assert parts[part][:3] == [str(stats["n_users"]), str(stats["n_items"]), str(stats["nnz"])]
    assert f"- best epoch: {meta['best_epoch']} (validation recall@10 = " in text
    assert "| als.n_factors | `4` |" in text  # the settings
    assert "early stopping fired" not in text


def test_report_plots_are_pngs_listed_in_the_report(tiny_run: pipeline.RunResult) -> None:
    out = tiny_run.output_dir
    text = (out / "report.md").read_text()
    meta = json.loads((out / "metadata.json").read_text())
    for name, file in PLOT_FILES.items():
        assert (out / file).read_bytes().startswith(PNG_MAGIC), file
        assert f"![{name}]({file})" in text
        assert meta["artifacts"][name] == file
    assert meta["artifacts"]["report"] == "report.md"
    assert tiny_run.artifacts["report"] == out / "report.md"


def test_metrics_at_the_candidate_depth_by_default(tmp_path: Path) -> None:
    """The default eval.k reaches 500 (here past the 200-item catalog: every unseen item is
    listed, so each test item is found); validation ranks only to the objective's depth."""
    tiny = [o for o in TINY if not o.startswith("eval.")]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*tiny, "tracking.projector=false"])
    assert list(cfg.eval.k) == [10, 20, 100, 500] and cfg.eval.objective == "recall@20"
    result = pipeline.run(cfg, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("recall@100", "recall@500", "coverage@500", "diversity@500"):
        assert key in metrics, key
    assert metrics["recall@500"] == 1.0 and metrics["coverage@500"] == 1.0
    assert result.objective == metrics["recall@20"]
    meta = json.loads((tmp_path / "run" / "metadata.json").read_text())
    assert meta["evaluations"]
    for evaluation in meta["evaluations"]:
        assert {k for k in evaluation if "@" in k} == {"recall@10", "recall@20"}
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    assert events.Scalars("test/recall@500")[0].value == pytest.approx(metrics["recall@500"])
    assert "| recall |" in (tmp_path / "run" / "report.md").read_text()


def test_early_stopping_is_logged_and_reported(tmp_path: Path, monkeypatch, caplog) -> None:
    script_validation(monkeypatch, [0.3, 0.2, 0.1])
    caplog.set_level(logging.INFO, logger="recsys.pipeline")
    cfg = compose_cfg("als.iterations=8", "eval.patience=2", "checkpoint.every=0")
    pipeline.run(cfg, tmp_path / "run")
    lines = [r.getMessage() for r in caplog.records if "early stopping" in r.getMessage()]
    assert lines == [
        "early stopping: recall@10 did not improve for 2 evaluations; stopped after epoch 3 of "
        "8 and kept epoch 1 (validation recall@10 = 0.3)"
    ]
    meta = json.loads((tmp_path / "run" / "metadata.json").read_text())
    assert meta["stopped_early"] is True and meta["best_epoch"] == 1
    text = (tmp_path / "run" / "report.md").read_text()
    assert "- early stopping fired after epoch 3" in text
    assert "- best epoch: 1 (validation recall@10 = 0.3000), kept" in text


def test_without_matplotlib_the_report_has_no_plots(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)  # import fails
    caplog.set_level(logging.INFO, logger="recsys.pipeline")
    pipeline.run(compose_cfg("tracking.enabled=false"), tmp_path / "run")
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert "report.md" in names and not names & set(PLOT_FILES.values())
    assert "## Plots" not in (tmp_path / "run" / "report.md").read_text()
    assert [r.getMessage() for r in caplog.records if "matplotlib" in r.getMessage()] == [
        "report: matplotlib is not installed (the dev extra); no plots"
    ]


def test_eval_report_false_writes_no_report(tmp_path: Path) -> None:
    result = pipeline.run(compose_cfg("eval.report=false", "tracking.enabled=false"), tmp_path)
    assert not (tmp_path / "report.md").exists() and "report" not in result.artifacts
    assert not list(tmp_path.glob("*.png"))
