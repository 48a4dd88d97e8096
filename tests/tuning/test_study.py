"""The study loop with a scripted launcher (no training): trials told from their job folders,
failures that do not end the study, the refusal of a test-split objective, and a study
interrupted after one trial that continues where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from recsys.tuning.study import StudyError, StudySettings, run_study


class ScriptedLauncher:
    """Launches no training: job `n` writes the files a trial leaves, with the objective equal
    to the swept ``x``, or does what ``plan[n]`` says (``exit``: the run ended with a one-line
    error; ``interrupt``: Ctrl-C; ``test``: the objective came from the test split; ``nan``)."""

    def __init__(self, sweep_dir: Path, plan: dict[int, str] | None = None) -> None:
        self.sweep_dir, self.plan, self.calls = sweep_dir, plan or {}, []

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        (overrides,) = job_overrides
        number, action = initial_job_idx, self.plan.get(initial_job_idx, "ok")
        self.calls.append((number, list(overrides)))
        if action in ("exit", "interrupt"):
            raise SystemExit(2 if action == "exit" else 130)
        job = self.sweep_dir / str(number)
        job.mkdir(parents=True)
        value = (
            float("nan") if action == "nan" else float(dict(o.split("=") for o in overrides)["x"])
        )
        split = "test" if action == "test" else "validation"
        meta = {"objective": {"name": "recall@20", "split": split, "value": value,
                              "minimize": False},
                "overrides": list(overrides), "best_epoch": 2, "epochs": 4}  # fmt: skip
        (job / "metadata.json").write_text(json.dumps(meta))
        (job / "metrics.json").write_text(json.dumps({"validation_recall@20": value, "epochs": 4}))
        ret = JobReturn()
        ret.hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(job)}}})
        ret.status, ret.return_value = JobStatus.COMPLETED, value
        return [ret]


def _setup(tmp_path: Path, n_trials: int, **settings) -> tuple[StudySettings, object]:
    config = OmegaConf.create({"eval": {"test": False, "objective": "recall@20"},
                               "hydra": {"sweep": {"dir": str(tmp_path)}}})  # fmt: skip
    defaults = {"storage": f"sqlite:///{tmp_path}/study.db", "sampler": "random",
                "params": {"x": "interval(0, 1)"}}  # fmt: skip
    return StudySettings(n_trials=n_trials, **{**defaults, **settings}), config


def _results(tmp_path: Path) -> dict:
    return yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())


def test_a_study_tells_each_trial_and_writes_its_results(tmp_path: Path) -> None:
    settings, config = _setup(tmp_path, 3)
    launcher = ScriptedLauncher(tmp_path)
    study = run_study(settings, config, launcher, ["data.preset=tiny"])
    assert [n for n, _ in launcher.calls] == [0, 1, 2]
    assert all(o[0] == "data.preset=tiny" and o[1].startswith("x=") for _, o in launcher.calls)
    best = max(study.trials, key=lambda t: t.value)
    results = _results(tmp_path)
    assert results["objective"] == {"name": "recall@20", "split": "validation"}
    assert results["direction"] == "maximize" and results["name"] == "optuna"
    assert results["best_value"] == best.value and results["best_trial"] == best.number
    assert results["best_params"] == {"x": repr(best.params["x"])}
    assert results["best_job"] == str(tmp_path / str(best.number)) and results["best_epoch"] == 2
    assert results["n_trials"] == {"complete": 3, "pruned": 0, "fail": 0, "interrupted": 0}
    assert results["fixed_overrides"] == ["data.preset=tiny"] and results["study_seconds"] > 0
    assert best.user_attrs["metrics"] == {"validation_recall@20": best.value}
    assert (tmp_path / "summary.md").is_file()


def test_failed_trials_are_told_fail_and_consecutive_ones_end_the_study(tmp_path: Path) -> None:
    settings, config = _setup(tmp_path, 4, max_consecutive_failures=2)
    run_study(settings, config, ScriptedLauncher(tmp_path, {1: "exit", 3: "nan"}), [])
    states = [
        t.state for t in optuna.load_study(study_name="recsys", storage=settings.storage).trials
    ]
    assert states.count(optuna.trial.TrialState.FAIL) == 2 and len(states) == 4
    assert _results(tmp_path)["n_trials"]["fail"] == 2
    settings, config = _setup(tmp_path / "b", 4, max_consecutive_failures=2)
    with pytest.raises(StudyError, match=r"^2 trials failed in a row \(the last in .*/2\)"):
        run_study(settings, config, ScriptedLauncher(tmp_path / "b", {1: "exit", 2: "exit"}), [])


def test_an_objective_from_the_test_split_ends_the_study(tmp_path: Path) -> None:
    settings, config = _setup(tmp_path, 3)
    with pytest.raises(StudyError, match=r"^hparams_search trials must be tuned on validation"):
        run_study(settings, config, ScriptedLauncher(tmp_path, {0: "test"}), [])
    study = optuna.load_study(study_name="recsys", storage=settings.storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]
    config.eval.test = True  # jobs that would evaluate on test are refused before any runs
    with pytest.raises(StudyError, match=r"set eval\.test=false"):
        run_study(settings, config, ScriptedLauncher(tmp_path), [])


def test_an_interrupted_study_continues_where_it_stopped(tmp_path: Path) -> None:
    settings, config = _setup(tmp_path, 3)
    with pytest.raises(SystemExit):  # Ctrl-C in the second trial
        run_study(settings, config, ScriptedLauncher(tmp_path, {1: "interrupt"}), [])
    assert _results(tmp_path)["n_trials"]["complete"] == 1
    study = optuna.load_study(study_name="recsys", storage=settings.storage)
    killed = study.trials[1]
    assert killed.state == optuna.trial.TrialState.RUNNING
    launcher = ScriptedLauncher(tmp_path)
    study = run_study(settings, config, launcher, [])  # the same command again
    assert [n for n, _ in launcher.calls] == [2, 3]  # new folders, never the killed trial's
    assert study.trials[2].params == killed.params  # its values are tried again first
    assert study.trials[1].state == optuna.trial.TrialState.FAIL
    results = _results(tmp_path)
    assert results["n_trials"] == {"complete": 3, "pruned": 0, "fail": 0, "interrupted": 1}
    sessions = study.user_attrs["session_seconds"]
    assert len(sessions) == 2 and results["study_seconds"] == pytest.approx(sum(sessions), abs=1e-3)
    assert run_study(settings, config, launcher, []) and len(launcher.calls) == 2  # done
