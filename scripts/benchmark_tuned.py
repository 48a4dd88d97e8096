"""Ours against implicit, both tuned by the same protocol and budget, on test once.

Tunes implicit's ``AlternatingLeastSquares`` the way ``scripts/train.py -m hparams_search=...``
tunes ours (the same data and validation split, Optuna TPE with the same seed and number of
trials, recall@20 on validation, epochs by early stopping with patience 2), refits the best
settings on train + validation and evaluates them on the test split once
(:mod:`benchmarks.tuning`). ``--ours`` adds our refit run's test metrics and protocol to the same
table, with the ours / implicit ratios. The folder ``--out`` gets ``study.db`` (the Optuna study:
rerun the same command to continue an interrupted one), ``results.json`` and ``table.md``; a
finished folder is never overwritten.

    python scripts/benchmark_tuned.py --data ml100k --trials 40 --out outputs/tuned/ml100k
    python scripts/benchmark_tuned.py --data gowalla --trials 40 --out outputs/tuned/gowalla \\
        --ours outputs/<date>/<time>            # our refit run of the same budget
    python scripts/benchmark_tuned.py --smoke --out /tmp/tuned-smoke   # seconds, CI

Datasets: ``gowalla`` (LightGCN split in ``<data-root>/gowalla``), ``ml100k`` (u1.base / u1.test,
ratings >= 4 as interactions), ``tiny`` (the synthetic preset).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# benchmarks/ is a folder of the repository, not an installed package: put the repository root
# first on the path (recsys then comes from the same repository)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.tuning import (
    DATASETS,
    Protocol,
    Space,
    compose_config,
    dataset_overrides,
    open_study,
    ours_result,
    results_table,
    study_result,
    tune,
)
from recsys.io import atomic_path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"
#: --smoke: the tiny preset, 2 trials of at most 3 epochs, few factors
SMOKE = {"data": "tiny", "trials": 2, "max_epochs": 3, "factors": (4, 16)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )  # fmt: skip
    p.add_argument("--data", choices=sorted(DATASETS), default="ml100k", help="the dataset")
    p.add_argument(
        "--data-root", type=Path, default=DEFAULT_DATA_ROOT,
        help="folder holding gowalla/ and ml-100k/ (default ../shared/data)",
    )  # fmt: skip
    p.add_argument("--trials", type=int, default=40, help="the study's budget (default 40)")
    p.add_argument("--out", type=Path, required=True, help="the results folder")
    p.add_argument("--ours", type=Path, default=None, help="our refit run folder, for the table")
    p.add_argument("--seed", type=int, default=0, help="the split's and the sampler's seed")
    p.add_argument("--patience", type=int, default=2, help="early stopping (evaluations)")
    p.add_argument("--max-epochs", type=int, default=50, help="the epoch cap of a trial")
    p.add_argument(
        "--eval-users",
        type=int,
        default=None,
        help="score this many sampled validation users after each epoch (eval.max_users; "
        "default all): early stopping and the trial's objective use them",
    )
    p.add_argument("--threads", type=int, default=2, help="implicit's threads (and torch's)")
    p.add_argument(
        "--max-factors", type=int, default=Space().factors[1],
        help="the largest factor count searched (default %(default)s, as ours)",
    )  # fmt: skip
    p.add_argument("--smoke", action="store_true", help="a tiny study in seconds (tests, CI)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out: Path = args.out
    if (out / "results.json").exists():
        print(f"error: {out} holds finished results; give another --out", file=sys.stderr)
        return 2
    if args.smoke:
        args.data, args.trials, args.max_epochs = (
            SMOKE["data"],
            SMOKE["trials"],
            SMOKE["max_epochs"],
        )
        space = Space(factors=SMOKE["factors"])
    else:
        space = Space(factors=(Space().factors[0], args.max_factors))
    protocol = Protocol(args.trials, args.max_epochs, args.threads, space)
    try:
        return _run(args, protocol)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, protocol: Protocol) -> int:
    import torch

    from recsys.pipeline.data import prepare_data

    torch.set_num_threads(protocol.threads)
    ours = None if args.ours is None else ours_result(args.ours)
    overrides = dataset_overrides(args.data, args.data_root, seed=args.seed, patience=args.patience)
    if args.eval_users is not None:
        overrides.append(f"eval.max_users={args.eval_users}")
    conf = compose_config(overrides)
    data = prepare_data(conf)
    study = open_study(args.out, conf, protocol, args.data)
    seconds = tune(study, conf, data, protocol)
    implicit = study_result(study, conf, data, protocol, seconds)
    results = {
        "dataset": args.data,
        "overrides": overrides,
        "settings": study.user_attrs["settings"],
        "implicit": implicit,
        "ours": ours,
    }
    table = results_table(implicit, ours)
    with atomic_path(args.out / "table.md") as tmp:
        tmp.write_text(table + "\n")
    with atomic_path(args.out / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
