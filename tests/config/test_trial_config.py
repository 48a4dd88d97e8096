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


def test_hparams_search_options_compose_trials_and_a_typo_gets_a_guess() -> None:
    assert check_overrides(["hparams_search=ials"], config_dir=CONF, multirun=True) is None
    message = check_overrides(["hparams_search=ialss"], config_dir=CONF, multirun=True)
    assert message == (
        "hparams_search=ialss: unknown option; must be one of explicit, hkv, ials; did you mean "
        "ials?"
    )


def test_hparams_search_with_an_experiment_chosen_on_test_is_refused() -> None:
    message = check_overrides(
        ["hparams_search=ials", "+experiment=gowalla"], config_dir=CONF, multirun=True
    )
    assert message is not None and message.startswith("split.validation=0.0: eval.test=false")


def test_each_hparams_search_option_is_a_trial_on_validation_without_export() -> None:
    from hydra import compose, initialize_config_dir

    from recsys.config import validate

    for name, weighting in (("hkv", "hkv"), ("ials", "ials"), ("explicit", "explicit")):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=[f"hparams_search={name}"], return_hydra_config=True)
        conf = validate({k: v for k, v in cfg.items() if k != "hydra"})
        assert conf.eval.test is False and conf.export is False and conf.eval.refit is False
        assert (
            conf.split.validation > 0 and conf.eval.every >= 1 and conf.als.weighting == weighting
        )
        sweeper = cfg.hydra.sweeper
        assert sweeper._target_.startswith("hydra_plugins.recsys_optuna_sweeper.")
        assert "als.n_factors" in sweeper.params and sweeper.storage.endswith("/study.db")
