#!/usr/bin/env python
"""Recall@k and queries per second of IVF and HNSW item indexes against exact search.

Catalogs: a synthetic ALS-like catalog (default: 1M items x 128 factors, see
benchmarks/index.py:synthetic_catalog; --catalog picks a preset), a saved ALS model (--model,
its item embeddings and a sample of its users as queries), or two .npy files (--vectors /
--query-vectors). Sweeps nprobe (IVF: Flat, and SQ8 / 4-bit PQ fast-scan codes re-scored
exactly, --ivf-codes, over one or more --nlist) and efSearch (HNSW), each with native inner
product and with the MIPS-to-L2 transform, and prints a markdown table, the fastest setting per
variant that reaches the recall target, and which of native IP / MIPS-to-L2 wins per variant.
Optional JSON (--json) and a recall / speed-up plot (--png).

Throughput is measured on one batched search of all queries (median of --repeats runs and of
at least --min-seconds), with
--threads Faiss threads (default: all cores), on the wall clock and on the process's CPU
clock; --clock picks the one speed-ups use (default cpu: wall time also counts the time other
processes held the cores). Speed-ups are over the exact search (Flat IP, same threads) of the
same queries, all of them in one batched call: the baseline a user compares against. It is
timed at the start and at the end, and (--pairing on, the default) again before every timed
run: speed-ups are over that interleaved exact search, which sees the same machine load. The
share of the catalog scanned per query is reported as a load-independent measure of work.

Examples:
    python scripts/benchmark_index.py --smoke                      # a few seconds
    python scripts/benchmark_index.py --n-items 1000000 --dim 128 --json bench.json --png bench.png
    python scripts/benchmark_index.py --model outputs/.../model.npz --queries 2000
    python scripts/benchmark_index.py --kinds ivf --mips on --nlist 4096,16384 \
        --ivf-codes Flat,SQ8,PQfs --k-factor 4,16 --threads 1
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import faiss
import numpy as np

# benchmarks/ is a folder of the repository, not an installed package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.index import (
    CATALOG_PRESETS,
    CLOCKS,
    IVF_CODES,
    run_benchmark,
    synthetic_catalog,
)
from benchmarks.index_report import markdown_table, plot_curves, run_meta, write_json


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from err
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny catalog and sweep (a few seconds)")
    p.add_argument("--n-items", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=1000, help="number of query vectors")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--target", type=float, default=0.95, help="recall target for the summary")
    p.add_argument("--kinds", default="ivf,hnsw", help="comma-separated: ivf, hnsw")
    p.add_argument(
        "--mips",
        choices=("both", "on", "off"),
        default="both",
        help="MIPS-to-L2 variants to run",
    )
    p.add_argument(
        "--catalog",
        choices=sorted(CATALOG_PRESETS),
        default="stress",
        help="synthetic catalog preset (benchmarks.index.CATALOG_PRESETS)",
    )
    p.add_argument("--nlist", type=_ints, default=None, help="IVF list counts (default ~4*sqrt(N))")
    p.add_argument(
        "--nprobe", type=_ints, default=(1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 768, 1024)
    )
    p.add_argument(
        "--ivf-codes",
        default="Flat",
        help=f"comma-separated IVF codes from {IVF_CODES}; all but Flat are re-scored exactly",
    )
    p.add_argument(
        "--k-factor",
        type=_ints,
        default=(4,),
        help="re-scored candidates per result for the SQ8 / PQfs codes",
    )
    p.add_argument(
        "--train-per-list", type=int, default=64, help="k-means training points per IVF list"
    )
    p.add_argument("--ef-search", type=_ints, default=(16, 32, 64, 128, 256, 512, 1024, 2048))
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=100)
    p.add_argument("--threads", type=int, default=None, help="Faiss threads (default all)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per setting (median)")
    p.add_argument(
        "--min-seconds",
        type=float,
        default=1.0,
        help="repeat each search until this much wall time has passed (median of the runs)",
    )
    p.add_argument("--clock", choices=CLOCKS, default="cpu", help="clock of the speed-ups")
    p.add_argument(
        "--pairing",
        choices=("on", "off"),
        default="on",
        help="on: the batched exact search of all queries before every timed run, the baseline "
        "of its speed-up; off: the faster of the exact searches at the start and the end",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", type=Path, default=None, help="saved ALS model (.npz)")
    p.add_argument("--vectors", type=Path, default=None, help="item vectors .npy")
    p.add_argument("--query-vectors", type=Path, default=None, help="query vectors .npy")
    p.add_argument("--json", type=Path, default=None, help="write rows + metadata here")
    p.add_argument("--png", type=Path, default=None, help="write the recall-QPS plot here")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.n_items, args.dim, args.queries = 5000, 32, 200
        args.nprobe, args.ef_search = (1, 4, 16), (16, 64)
        args.ivf_codes = ",".join(IVF_CODES)
        args.ef_construction, args.hnsw_m, args.repeats, args.min_seconds = 40, 16, 1, 0.0
        if args.threads is None:  # no OpenMP barriers to stall on a busy machine
            args.threads = 1
    if args.vectors is not None and args.query_vectors is None:
        p.error("--vectors needs --query-vectors")
    return args


def load_catalog(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    """Item vectors, queries and a description of where they came from."""
    rng = np.random.default_rng(args.seed)
    if args.model is not None:
        from recsys.als import ALS

        model = ALS.load(args.model, device="cpu")
        items = np.asarray(model.item_embeddings(), dtype=np.float32)
        n_users = int(model.user_factors.shape[0])
        users = rng.choice(n_users, size=min(args.queries, n_users), replace=False)
        queries = np.asarray(model.user_embeddings(users), dtype=np.float32)
        return items, queries, f"model {args.model}"
    if args.vectors is not None:
        items = np.load(args.vectors, allow_pickle=False).astype(np.float32)
        queries = np.load(args.query_vectors, allow_pickle=False).astype(np.float32)
        if len(queries) > args.queries:
            queries = queries[rng.choice(len(queries), size=args.queries, replace=False)]
        return items, queries, f"vectors {args.vectors}"
    items, queries = synthetic_catalog(
        args.n_items,
        args.dim,
        n_queries=args.queries,
        seed=args.seed,
        **CATALOG_PRESETS[args.catalog],
    )
    return items, queries, f"synthetic ALS-like catalog ({args.catalog})"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if args.threads is not None:
        faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    items, queries, source = load_catalog(args)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    bad = set(kinds) - {"ivf", "hnsw"}
    if bad:
        print(f"unknown --kinds {sorted(bad)}: use ivf and/or hnsw", file=sys.stderr)
        return 2
    codes = tuple(c.strip() for c in args.ivf_codes.split(",") if c.strip())
    if not codes or set(codes) - set(IVF_CODES):
        print(f"--ivf-codes {args.ivf_codes!r}: use some of {IVF_CODES}", file=sys.stderr)
        return 2
    mips = {"both": (False, True), "on": (True,), "off": (False,)}[args.mips]
    load_before = os.getloadavg()
    timing: dict = {}
    rows = run_benchmark(
        items,
        queries,
        k=args.k,
        nlists=args.nlist or (None,),
        nprobes=args.nprobe,
        ivf_codes=codes,
        k_factors=args.k_factor,
        train_per_list=args.train_per_list,
        hnsw_m=args.hnsw_m,
        ef_construction=args.ef_construction,
        ef_searches=args.ef_search,
        mips_variants=mips,
        kinds=kinds,
        repeats=args.repeats,
        min_seconds=args.min_seconds,
        paired=args.pairing == "on",
        clock=args.clock,
        seed=args.seed,
        meta=timing,
    )
    meta = run_meta(
        items,
        queries,
        args.k,
        source=source,
        hnsw_m=args.hnsw_m,
        ef_construction=args.ef_construction,
        repeats=args.repeats,
        train_per_list=args.train_per_list,
        seconds=round(time.perf_counter() - t0, 1),
        load_average_start=[round(v, 2) for v in load_before],
        load_average_end=[round(v, 2) for v in os.getloadavg()],
        **timing,
    )
    print(
        f"## Index benchmark: {source}, {meta['n_items']:,} items x {meta['dim']} dims, "
        f"{meta['n_queries']} queries, k={args.k}, Faiss {meta['faiss_version']}, "
        f"{meta['faiss_threads']} threads, speed-ups over the batched exact search of all "
        f"queries on the {args.clock} clock, "
        f"load average {meta['load_average_start'][0]:.1f} -> {meta['load_average_end'][0]:.1f}, "
        f"{meta['seconds']:.0f} s\n"
    )
    print(markdown_table(rows, args.k, args.target))
    if args.json is not None:
        write_json(rows, args.json, meta)
    if args.png is not None:
        title = (
            f"{source}: {meta['n_items']:,} x {meta['dim']}, {meta['n_queries']} queries, "
            f"{meta['faiss_threads']} thread(s), {args.clock} clock"
        )
        plot_curves(rows, args.png, args.k, title=title, target=args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
