"""``scripts/train.py -m hparams_search=...``: a 3-trial Optuna study on the tiny preset, end to
end in a subprocess, and the one-line refusal of a study whose trials would see the test split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import yaml

REPO = Path(__file__).resolve().parents[2]
TRAIN = [sys.executable, str(REPO / "scripts" / "train.py")]
#: the repository on the path: Hydra finds the sweeper under its hydra_plugins/ folder
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
SMALL = [
    "data.preset=tiny", "als.iterations=3", "progress=false",
    "als.n_factors=int(interval(2, 8))", "eval.k=[5,10]", "eval.objective=recall@10",
]  # fmt: skip


def test_a_three_trial_study_on_the_tiny_preset(tmp_path: Path) -> None:
    sweep = tmp_path / "study"
    proc = subprocess.run(
        [*TRAIN, "-m", "hparams_search=hkv", *SMALL, "hydra.sweeper.n_trials=3",
         f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[recsys] recall@10 = " in proc.stdout and "(validation)" in proc.stdout
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
