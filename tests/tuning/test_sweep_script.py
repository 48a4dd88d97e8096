"""``scripts/train.py -m hparams_search=...``: a 3-trial Optuna study on the tiny preset, end to
end in a subprocess, its refit and single test evaluation (``scripts/refit.py``), and the
one-line refusal of a study whose trials would see the test split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TRAIN = [sys.executable, str(REPO / "scripts" / "train.py")]
REFIT = [sys.executable, str(REPO / "scripts" / "refit.py")]
#: the repository on the path: Hydra finds the sweeper under its hydra_plugins/ folder
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
SMALL = [
    "data.preset=tiny", "als.iterations=3", "progress=false",
    "als.n_factors=int(interval(2, 8))", "eval.k=[5,10]", "eval.objective=recall@10",
]  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """A finished 3-trial study (its folder and the command's result), shared by the tests."""
    tmp_path = tmp_path_factory.mktemp("tuning")
    sweep = tmp_path / "study"
    proc = subprocess.run(
        [*TRAIN, "-m", "hparams_search=hkv", *SMALL, "hydra.sweeper.n_trials=3",
         f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return sweep, proc


def test_a_three_trial_study_on_the_tiny_preset(
    study: tuple[Path, subprocess.CompletedProcess],
) -> None:
    sweep, proc = study
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[recsys] recall@10 = " in proc.stdout and "(validation)" in proc.stdout
    assert f"python scripts/refit.py sweep={sweep}" in proc.stdout
    assert {"0", "1", "2", "study.db", "optimization_results.yaml", "summary.md"} <= {
        p.name for p in sweep.iterdir()
    }
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["objective"] == {"name": "recall@10", "split": "validation"}
    assert results["n_trials"] == {"complete": 3, "pruned": 0, "fail": 0, "interrupted": 0}
    assert set(results["best_params"]) == {"als.n_factors", "als.regularization", "als.alpha",
                                           "als.reg_exponent", "als.use_bias"}  # fmt: skip
    assert 2 <= int(results["best_params"]["als.n_factors"]) <= 8  # the command line's range
    assert results["fixed_overrides"][0] == "hparams_search=hkv"
    assert results["best_job"] == str(sweep / str(results["best_trial"]))
    for key in ("study_name", "storage", "direction", "best_value", "best_epoch", "study_seconds"):
        assert results[key] is not None, key
    study = optuna.load_study(study_name="recsys", storage=f"sqlite:///{sweep}/study.db")
    assert max(t.value for t in study.trials) == results["best_value"]
    for job in ("0", "1", "2"):
        folder = sweep / job
        assert not {"model.npz", "train.npz", "items.faiss"} & {p.name for p in folder.iterdir()}
        metrics = json.loads((folder / "metrics.json").read_text())
        assert [k for k in metrics if "@" in k and not k.startswith("validation_")] == []
        meta = json.loads((folder / "metadata.json").read_text())
        assert (
            meta["objective"]["split"] == "validation" and meta["config"]["eval"]["test"] is False
        )
        assert "test_eval_seconds" not in meta["timings"]


def test_the_refit_trains_the_best_trial_on_train_and_validation_and_tests_it_once(
    study: tuple[Path, subprocess.CompletedProcess],
) -> None:
    sweep, proc = study
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    trial = json.loads((sweep / str(results["best_trial"]) / "metadata.json").read_text())
    done = subprocess.run(
        [*REFIT, f"sweep={sweep}"], cwd=sweep, env=ENV, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[recsys] recall@10 = " in done.stdout and "(test)" in done.stdout
    out = sweep / "refit"
    assert {"model.npz", "items.faiss", "metrics.json", "report.md"} <= {
        p.name for p in out.iterdir()
    }
    metrics = json.loads((out / "metrics.json").read_text())
    meta = json.loads((out / "metadata.json").read_text())
    assert "recall@10" in metrics and not any(k.startswith("validation_") for k in metrics)
    assert meta["objective"]["split"] == "test"
    config, tuned = meta["config"], trial["config"]
    # the best trial's settings, trained on train + validation for the epochs it chose
    assert config["split"]["validation"] == 0.0 and tuned["split"]["validation"] > 0
    assert config["als"]["iterations"] == results["best_epoch"] == metrics["epochs"]
    assert config["eval"]["every"] == 0 and config["eval"]["test"] is True
    for key, value in results["best_params"].items():
        section, name = key.split(".")
        assert str(config[section][name]).lower() == value.lower(), key
    trained, fit = meta["data"]["fit"]["nnz"], trial["data"]["fit"]["nnz"]
    assert trained == trial["data"]["train"]["nnz"] > fit
    protocol = meta["protocol"]
    assert protocol["tuned_on"] == "validation" and protocol["test_evaluations"] == 1
    assert protocol["n_trials"] == results["n_trials"]
    assert protocol["study_seconds"] == results["study_seconds"] > 0
    assert protocol["best_params"] == results["best_params"]
    assert protocol["validation"]["fraction"] == tuned["split"]["validation"]
    # the test split is looked at once: a second refit into the same folder is refused
    again = subprocess.run(
        [*REFIT, f"sweep={sweep}"], cwd=sweep, env=ENV, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert again.returncode == 2
    assert "already holds a completed run" in again.stderr
    assert json.loads((out / "metrics.json").read_text()) == metrics


def test_refit_of_a_folder_without_a_study_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*REFIT, f"sweep={tmp_path}"], env=ENV, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and "optimization_results.yaml: not found" in line


def test_a_study_whose_trials_would_see_the_test_split_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*TRAIN, "-m", "hydra/sweeper=optuna", *SMALL, f"hydra.sweep.dir={tmp_path / 's'}"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: hparams_search trials must be tuned on validation data: set eval.test=false (the "
        "hparams_search=<name> options do), never tune on the test split"
    )
    assert not (tmp_path / "s" / "0").exists()


def test_hparams_search_with_an_experiment_tuned_on_test_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*TRAIN, "-m", "hparams_search=ials", "+experiment=gowalla"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: split.validation=0.0: eval.test=false (a tuning trial)"), line
    assert "data=lightgcn data.path=... split=given" in line
