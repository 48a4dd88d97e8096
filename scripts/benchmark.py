"""Benchmark our exact ALS against `implicit`'s ALS and LensKit's: speed, memory and quality.

One command, three modes (any combination, ``--mode table ttq scaling``):

* ``table`` (default): for every dataset x factors x model, seconds per epoch (median), total fit
  seconds, peak memory, Recall@20 and NDCG@20 (full ranking, training items excluded, the same
  ``recsys.eval`` code for every library) and the time ratios ours / implicit of this run (and
  ours / LensKit with ``--models ... lenskit-hkv``: LensKit's exact ImplicitMFScorer, skipped with
  a note when lenskit is not installed or on CUDA).
  ``--rounds N`` repeats every group with the models taking turns and adds the median and range of
  the per-round ratios, the figure to quote from a shared, noisy machine.
* ``ttq``: time to quality: wall clock (training plus the evaluation after every epoch that early
  stopping needs) until Recall@20 reaches ``--target`` (default 0.1791 on Gowalla).
* ``scaling``: seconds per epoch against nnz (``--scaling-multiples`` of a synthetic base) and
  against factors.

Every run happens in a fresh Python process (so its peak resident memory is its own) with the
same thread count for both libraries. ``--device cuda`` runs the same on CUDA (implicit's GPU ALS
when its CUDA build is present, else ours alone) and names the card. Results go to ``--out``:
``results.md`` (also printed), ``results.json`` (rewritten after every run) and PNG plots.

    python scripts/benchmark.py --smoke                              # seconds, CI
    python scripts/benchmark.py --datasets gowalla --factors 64 128 256 512
    python scripts/benchmark.py --datasets gowalla --factors 128 512 --rounds 3 --iterations 3
    python scripts/benchmark.py --datasets ml-100k --factors 32 64 128
    python scripts/benchmark.py --mode ttq --ttq-factors 256 512
    python scripts/benchmark.py --mode scaling --scaling-base synthetic:medium
    python scripts/benchmark.py --device cuda --datasets synthetic:ml20m --factors 64 128 256

Datasets: ``gowalla`` (LightGCN split, ``../shared/data/gowalla``), ``ml-100k`` (u1.base / u1.test,
every rating an interaction), ``synthetic:<preset>[*<n>]`` (``tiny``, ``small``, ``medium``,
``ml20m``; ``*n`` multiplies users and interactions; a random 80/20 split per user).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

# benchmarks/ is a folder of the repository, not an installed package: put the repository root
# first on the path (recsys then comes from the same repository, as in the worker processes)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.datasets import dataset_defaults, parse_dataset, prepare_dataset
from benchmarks.isolation import run_in_process, run_isolated
from benchmarks.machine import machine_info, machine_markdown
from benchmarks.plots import write_plots
from benchmarks.results import add_ratios, add_ttq_ratios
from benchmarks.runs import EXACT_PEER_MODEL, MODELS, REFERENCE_MODEL, RunSpec, missing_library
from benchmarks.tables import comparison_table, rounds_table, scaling_table, ttq_table

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"
MODES = ("table", "ttq", "scaling")


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--mode", nargs="+", choices=MODES, default=["table"], help="what to run")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="every mode end to end on a tiny synthetic dataset, in seconds (CI)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default outputs/benchmark/<date>-<time>)",
    )
    p.add_argument(
        "--data-root",
        type=Path,
        default=DEFAULT_DATA_ROOT,
        help="folder holding gowalla/ and ml-100k/ (default ../shared/data)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=REPO / ".cache" / "benchmark",
        help="prepared train/test .npz files are cached here",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:n] (the GPU mode)")
    p.add_argument(
        "--threads",
        type=int,
        default=_usable_cores(),
        help="threads for both libraries (default: all usable cores)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per run")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the successful runs already in <out>/results.json whose settings match, "
        "run only the others (e.g. after an interrupted benchmark)",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run in this process instead of a fresh one per run (peak memory is then "
        "the process's, not the run's)",
    )
    _add_table_arguments(p)
    _add_model_arguments(p)
    _add_ttq_arguments(p)
    _add_scaling_arguments(p)
    return p


def _add_table_arguments(p: argparse.ArgumentParser) -> None:
    """The table mode: datasets, models, factors, epochs, rounds."""
    g = p.add_argument_group("table")
    g.add_argument("--datasets", nargs="+", default=["gowalla"])
    g.add_argument(
        "--models",
        nargs="+",
        choices=sorted(MODELS),
        default=["ours-hkv", "ours-ials", "implicit-cg"],
    )
    g.add_argument("--factors", nargs="+", type=int, default=[64, 128, 256])
    g.add_argument("--iterations", type=int, default=15)
    g.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every (dataset, factors) group this many times, the models taking turns "
        "(A B C A B C ...), and report the median and range of s/epoch and of the per-round "
        "ratios: on a shared machine, runs next to each other see the same load. Only the "
        "first round evaluates (the factors do not change between rounds)",
    )


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Our solver and precision, and the hyperparameters of both objectives."""
    g = p.add_argument_group("our model")
    g.add_argument(
        "--solver",
        choices=["cholesky", "cg"],
        default="cholesky",
        help="our solver: cholesky = exact (default), cg = conjugate gradient",
    )
    g.add_argument(
        "--cg-steps",
        type=int,
        default=3,
        help="CG steps (ours with --solver cg and implicit-cg; implicit's default is 3)",
    )
    g.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    g.add_argument("--memory-budget-mb", type=float, default=1024.0)
    g = p.add_argument_group("hyperparameters (default: per dataset, printed with the results)")
    g.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="HKV confidence slope: c = 1 + alpha * r (ours-hkv and implicit)",
    )
    g.add_argument(
        "--regularization", type=float, default=None, help="HKV lambda (ours-hkv and implicit)"
    )
    g.add_argument("--ials-regularization", type=float, default=None, help="iALS lambda")
    g.add_argument("--alpha0", type=float, default=None, help="iALS unobserved weight")
    g.add_argument("--reg-exponent", type=float, default=None, help="iALS nu")


