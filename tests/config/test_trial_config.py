"""The tuning-trial keys: ``eval.test=false`` needs validation data and no refit, in one line."""

from __future__ import annotations

from pathlib import Path

from recsys.config import check_overrides

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_a_trial_needs_a_validation_split() -> None:
    message = check_overrides(["eval.test=false", "split.validation=0"], config_dir=CONF)
    assert message is not None and "\n" not in message
    assert message.startswith("split.validation=0.0: eval.test=false (a tuning trial) evaluates on")
    assert "set split.validation > 0" in message and "data=lightgcn" in message


def test_a_trial_cannot_refit_on_its_validation_data() -> None:
    message = check_overrides(["eval.test=false", "eval.refit=true"], config_dir=CONF)
    assert message is not None and "\n" not in message
    assert message.startswith("eval.refit=true: refit trains on the validation interactions")
    assert message.endswith("set eval.refit=false")


def test_a_trial_may_train_a_fixed_number_of_epochs() -> None:
    assert (
        check_overrides(["eval.test=false", "eval.every=0", "export=false"], config_dir=CONF)
        is None
    )
    assert check_overrides(["eval.test=false", "eval.every=2"], config_dir=CONF) is None
