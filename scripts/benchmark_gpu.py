"""The whole retrieval stage on one GPU against the CPU, measured in one process.

Three measurements, written to ``OUT/gpu_stages.json`` (``--plot`` turns one into PNGs later,
on a machine with matplotlib):

* ``quality``: time to quality on Gowalla (the LightGCN split) with the settings of
  ``conf/experiment/gowalla.yaml`` (iALS with biases, 1024 factors): Recall@20 after every epoch
  against the cumulative training seconds, on the GPU and on the CPU (``--cpu-threads``). The
  full-ranking evaluation of all test users is timed separately, twice on each device (the second
  call is the steady state: the first pays for CUDA kernels' first launch).
* ``candidates``: every user's top-``k`` (default 500) on the MovieLens-20M-scale synthetic preset
  through ``ALS.recommend`` (exact blocked top-k in torch, seen items excluded), in users per second
  on the GPU (all users) and on the CPU (the first ``--cpu-users``).

    python scripts/benchmark_gpu.py --data-root ../shared/data --out outputs/gpu_stages
    python scripts/benchmark_gpu.py --plot outputs/gpu_stages/gpu_stages.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys.als import ALS
from recsys.als.training import synchronize
from recsys.data import load_lightgcn, synthetic_preset
from recsys.eval import evaluate

#: conf/experiment/gowalla.yaml's model (the pinned Gowalla result)
GOWALLA = dict(
    weighting="ials",
    n_factors=1024,
    regularization=0.0035,
    alpha0=0.01,
    reg_exponent=1.0,
    use_bias=True,
    calculate_loss=False,
)


def _recall(model: ALS, train: Any, test: Any, device: str) -> tuple[float, float]:
    """Recall@20 of all test users and the seconds the full-ranking evaluation took."""
    users = np.arange(model.n_users)
    synchronize(torch.device(device))
    start = time.perf_counter()
    metrics = evaluate(
        model.user_embeddings(users), model.item_embeddings(), train, test, (20,), device=device
    )
    synchronize(torch.device(device))
    return float(metrics["recall@20"]), time.perf_counter() - start


def quality(data_root: Path, device: str, epochs: int, factors: int) -> dict[str, Any]:
    """Recall@20 after each epoch against cumulative training seconds (evaluation excluded)."""
    split = load_lightgcn(data_root / "gowalla")
    train, test = split.train.matrix, split.test.matrix
    curve: list[dict[str, float]] = []
    trained = [0.0]

    def after_epoch(epoch: int, loss: float, seconds: float, model: ALS) -> None:
        trained[0] += seconds
        recall, eval_s = _recall(model, train, test, device)
        curve.append({"epoch": epoch, "train_seconds": trained[0], "recall@20": recall,
                      "eval_seconds": eval_s})  # fmt: skip
        print(f"  {device} epoch {epoch}: {trained[0]:.2f} s, recall@20 {recall:.4f}, "
              f"eval {eval_s:.2f} s", flush=True)  # fmt: skip

    model = ALS(**{**GOWALLA, "n_factors": factors}, iterations=epochs, device=device)
    model.fit(split.train, callback=after_epoch)
    evals = [_recall(model, train, test, device)[1] for _ in range(2)]
    return {"device": device, "curve": curve, "eval_seconds": evals, "n_users": model.n_users}


def candidates(device: str, k: int, n_users: int | None, model: ALS, train: Any) -> dict:
    """Users per second of every user's exact top-k, seen items excluded."""
    users = np.arange(model.n_users if n_users is None else min(n_users, model.n_users))
    batch = 8192
    model.recommend(users[:batch], train[users[:batch]], k=k)  # warm-up
    synchronize(torch.device(device))
    start = time.perf_counter()
    for lo in range(0, users.size, batch):
        rows = users[lo : lo + batch]
        ids, _ = model.recommend(rows, train[rows], k=k)
    synchronize(torch.device(device))
    seconds = time.perf_counter() - start
    return {
        "device": device,
        "users": int(users.size),
        "k": k,
        "seconds": seconds,
        "users_per_second": users.size / seconds,
        "last_row_filled": int((ids[-1] >= 0).sum()),
    }


def candidate_stage(device: str, k: int, cpu_users: int, preset: str, tmp: Path) -> list[dict]:
    data = synthetic_preset(preset)
    train = data.matrix
    model = ALS(n_factors=128, regularization=0.01, alpha=10.0, iterations=2, use_bias=False,
                calculate_loss=False, device=device).fit(data)  # fmt: skip
    gpu = candidates(device, k, None, model, train)
    print(f"  candidates on {device}: {gpu['users_per_second']:.0f} users/s", flush=True)
    path = model.save(tmp / "ml20m-128.npz")
    cpu = candidates("cpu", k, cpu_users, ALS.load(path, device="cpu"), train)
    print(f"  candidates on cpu: {cpu['users_per_second']:.0f} users/s", flush=True)
    return [gpu, cpu]


def plot(results_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.loads(results_path.read_text())
    fig, ax = plt.subplots(figsize=(6, 4))
    for run in results["quality"]:
        xs = [p["train_seconds"] for p in run["curve"]]
        ys = [p["recall@20"] for p in run["curve"]]
        ax.plot(xs, ys, marker="o", label=f"{run['device']} ({results['cpu_threads']} threads)"
                if run["device"] == "cpu" else run["device"])  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("training seconds (evaluation excluded)")
    ax.set_ylabel("Recall@20 (test)")
    ax.set_title(f"Gowalla, iALS + biases, {results['factors']} factors")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = results_path.with_name("gowalla_recall_vs_seconds_gpu_cpu.png")
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("outputs/gpu_stages"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--cpu-threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--cpu-epochs", type=int, default=3)
    parser.add_argument("--k", type=int, default=500)
    parser.add_argument("--cpu-users", type=int, default=16384)
    parser.add_argument("--factors", type=int, default=GOWALLA["n_factors"])
    parser.add_argument("--preset", default="ml20m", help="synthetic preset of the candidates")
    parser.add_argument("--plot", type=Path, help="plot a results file written earlier")
    args = parser.parse_args()
    if args.plot:
        plot(args.plot)
        return
    torch.set_num_threads(args.cpu_threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"cpu_threads": args.cpu_threads, "factors": args.factors}
    if torch.cuda.is_available():
        results["card"] = torch.cuda.get_device_name()
    print("quality (Gowalla):", flush=True)
    results["quality"] = [
        quality(args.data_root, args.device, args.epochs, args.factors),
        quality(args.data_root, "cpu", args.cpu_epochs, args.factors),
    ]
    print("candidates (ml20m preset):", flush=True)
    results["candidates"] = candidate_stage(
        args.device, args.k, args.cpu_users, args.preset, args.out
    )
    (args.out / "ml20m-128.npz").unlink()
    (args.out / "gpu_stages.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