def _add_ttq_arguments(p: argparse.ArgumentParser) -> None:
    """The time-to-quality mode: target, datasets, models, factors, patience."""
    g = p.add_argument_group("time to quality")
    g.add_argument("--target", type=float, default=0.1791, help="Recall@20 to reach")
    g.add_argument("--ttq-datasets", nargs="+", default=None, help="default: gowalla")
    g.add_argument(
        "--ttq-models", nargs="+", choices=sorted(MODELS), default=["ours-ials", "implicit-cg"]
    )
    g.add_argument("--ttq-factors", nargs="+", type=int, default=None, help="default: --factors")
    g.add_argument("--ttq-iterations", type=int, default=15, help="most epochs to try")
    g.add_argument(
        "--ttq-patience",
        type=int,
        default=2,
        help="give up after this many epochs without a better Recall@20 (0: never)",
    )


def _add_scaling_arguments(p: argparse.ArgumentParser) -> None:
    """The scaling mode: the nnz sweep and the factors sweep."""
    g = p.add_argument_group("scaling")
    g.add_argument("--scaling-base", default="synthetic:small")
    g.add_argument("--scaling-multiples", nargs="+", type=int, default=[1, 4, 16])
    g.add_argument("--scaling-factors", nargs="+", type=int, default=[32, 64, 128, 256, 512])
    g.add_argument("--scaling-fixed-factors", type=int, default=64, help="factors of the nnz sweep")
    g.add_argument(
        "--scaling-models", nargs="+", choices=sorted(MODELS), default=["ours-hkv", "implicit-cg"]
    )
    g.add_argument("--scaling-iterations", type=int, default=3)


def apply_smoke(args: argparse.Namespace) -> None:
    """Tiny settings that exercise every mode and output in a few seconds."""
    args.mode = list(MODES)
    args.datasets = ["synthetic:tiny"]
    args.factors = [4, 8]
    args.iterations = 2
    args.rounds = 2
    args.ttq_datasets = ["synthetic:tiny"]
    args.ttq_factors = [8]
    args.ttq_iterations = 3
    args.target = 0.05
    args.scaling_base = "synthetic:tiny"
    args.scaling_multiples = [1, 2]
    args.scaling_factors = [4, 8]
    args.scaling_fixed_factors = 4
    args.scaling_iterations = 2
    args.threads = 1  # a busy machine turns multi-threaded tiny runs into spin-waits
    args.in_process = True
    if args.out is None:
        args.out = REPO / "outputs" / "benchmark-smoke"


def hyperparameters(dataset: str, args: argparse.Namespace) -> dict[str, float]:
    """The dataset's defaults with the command line's overrides."""
    h = asdict(dataset_defaults(dataset))
    for key, arg in (
        ("hkv_alpha", "alpha"),
        ("hkv_regularization", "regularization"),
        ("ials_regularization", "ials_regularization"),
        ("ials_alpha0", "alpha0"),
        ("ials_reg_exponent", "reg_exponent"),
    ):
        if getattr(args, arg) is not None:
            h[key] = float(getattr(args, arg))
    return h


