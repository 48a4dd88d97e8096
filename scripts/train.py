"""Train an ALS model, evaluate it and export its item embeddings into a Faiss index.

    python scripts/train.py                                   # synthetic "small" preset
    python scripts/train.py als.n_factors=128 index=hnsw      # any key of conf/
    python scripts/train.py +experiment=gowalla               # a saved experiment
    python scripts/train.py -m als.n_factors=32,64 als.regularization=0.01,0.1   # a sweep
    python scripts/train.py resume=true                       # continue the newest unfinished run

Every run writes into its Hydra run folder (``outputs/<date>/<time>``, or
``multirun/<date>/<time>/<job>``): model.npz, items.faiss (+ .json sidecar), train.npz,
metrics.json, metadata.json and TensorBoard logs under tb/. The function returns the objective
(``eval.objective``, e.g. recall@20) so Hydra sweepers can optimise it.

A bad config value stops the script before any data is loaded, with a one-line message naming
the key and what is allowed (exit status 2).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from recsys.config import ConfigError, check_overrides, register_configs

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
CONFIG_NAME = "config"

register_configs()


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path="../conf", config_name=CONFIG_NAME)
def train(cfg: DictConfig) -> float:
    """The Hydra task: one training job in ``HydraConfig.get().runtime.output_dir``."""
    from recsys import pipeline
    from recsys.data.errors import DataError

    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    try:
        result = pipeline.run(cfg, out, overrides=list(hc.overrides.task))
    except (ConfigError, DataError, FloatingPointError) as err:
        _fail(" ".join(str(err).split()))
    multirun = hc.mode == RunMode.MULTIRUN
    logdir = Path(hc.sweep.dir).resolve() if multirun else out / pipeline.TB_DIR
    if result.skipped:
        print(f"[recsys] {out} was already complete; nothing to do")
    print(f"[recsys] {result.objective_name} = {result.objective:.6g} (test)")
    print(
        f"[recsys] artifacts in {out}: "
        + ", ".join(sorted(p.name for p in result.artifacts.values()))
    )
    print(f"[recsys] open TensorBoard: tensorboard --logdir {logdir}")
    return result.objective


def _preflight(argv: list[str]) -> str | None:
    """Check the command line's config before Hydra runs anything (one-line errors)."""
    from hydra._internal.utils import get_args_parser

    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:  # argparse errors: let Hydra report them
        return None
    if args.help or args.hydra_help or args.info or args.shell_completion or args.cfg:
        return None
    if args.config_dir or args.config_path or args.experimental_rerun:
        return None
    return check_overrides(
        args.overrides,
        config_dir=CONF_DIR,
        config_name=args.config_name or CONFIG_NAME,
        multirun=bool(args.multirun),
    )


def main() -> None:
    problem = _preflight(sys.argv[1:])
    if problem:
        _fail(problem)
    train()


if __name__ == "__main__":
    main()
