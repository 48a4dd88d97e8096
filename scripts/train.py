"""Train an ALS model, evaluate it and export its item embeddings into a Faiss index.

    python scripts/train.py                                   # synthetic "small" preset
    python scripts/train.py als.n_factors=128 index=hnsw      # any key of conf/
    python scripts/train.py +experiment=gowalla               # a saved experiment
    python scripts/train.py -m als.n_factors=32,64 als.regularization=0.01,0.1   # a sweep
    python scripts/train.py resume=true                       # continue the newest unfinished run

Every run writes into its Hydra run folder (``outputs/<date>/<time>``, or
``multirun/<date>/<time>/<job>``): model.npz, items.faiss (+ .json sidecar), train.npz,
metrics.json, metadata.json, report.md with its PNG plots and TensorBoard logs under tb/; the
console shows every test metric (a tuning trial, ``eval.test=false``, shows its validation
metrics and never evaluates on test; ``export=false`` writes no model, train.npz or index).
A sweep's folder also gets summary.md (its jobs, best first).
The function returns the objective (``eval.objective``, e.g. recall@20) so Hydra sweepers can
optimise it. ``resume=true`` with no unfinished run under outputs/ stops before creating a
folder, saying where it looked.

A bad config value stops the script before any data is loaded, with a one-line message naming
the key and what is allowed (exit status 2). A run that fails later (missing data file, full
disk, ...) also ends with one line, which its run folder's ``train.log`` keeps as well.

One model across N processes (users and items sharded over the ranks, Gloo on the CPU, NCCL with
one GPU per rank); rank 0 alone logs, shows progress and writes the run folder:

    torchrun --nproc_per_node=2 scripts/train.py als.distributed=true
    torchrun --nproc_per_node=2 --max-restarts=3 scripts/train.py als.distributed=true \
        run_dir=outputs/big    # a restarted job resumes from the run's last checkpoint

A rank that dies or hangs makes the others stop with an error naming the cause (exit status 1)
after at most ``als.distributed_timeout_s`` seconds.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from recsys.config import ConfigError, check_overrides, latest_unfinished_run, register_configs

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
CONFIG_NAME = "config"
#: where the run folders go (``hydra.run.dir`` of conf/config.yaml) and ``resume=true`` looks
OUTPUTS = "outputs"

register_configs()

#: this process's rank in a torchrun job (0 when run alone)
RANK = int(os.environ.get("RANK", "0"))


#: the scratch run folder Hydra gets on a rank > 0 (removed on every exit path)
_SCRATCH: list[Path] = []
SCRATCH_PREFIX = "recsys-rank"


def _exit(status: int) -> None:
    """Exit; in a distributed job without waiting on the process group (which can block)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        sys.stdout.flush()
        sys.stderr.flush()
        _remove_scratch()  # os._exit skips every finally block
        os._exit(status)
    sys.exit(status)


def _fail(message: str, status: int = 2) -> None:
    if RANK == 0 or status != 2:  # config errors: every rank has the same one, rank 0 says it
        prefix = "error" if RANK == 0 else f"error (rank {RANK})"
        print(f"{prefix}: {message}", file=sys.stderr)
    _exit(status)


def _failure(err: BaseException, out: Path) -> tuple[str, int] | None:
    """The one-line message and exit status for an error of the run in `out` (None: a bug,
    let the traceback show). Nothing of the run folder is removed: its checkpoint stays for a
    resume (``run_dir=<out>``) or for inspection."""
    from recsys.als.distributed import DistributedError
    from recsys.data.errors import DataError
    from recsys.pipeline import ArtifactError

    text = " ".join(str(err).split())
    if isinstance(err, KeyboardInterrupt):
        return (
            f"interrupted; the last checkpoint in {out} is intact: resume with run_dir={out}",
            130,
        )
    if isinstance(err, DistributedError):
        return text, 1
    if isinstance(err, ConfigError | DataError | ArtifactError | FloatingPointError):
        return text, 2
    if isinstance(err, ValueError):  # ALS.fit refusing its input or settings
        return f"training in {out} failed: {text}; its last checkpoint is kept", 1
    if isinstance(err, OSError):
        where = err.filename or out
        if err.errno == errno.ENOSPC:
            return f"no space left on the device writing {where}; free space, then resume", 1
        return f"{err.strerror or text}: {where}", 1
    return None


def _log_to_file(message: str, exc_info: object = None) -> None:
    """`message` (with `exc_info`'s traceback) into the job's log file only (Hydra's
    ``<run folder>/train.log``): the console already has the error, and a run folder that a
    failure left behind then says why it ended instead of holding an empty log."""
    record = logging.LogRecord("recsys", logging.ERROR, __file__, 0, message, None, exc_info)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


