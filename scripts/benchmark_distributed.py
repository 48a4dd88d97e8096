"""Distributed training benchmark: 1 process against N `torchrun` processes on the same data.

    python scripts/benchmark_distributed.py --preset ml20m --processes 1 2 --factors 64 \\
        --epochs 3 --threads 2

For every process count it trains the same model (implicit-feedback ALS, exact solver, CPU,
seed 0) on a synthetic preset: one plain ``ALS.fit`` for 1, ``torchrun --nproc_per_node=N`` with
``distributed=True`` otherwise, each rank given threads // N threads so the runs use the same
cores. It prints (and writes to ``<out>/table.md`` and ``<out>/results.json``) one row per run:
seconds per epoch (the solves and the factor exchange), fit seconds, each rank's interactions and
peak resident memory (after loading the data, and at the end of the fit), and the largest
relative difference of the factors from the 1-process run.

The worker mode (``worker``) is what each process runs; it is not meant to be called by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _prepare(preset: str, seed: int, path: Path) -> dict[str, Any]:
    """Write the preset's interaction matrix as a plain .npz (loaded without pickle)."""
    from recsys.data import synthetic_preset

    m = synthetic_preset(preset, seed=seed).matrix.tocsr()
    np.savez(path, indptr=m.indptr, indices=m.indices, data=m.data, shape=np.array(m.shape))
    return {"users": m.shape[0], "items": m.shape[1], "interactions": int(m.nnz)}


def _load(path: Path) -> sp.csr_matrix:
    with np.load(path, allow_pickle=False) as z:
        return sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))


def worker(args: argparse.Namespace) -> None:
    """One process of a run: fit, then write this rank's report (and rank 0's factors)."""
    import torch

    from recsys.als import ALS
    from recsys.als import distributed as rd
    from recsys.memory import current_rss_mb, peak_rss_mb

    torch.set_num_threads(args.threads_per_rank)
    comm = rd.init_process_group(timeout_s=args.timeout) if args.distributed else None
    rank = 0 if comm is None else comm.rank
    matrix = _load(args.data)
    rss_data = current_rss_mb()
    model = ALS(
        n_factors=args.factors, regularization=0.01, alpha=10.0, iterations=args.epochs,
        weighting="hkv", use_bias=False, device="cpu", seed=0, calculate_loss=True,
    )  # fmt: skip
    start = time.perf_counter()
    model.fit(matrix, distributed=comm if comm is not None else False)
    report: dict[str, Any] = {
        "rank": rank,
        "epoch_seconds": [h["seconds"] for h in model.history],
        "fit_seconds": time.perf_counter() - start,
        "loss": [h["loss"] for h in model.history],
        "rss_after_data_mib": rss_data,
        "peak_rss_mib": peak_rss_mb(),
        "user_interactions": int(matrix.nnz),
        "item_interactions": int(matrix.nnz),
    }
    if comm is not None:
        users, items = rd.shard_plan(matrix, comm.world_size)
        (u0, u1), (i0, i1) = users.range(rank), items.range(rank)
        report["user_interactions"] = int(matrix.indptr[u1] - matrix.indptr[u0])
        report["item_interactions"] = int(((matrix.indices >= i0) & (matrix.indices < i1)).sum())
    out = args.out / f"rank{rank}.json"
    out.write_text(json.dumps(report))
    if rank == 0:
        np.savez(
            args.out / "factors.npz",
            users=model.user_factors.numpy(),
            items=model.item_factors.numpy(),
        )
    if comm is not None:
        rd.shutdown()


