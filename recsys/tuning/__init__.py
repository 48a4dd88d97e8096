"""Hyperparameter studies over ``scripts/train.py -m`` with Optuna (``hparams_search=<name>``).

Every trial is a tuning run (``eval.test=false``): trained on the training split less its
validation part, early-stopped and scored on the validation part, never on the test split.
:mod:`recsys.tuning.space` turns Hydra's sweep expressions into Optuna distributions,
:mod:`recsys.tuning.study` opens or continues the study and runs the trials, and
:mod:`recsys.tuning.results` writes ``optimization_results.yaml`` into the sweep folder and
:mod:`recsys.tuning.refit` trains the best trial's settings on the whole training split and
evaluates them on test, once (``scripts/refit.py``). Optuna is
imported by these modules only, never by the rest of the package.
"""