class Bench:
    """Prepares datasets once, runs specs one after another and keeps results.json current."""

    def __init__(self, args: argparse.Namespace, machine: dict[str, Any]) -> None:
        self.args = args
        self.out: Path = args.out
        self.machine = machine
        self.meta: dict[str, dict[str, Any]] = {}
        self.results: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
        self.skipped: list[str] = []
        self.implicit_gpu = bool(machine.get("implicit_gpu"))
        self.earlier = _earlier_results(self.out / "results.json") if args.resume else {}

    def dataset(self, name: str) -> dict[str, Any]:
        if name not in self.meta:
            t = time.perf_counter()
            _log(f"preparing {name} ...")
            self.meta[name] = prepare_dataset(
                name, self.args.data_root, self.args.cache_dir, seed=self.args.seed
            )
            m = self.meta[name]
            _log(
                f"  {m['n_users']} users x {m['n_items']} items, train nnz {m['train_nnz']}, "
                f"test nnz {m['test_nnz']} ({time.perf_counter() - t:.1f} s)"
            )
        return self.meta[name]

    def spec(self, dataset: str, model: str, factors: int, iterations: int, **kw: Any) -> RunSpec:
        a = self.args
        return RunSpec(
            dataset=self.dataset(dataset),
            model=model,
            factors=factors,
            iterations=iterations,
            threads=a.threads,
            hyper=hyperparameters(dataset, a),
            device=a.device,
            solver=a.solver,
            cg_steps=a.cg_steps,
            dtype=a.dtype,
            memory_budget_mb=a.memory_budget_mb,
            seed=a.seed,
            **kw,
        )

    def runnable(self, model: str) -> bool:
        """False, with a note, for a model whose library is not installed, for LensKit on CUDA
        and, on CUDA, for implicit without its GPU build (where only its CG solver runs)."""
        why = missing_library(model)
        cuda = self.args.device.startswith("cuda")
        if why is None and cuda and MODELS[model][0] == "lenskit":
            why = f"{model} skipped: LensKit's ImplicitMFScorer trains on the CPU only"
        elif why is None and cuda and model.startswith("implicit"):
            if not self.implicit_gpu:
                why = "implicit has no CUDA build here: ours alone on the GPU"
            elif model != "implicit-cg":
                why = f"{model} has no GPU version in implicit"
        if why and why not in self.skipped:
            self.skipped.append(why)
            _log(f"skipping: {why}")
        return why is None

    def run(self, mode: str, specs: Sequence[RunSpec]) -> None:
        for j, spec in enumerate(specs, 1):
            _log(
                f"[{mode} {j}/{len(specs)}] {spec.dataset['name']} {spec.model} "
                f"f={spec.factors} it={spec.iterations} {spec.device} ..."
            )
            earlier = self.earlier.get((mode, _spec_key(spec)))
            if earlier is not None:
                _log(f"  kept from the earlier results.json: {_summary(earlier)}")
                self.results[mode].append({**earlier, "kept_from_earlier_run": True})
                continue
            t = time.perf_counter()
            if self.args.in_process:
                result = run_in_process(spec)
            else:
                result = run_isolated(spec, timeout=self.args.timeout, workdir=self.out / "work")
            _log(f"  {_summary(result)} ({time.perf_counter() - t:.1f} s)")
            self.results[mode].append(result)
            self.save()

    def save(self) -> None:
        for mode in ("table", "scaling"):
            add_ratios(self.results[mode])
        add_ttq_ratios(self.results["ttq"])
        doc = {
            "command": " ".join(shlex.quote(x) for x in sys.argv),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(self.args).items()},
            "machine": self.machine,
            "datasets": self.meta,
            "hyperparameters": {d: hyperparameters(d, self.args) for d in self.meta},
            "skipped": self.skipped,
            **self.results,
        }
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1, default=str))
        tmp.replace(self.out / "results.json")


def _spec_key(spec: RunSpec | Mapping[str, Any]) -> str:
    """A run's settings as text, its dataset named by the prepared files (not by timings)."""
    d = dict(asdict(spec) if isinstance(spec, RunSpec) else spec)
    d["dataset"] = [d["dataset"]["train"], d["dataset"]["test"]]
    return json.dumps(d, sort_keys=True, default=str)