@hydra.main(version_base="1.3", config_path="../conf", config_name=CONFIG_NAME)
def train(cfg: DictConfig) -> float:
    """The Hydra task: one training job in ``HydraConfig.get().runtime.output_dir``."""
    from recsys import pipeline
    from recsys.eval import format_metrics

    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    try:
        result = pipeline.run(cfg, out, overrides=list(hc.overrides.task))
    except (Exception, KeyboardInterrupt) as err:
        failure = _failure(err, out)
        if failure is None:
            _log_to_file("the run failed with an unexpected error", sys.exc_info())
            raise
        _log_to_file(failure[0])
        _fail(*failure)
    if not result.primary:
        return result.objective
    multirun = hc.mode == RunMode.MULTIRUN
    logdir = Path(hc.sweep.dir).resolve() if multirun else out / pipeline.TB_DIR
    if result.skipped:
        print(f"[recsys] {out} was already complete; nothing to do")
    split = result.objective_split
    print(f"[recsys] {result.objective_name} = {result.objective:.6g} ({split})")
    print(format_metrics(result.metrics, title=f"[recsys] {split} metrics (metrics.json):"))
    print(
        f"[recsys] artifacts in {out}: "
        + ", ".join(sorted(p.name for p in result.artifacts.values()))
    )
    print(f"[recsys] open TensorBoard: tensorboard --logdir {logdir}")
    if multirun:
        summary = pipeline.write_sweep_summary(logdir)
        print(f"[recsys] sweep summary (jobs so far, best first): {summary}")
    return result.objective


def _blocked_folder(value: str) -> Path | None:
    """The file standing where the folder `value` (a run folder, up to its first ``${``
    interpolation) or one of its parents must be created, or None."""
    path = Path(value.split("${", 1)[0] or ".")
    for folder in (path, *path.parents):
        if folder.exists():
            return None if folder.is_dir() else folder
    return None


def _folder_problem(overrides: list[str], multirun: bool) -> str | None:
    """A run folder that cannot be created (a file in its way), named with its key, or one that
    another run holds (checked before Hydra writes its .hydra/ and log files into it)."""
    from recsys.pipeline import ArtifactError, lock_run_folder

    typed = {}
    for item in overrides:
        key, _, value = item.partition("=")
        if key in ("hydra.run.dir", "hydra.sweep.dir", "run_dir"):
            typed[key] = value
    default = {"hydra.sweep.dir": "multirun"} if multirun else {"hydra.run.dir": OUTPUTS}
    for key, value in {**default, **typed}.items():
        blocker = _blocked_folder(value)
        if blocker is not None:
            return f"{key}={value}: {blocker} is a file, not a folder; choose another {key}"
    for key, value in typed.items():
        folder = Path(value)
        if key != "hydra.sweep.dir" and RANK == 0 and "${" not in value and folder.is_dir():
            try:
                with lock_run_folder(folder):
                    pass
            except ArtifactError as err:
                return str(err)
    return None


def _resume_problem(overrides: list[str], multirun: bool) -> str | None:
    """``resume=true`` without a folder (no ``run_dir=``, no ``hydra.run.dir=``) when no run
    under outputs/ is unfinished: said before Hydra creates a new run folder (which it would
    name instead of where the search looked), with what to do."""
    given = dict(item.partition("=")[::2] for item in overrides)
    if multirun or given.get("resume", "").lower() != "true" or "hydra.run.dir" in given:
        return None
    if given.get("run_dir", "null") not in ("null", "") or latest_unfinished_run(Path(OUTPUTS)):
        return None
    return (
        f"resume=true: no unfinished run under {Path(OUTPUTS).resolve()} (a <date>/<time> folder "
        "holding checkpoints/ and no metrics.json); name the run to continue with "
        "run_dir=<run folder>, or drop resume=true to start a new run"
    )


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
    multirun = bool(args.multirun)
    return (
        _folder_problem(args.overrides, multirun)
        or check_overrides(
            args.overrides,
            config_dir=CONF_DIR,
            config_name=args.config_name or CONFIG_NAME,
            multirun=multirun,
        )
        or _resume_problem(args.overrides, multirun)
    )


def _quiet_rank_overrides(scratch: str) -> list[str]:
    """Hydra settings of ranks > 0: no logging, no .hydra folder, a scratch run folder (the
    pipeline uses rank 0's folder), so only rank 0 writes and prints."""
    return [
        "hydra/job_logging=disabled",
        "hydra/hydra_logging=disabled",
        "hydra.output_subdir=null",
        f"hydra.run.dir={scratch}",
        f"hydra.sweep.dir={scratch}",
    ]


def _make_scratch() -> Path:
    """A scratch folder for this rank > 0, named with its process id; the folders of ranks that
    died without cleaning up (``kill -9``) are removed first."""
    tmp = Path(tempfile.gettempdir())
    for old in tmp.glob(f"{SCRATCH_PREFIX}{RANK}-*-*"):
        pid = old.name.split("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{RANK}-{os.getpid()}-"))
    _SCRATCH.append(scratch)
    return scratch


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def _remove_scratch() -> None:
    while _SCRATCH:
        shutil.rmtree(_SCRATCH.pop(), ignore_errors=True)


def main() -> None:
    problem = _preflight(sys.argv[1:])
    if problem:
        _fail(problem)
    if RANK > 0:
        sys.argv.extend(_quiet_rank_overrides(str(_make_scratch())))
    try:
        train()
    except KeyboardInterrupt:  # before the run started (during the run: `_failure`)
        _fail("interrupted before the run started; nothing was trained", 130)
    finally:
        _remove_scratch()
    from recsys.als.distributed import shutdown

    shutdown()


if __name__ == "__main__":
    main()
