"""``hydra/sweeper=optuna``: Optuna studies over ``scripts/train.py -m`` (see
:mod:`recsys.tuning`)."""