def _earlier_results(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The successful runs of an earlier results.json, by (mode, settings)."""
    if not path.is_file():
        return {}
    doc = json.loads(path.read_text())
    return {
        (mode, _spec_key(r["spec"])): r
        for mode in MODES
        for r in doc.get(mode, [])
        if not r.get("error") and "spec" in r
    }


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _summary(r: dict[str, Any]) -> str:
    if r.get("error"):
        return f"FAILED: {r['error']}"
    parts = [
        f"{r['seconds_per_epoch']:.3f} s/epoch",
        f"fit {r['fit_seconds']:.2f} s",
        f"peak {r['peak_rss_mb']:.0f} MiB",
    ]
    if r.get("recall@20") is not None:
        parts.append(f"recall@20 {r['recall@20']:.4f}")
    if "seconds_to_target" in r:
        s = r["seconds_to_target"]
        parts.append("target not reached" if s is None else f"target at {s:.2f} s")
    return ", ".join(parts)


def report(bench: Bench) -> str:
    """The markdown document: machine, settings, tables, plots."""
    a = bench.args
    dev = a.device if not bench.machine.get("gpu") else f"{a.device} ({bench.machine['gpu']})"
    lines = [
        "# recsys ALS vs implicit ALS" + (" and LensKit" if _ran(bench, "lenskit") else ""),
        "",
        f"Command: `{' '.join(shlex.quote(x) for x in sys.argv)}`",
        "",
        machine_markdown(bench.machine),
        f"- device: {dev}; our solver: {a.solver}"
        + (f" ({a.cg_steps} steps)" if a.solver == "cg" else " (exact)")
        + f", {a.dtype}; implicit-cg: {a.cg_steps} CG steps",
        f"- runs: {'in this process' if a.in_process else 'one fresh process per run'}",
        "",
        "Hyperparameters per dataset (`hkv_*`: ours-hkv, implicit and LensKit, the same loss: "
        "confidence 1 + alpha * r, constant lambda, no biases; implicit is given the matrix "
        "1 + alpha * r with its alpha = 1; LensKit's ImplicitMFScorer gets the interactions as "
        "ratings with use_ratings=True, weight = hkv_alpha (its confidence 1 + weight * r), "
        "regularization = hkv_regularization for users and items, embedding_size = factors, "
        "epochs = iterations, its initial factors its own; `ials_*`: ours-ials):",
        "",
    ]
    for d in bench.meta:
        h = hyperparameters(d, a)
        lines.append(f"- {d}: " + ", ".join(f"{k}={v:g}" for k, v in h.items()))
    lines += ["", "Datasets (binary implicit feedback):", ""]
    for d, m in bench.meta.items():
        lines.append(
            f"- {d}: {m['n_users']} users x {m['n_items']} items, train nnz "
            f"{m['train_nnz']}, test nnz {m['test_nnz']} ({m['test_users']} test users)"
        )
    lines += [
        "",
        "s/epoch: median per-epoch solve time (ours: `model.history`, which excludes our exact "
        "loss; implicit: its fit callback's per-epoch time; LensKit: its trainer's train_epoch). "
        "fit s: wall clock of `fit` (ours includes computing the exact loss every epoch; LensKit "
        "building its training matrices and the epochs). Peak RSS: the high-water mark (VmHWM) "
        "of the run's process at the end of fit (Python, torch and the data included; the final "
        f"evaluation is not). Ratios: ours / {REFERENCE_MODEL} (and ours / "
        f"{EXACT_PEER_MODEL}, the exact peer, when it ran) at the same dataset, device, factors "
        "and iterations, measured in this run.",
    ]
    for why in bench.skipped:
        lines.append(f"\nSkipped: {why}.")
    kept = sum(r.get("kept_from_earlier_run", False) for rs in bench.results.values() for r in rs)
    if kept:
        lines.append(
            f"\n{kept} of the runs below were kept from an earlier invocation into the same "
            "folder (`--resume`): same settings, measured then (their `results.json` entries say "
            "`kept_from_earlier_run`)."
        )
    if bench.results["table"]:
        lines += ["", "## Speed and quality", "", comparison_table(bench.results["table"])]
    if a.rounds > 1 and bench.results["table"]:
        lines += [
            "",
            f"## Speed over {a.rounds} interleaved rounds",
            "",
            "The models of every (dataset, factors) group took turns, round after round; each "
            "ratio divides two runs of the same round. Recall and NDCG come from the first round "
            "(the table above lists every run).",
            "",
            rounds_table(bench.results["table"]),
        ]
    if bench.results["ttq"]:
        lines += [
            "",
            f"## Time to Recall@20 >= {a.target}",
            "",
            "Wall clock from the start of `fit` until the evaluation after an epoch first reaches "
            "the target (training, our per-epoch loss and every evaluation included). Each epoch "
            "is evaluated on the test split, where the target was measured; "
            f"ours/implicit divides by the fastest {REFERENCE_MODEL} time in this run.",
            "",
            ttq_table(bench.results["ttq"]),
        ]
    if bench.results["scaling"]:
        lines += ["", "## Scaling", "", scaling_table(bench.results["scaling"], bench.meta)]
    return "\n".join(lines) + "\n"


def _ran(bench: Bench, library: str) -> bool:
    """Whether a run of ``library`` is among the results."""
    return any(r["library"] == library for rs in bench.results.values() for r in rs)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.smoke:
        apply_smoke(args)
    if args.out is None:
        args.out = REPO / "outputs" / "benchmark" / time.strftime("%Y-%m-%d-%H%M%S")
    _validate(args)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = machine_info(args.threads, args.device)
    bench = Bench(args, machine)
    _log(machine_markdown(machine))
    if "table" in args.mode:
        bench.run("table", _table_specs(bench, args))
    if "ttq" in args.mode:
        bench.run("ttq", _ttq_specs(bench, args))
    if "scaling" in args.mode:
        bench.run("scaling", _scaling_specs(bench, args))
    return _write_results(bench, args)


def _validate(args: argparse.Namespace) -> None:
    """Fail fast on a typo or an impossible setting, before hours of running."""
    for name in [*args.datasets, *(args.ttq_datasets or []), args.scaling_base]:
        try:
            parse_dataset(name)
        except ValueError as err:
            raise SystemExit(str(err)) from None
    if args.threads < 1:
        raise SystemExit("--threads must be >= 1")
    if args.rounds < 1:
        raise SystemExit("--rounds must be >= 1")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(f"--device {args.device}: CUDA is not available on this machine")


def _table_specs(bench: Bench, args: argparse.Namespace) -> list[RunSpec]:
    """Every dataset x factors x round x model; the models take turns within a round."""
    return [
        bench.spec(
            d,
            m,
            f,
            args.iterations,
            evaluate=r == 1,
            tags={"round": r} if args.rounds > 1 else {},
        )
        for d in args.datasets
        for f in args.factors
        for r in range(1, args.rounds + 1)
        for m in args.models
        if bench.runnable(m)
    ]


def _ttq_specs(bench: Bench, args: argparse.Namespace) -> list[RunSpec]:
    """Every time-to-quality dataset x factors x model."""
    datasets = args.ttq_datasets or ["gowalla"]
    factors = args.ttq_factors or args.factors
    patience = args.ttq_patience or None
    return [
        bench.spec(d, m, f, args.ttq_iterations, target=args.target, patience=patience)
        for d in datasets
        for f in factors
        for m in args.ttq_models
        if bench.runnable(m)
    ]


def _scaling_specs(bench: Bench, args: argparse.Namespace) -> list[RunSpec]:
    """The nnz sweep (multiples of the synthetic base) and then the factors sweep."""
    base = parse_dataset(args.scaling_base)
    if base["family"] != "synthetic":
        raise SystemExit("--scaling-base must be a synthetic dataset (synthetic:<preset>)")
    stem = f"synthetic:{base['preset']}"
    specs = []
    for mult in args.scaling_multiples:
        name = stem if mult * base["multiple"] == 1 else f"{stem}*{mult * base['multiple']}"
        specs += [
            bench.spec(
                name,
                m,
                args.scaling_fixed_factors,
                args.scaling_iterations,
                evaluate=False,
                tags={"sweep": "nnz", "multiple": mult},
            )
            for m in args.scaling_models
            if bench.runnable(m)
        ]
    specs += [
        bench.spec(
            args.scaling_base,
            m,
            f,
            args.scaling_iterations,
            evaluate=False,
            tags={"sweep": "factors"},
        )
        for f in args.scaling_factors
        for m in args.scaling_models
        if bench.runnable(m)
    ]
    return specs


def _write_results(bench: Bench, args: argparse.Namespace) -> int:
    """results.json, the plots and results.md (also printed); 1 when a run failed, else 0."""
    bench.save()
    suffix = "" if args.device == "cpu" else "_" + args.device.replace(":", "")
    plots = write_plots(
        args.out,
        bench.results["table"],
        bench.results["ttq"],
        bench.results["scaling"],
        bench.meta,
        suffix=suffix,
    )
    text = report(bench)
    if plots:
        text += "\n## Plots\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n"
    (args.out / "results.md").write_text(text)
    print(text)
    _log(f"wrote {args.out / 'results.md'}, results.json and {len(plots)} plots")
    failed = sum(1 for rs in bench.results.values() for r in rs if r.get("error"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
