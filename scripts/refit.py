"""Train a finished study's best settings on the whole training split and test them, once.

    python scripts/train.py -m hparams_search=ials data=... hydra.sweeper.n_trials=40
    python scripts/refit.py sweep=multirun/<date>/<time>      # -> multirun/<date>/<time>/refit

The study's trials never saw the test split: each trained on the training split less a
validation carve and was scored on that carve. This takes the best trial (from the study
folder's ``optimization_results.yaml``), trains its whole config again on train + validation for
the epoch count its early stopping chose, evaluates the model on the test split and exports it
like any run (model.npz, items.faiss, metrics.json, report.md, ...). metadata.json's
``protocol`` records what validation chose, the trial budget and the study's wall time.
``out=<folder>`` trains elsewhere than ``<study>/refit``. A complete refit is never trained
again (the test split is looked at once); a killed one continues when run again.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from recsys.pipeline.saved import parse_key_values, script_help

KEYS = ("sweep", "out")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    helptext = script_help(argv, __doc__, KEYS)
    if helptext is not None:
        print(helptext)
        return 0
    from recsys.config import ConfigError
    from recsys.data.errors import DataError
    from recsys.eval import format_metrics
    from recsys.pipeline import ArtifactError
    from recsys.tuning.refit import refit

    try:
        args = {key: values[-1] for key, values in parse_key_values(argv, KEYS).items()}
        if "sweep" not in args:
            raise ValueError("usage: refit.py sweep=<study folder> [out=<run folder>]")
        result = refit(args["sweep"], args.get("out"))
    except (ValueError, ConfigError, DataError, ArtifactError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(f"[recsys] {result.objective_name} = {result.objective:.6g} ({result.objective_split})")
    print(format_metrics(result.metrics, title="[recsys] test metrics (metrics.json):"))
    print(f"[recsys] refit run in {result.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