def _launch(args: argparse.Namespace, data: Path, processes: int, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    threads = max(1, args.threads // processes)
    common = [str(Path(__file__).resolve()), "worker", "--data", str(data), "--out", str(out),
              "--factors", str(args.factors), "--epochs", str(args.epochs),
              "--threads-per-rank", str(threads), "--timeout", str(args.timeout)]  # fmt: skip
    if processes == 1:
        cmd = [sys.executable, *common]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", *common, "--distributed"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{processes}-process run failed:\n{proc.stderr[-4000:]}")


def _relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def summarize(run: Path, processes: int, reference: Path | None) -> dict[str, Any]:
    """One table row from the per-rank reports in `run` (and the 1-process factors)."""
    ranks = [json.loads((run / f"rank{r}.json").read_text()) for r in range(processes)]
    row: dict[str, Any] = {
        "processes": processes,
        "epoch_seconds_median": float(np.median([np.median(r["epoch_seconds"]) for r in ranks])),
        "fit_seconds": max(r["fit_seconds"] for r in ranks),
        "final_loss": ranks[0]["loss"][-1],
        "user_interactions_per_rank": [r["user_interactions"] for r in ranks],
        "item_interactions_per_rank": [r["item_interactions"] for r in ranks],
        "rss_after_data_mib_per_rank": [round(r["rss_after_data_mib"], 1) for r in ranks],
        "peak_rss_mib_per_rank": [round(r["peak_rss_mib"], 1) for r in ranks],
        "max_relative_difference": None,
    }
    if reference is not None:
        with np.load(run / "factors.npz") as mine, np.load(reference) as ref:
            row["max_relative_difference"] = max(
                _relative_difference(mine[k], ref[k]) for k in ("users", "items")
            )
    return row


def table(rows: list[dict[str, Any]], threads: int) -> str:
    head = ("| processes | threads per rank | s/epoch (median) | fit s | interactions per rank "
            "(users' / items') | RSS after loading MiB | peak RSS MiB per rank | max rel. diff "
            "vs 1 process |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    lines = [head]
    for r in rows:
        n = r["processes"]
        users, items = r["user_interactions_per_rank"], r["item_interactions_per_rank"]
        shares = ", ".join(f"{u:,} / {i:,}" for u, i in zip(users, items, strict=True))
        diff = r["max_relative_difference"]
        lines.append(
            f"| {n} | {max(1, threads // n)} | {r['epoch_seconds_median']:.2f} | "
            f"{r['fit_seconds']:.1f} | {shares} | "
            f"{', '.join(f'{v:.0f}' for v in r['rss_after_data_mib_per_rank'])} | "
            f"{', '.join(f'{v:.0f}' for v in r['peak_rss_mib_per_rank'])} | "
            f"{'-' if diff is None else f'{diff:.1e}'} |"
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    if 1 not in args.processes:
        raise SystemExit("--processes must include 1: the other runs are compared with it")
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / f"{args.preset}.npz"
    shape = _prepare(args.preset, args.seed, data)
    print(f"{args.preset}: {shape['users']:,} users x {shape['items']:,} items, "
          f"{shape['interactions']:,} interactions", flush=True)  # fmt: skip
    rows = []
    for n in sorted(set(args.processes)):
        run = args.out / f"n{n}"
        print(f"{n} process(es) ...", flush=True)
        _launch(args, data, n, run)
        reference = None if n == 1 else args.out / "n1" / "factors.npz"
        rows.append(summarize(run, n, reference))
    data.unlink()
    text = table(rows, args.threads)
    doc = {"dataset": {"preset": args.preset, **shape}, "factors": args.factors,
           "epochs": args.epochs, "threads": args.threads, "load_average": os.getloadavg(),
           "rows": rows}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(doc, indent=1))
    (args.out / "table.md").write_text(text + "\n")
    print(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", nargs="?", choices=["run", "worker"], default="run")
    p.add_argument("--preset", default="ml20m", help="synthetic preset (tiny/small/medium/ml20m)")
    p.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="cores for each run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per run")
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "benchmark" / "distributed")
    # worker mode
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--threads-per-rank", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


if __name__ == "__main__":
    ns = parse_args()
    worker(ns) if ns.mode == "worker" else main(ns)
