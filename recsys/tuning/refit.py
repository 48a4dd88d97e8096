"""The last step of a study: train its best trial's settings on the whole training split (train +
validation) for the epochs early stopping chose, and evaluate that model on test, once.

``scripts/refit.py sweep=<study folder>`` calls :func:`refit`. It reads the study's
``optimization_results.yaml`` and the best trial's ``metadata.json`` (its whole resolved config,
so every setting the study fixed carries over, not only the swept ones), turns the trial into a
normal run (``eval.test=true``, no validation carve, ``als.iterations`` = the chosen epochs, model
and index exported) and trains it into ``<study folder>/refit``. The run's ``metadata.json``
records the protocol: what the validation split chose, the trial budget and the study's wall
time. A refit folder that is complete is never trained again (the test split is looked at once);
one that a kill interrupted continues from its checkpoint.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from recsys.pipeline import CHECKPOINT_DIR, METADATA_FILE, ArtifactError, RunResult
from recsys.pipeline.artifacts import read_json
from recsys.tuning.results import RESULTS_FILE

__all__ = ["REFIT_DIR", "read_results", "refit", "refit_config", "refit_protocol"]

#: the refit's run folder inside the study folder
REFIT_DIR = "refit"


def read_results(sweep_dir: Path) -> dict[str, Any]:
    """The study's ``optimization_results.yaml``, checked to name a complete best trial."""
    import yaml

    path = Path(sweep_dir) / RESULTS_FILE
    if not path.is_file():
        raise ArtifactError(
            f"{path}: not found; sweep= must name the folder of a study "
            "(`scripts/train.py -m hparams_search=<name> ...`)"
        )
    try:
        results = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ArtifactError(
            f"{path}: not valid YAML ({err}); rerun the study to rewrite it"
        ) from None
    if not isinstance(results, dict) or results.get("best_job") is None:
        raise ArtifactError(
            f"{path}: the study has no complete trial yet; continue it (the same command with "
            f"hydra.sweep.dir={Path(sweep_dir)}) until one completes"
        )
    split = (results.get("objective") or {}).get("split")
    if split != "validation":
        raise ArtifactError(
            f"{path}: its objective was measured on {split!r}, not on validation; only a study "
            "tuned on validation data can be refitted and tested"
        )
    return results


def refit_config(trial_config: dict[str, Any], epochs: int) -> dict[str, Any]:
    """The best trial's resolved config as a normal run: trained on the whole training split
    (no validation carve, no early stopping) for `epochs`, evaluated on test, exported, with
    the report and full TensorBoard logging; everything else as the trial had it."""
    cfg = copy.deepcopy(trial_config)
    cfg["als"]["iterations"] = int(epochs)
    cfg["split"]["validation"] = 0.0
    cfg["eval"].update(test=True, every=0, refit=False, report=True)
    cfg["tracking"].update(enabled=True, histograms=True, projector=True)
    cfg.update(export=True, resume=False, run_dir=None)
    return cfg


def refit_protocol(results: dict[str, Any], trial_config: dict[str, Any], sweep_dir: Path) -> dict:
    """``metadata.json["protocol"]`` of the refit: which split chose what, the budget, the time."""
    split = trial_config["split"]
    objective = results["objective"]["name"]
    return {
        "tuned_on": "validation",
        "validation": {
            "fraction": split["validation"],
            "seed": split["seed"],
            "carved_from": "the training split (per user)",
        },
        "study": str(Path(sweep_dir).resolve()),
        "study_name": results.get("study_name"),
        "storage": results.get("storage"),
        "direction": results.get("direction"),
        "n_trials": results.get("n_trials"),
        "study_seconds": results.get("study_seconds"),
        "best_trial": results.get("best_trial"),
        "best_job": results.get("best_job"),
        "best_params": results.get("best_params"),
        "best_epoch": results.get("best_epoch"),
        f"validation_{objective}": results.get("best_value"),
        "chosen_on_validation": {
            "params": sorted(results.get("best_params") or {}),
            "epochs": "early stopping" if trial_config["eval"]["every"] else "fixed als.iterations",
        },
        "refit_on": "train + validation (the whole training split)",
        "test_evaluations": 1,
    }


def refit(sweep_dir: str | Path, out: str | Path | None = None) -> RunResult:
    """Refit the study in `sweep_dir` and evaluate it on test once, into `out` (default
    ``<sweep_dir>/refit``). A complete `out` raises ConfigError (never trained over)."""
    from recsys import pipeline

    sweep_dir = Path(sweep_dir)
    results = read_results(sweep_dir)
    job_meta = Path(results["best_job"]) / METADATA_FILE
    if not job_meta.is_file():
        raise ArtifactError(
            f"{job_meta}: the best trial's metadata is missing; was its job folder moved? "
            "Put it back (optimization_results.yaml names it)"
        )
    trial_config = read_json(job_meta)["config"]
    cfg = refit_config(trial_config, results["best_epoch"])
    out = Path(out) if out is not None else sweep_dir / REFIT_DIR
    cfg["resume"] = (out / CHECKPOINT_DIR).is_dir()  # a killed refit continues
    protocol = refit_protocol(results, trial_config, sweep_dir)
    return pipeline.run(cfg, out, protocol=protocol)
