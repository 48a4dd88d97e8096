"""Build (or rebuild) the Faiss index of a finished run from its saved model, without retraining.

    python scripts/export_index.py run_dir=outputs/<date>/<time> index=hnsw
    python scripts/export_index.py run_dir=outputs/<date>/<time> index=ivf out=ivf.faiss
    python scripts/export_index.py run_dir=outputs/<date>/<time> index.metric=cosine

Index settings are the ``index`` group of ``conf/`` (``index=flat|ivf|hnsw`` and any
``index.<key>=...``), validated like ``scripts/train.py`` does. The index and its JSON sidecar are
written atomically to ``out`` inside the run folder: by default ``items.faiss``, the index
``scripts/recommend.py`` serves (``metadata.json`` then records the new settings); another name
is served with ``recommend.py ... index=<out>``. ``out`` is a ``.faiss`` file name, so it never
names one of the run's other artifacts; an index it replaces is described on the console.
``check=N`` (default 1000, 0 to skip) measures the new index's recall@10 against exact
inner-product search on N users (metric ip only); ``device`` (default cpu) loads the model.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.config import ConfigError, IndexConfig, check_overrides, register_configs, validate
from recsys.config.checks import did_you_mean
from recsys.pipeline import (
    INDEX_FILE,
    METADATA_FILE,
    MODEL_FILE,
    SavedRun,
    atomic_write_json,
    export_index,
    load_run,
)
from recsys.pipeline.artifacts import read_json
from recsys.pipeline.saved import index_file_name, script_help

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
OWN_KEYS = ("run_dir", "out", "check", "device")
#: every key the command line takes: its own and the index settings
KEYS = (*OWN_KEYS, "index", *(f"index.{f.name}" for f in dataclasses.fields(IndexConfig)))


def index_config(overrides: Sequence[str]) -> Any:
    """The validated ``index`` config for `overrides` (``index=...``, ``index.<key>=...``)."""
    from hydra import compose, initialize_config_dir

    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key != "index" and not key.startswith("index."):
            raise ConfigError(
                f"{item}: export_index.py takes run_dir=, out=, check=, device= and index "
                f"settings (index=flat|ivf|hnsw, index.<key>=...){did_you_mean(key, KEYS)}"
            )
    problem = check_overrides(overrides, config_dir=CONF_DIR)
    if problem:
        raise ConfigError(problem)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return validate(cfg).index


def previous_index(path: Path) -> str | None:
    """What the index at `path` that an export replaces was (its sidecar's type and settings),
    so the replacement is said, not silent; None when there is none."""
    if not path.exists():
        return None
    from recsys.index import read_sidecar

    try:
        meta = read_sidecar(path)
    except (OSError, ValueError):
        return "an index without a readable sidecar"
    return (
        f"{meta.get('kind', '?')} index, metric {meta.get('metric', '?')}, {meta.get('params', {})}"
    )


def overlap_with_exact(run: SavedRun, index: Any, n_users: int, k: int = 10) -> float | None:
    """Recall of `index` against exact inner-product search: the mean fraction of each sampled
    user's exact top-`k` items (no filtering) that the index returns in its own top-`k`."""
    from recsys.index import build_index_from_model

    n = run.model.n_users
    if n_users <= 0 or n == 0 or index.metric != "ip":
        return None
    users = np.arange(n)
    if n > n_users:
        users = np.sort(np.random.default_rng(0).choice(n, n_users, replace=False))
    k = min(k, index.n_items)
    queries = run.model.user_embeddings(users)
    want, _ = build_index_from_model(run.model, "flat", "ip").search(queries, k)
    got, _ = index.search(queries, k)
    hits = [
        len(set(a[a >= 0].tolist()) & set(b[b >= 0].tolist())) / max(1, int((a >= 0).sum()))
        for a, b in zip(want, got, strict=True)
    ]
    return float(np.mean(hits))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    text = script_help(argv, __doc__, KEYS)
    if text is not None:
        print(text)
        return 0
    register_configs()
    own = [a for a in argv if a.split("=", 1)[0] in OWN_KEYS]
    rest = [a for a in argv if a not in own]
    opts = dict(a.split("=", 1) for a in own)
    try:
        if "run_dir" not in opts:
            raise ConfigError("usage: export_index.py run_dir=<run folder> [index=...] [out=...]")
        out_name = index_file_name(
            "out",
            opts.get("out", INDEX_FILE),
            "it is written into the run folder next to the run's own artifacts",
        )
        check = int(opts.get("check", "1000"))
        run = load_run(opts["run_dir"], device=opts.get("device", "cpu"))
        new_index = index_config(rest)
        conf = dataclasses.replace(run.config, index=new_index)
        path = run.folder / out_name
        replaced = previous_index(path)
        info = export_index(run.model, conf, path, model_path=run.folder / MODEL_FILE)
    except (ConfigError, ValueError, OSError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    from recsys.index import load_index

    index = load_index(path, model=run.model, model_path=run.folder / MODEL_FILE)
    overlap = overlap_with_exact(run, index, check)
    if out_name == INDEX_FILE:
        meta = read_json(run.folder / METADATA_FILE)
        meta["index"] = info
        meta["config"]["index"] = dataclasses.asdict(new_index)
        atomic_write_json(run.folder / METADATA_FILE, meta)
    if replaced is not None:
        print(f"[recsys] replaced the previous {path.name}: {replaced}")
    print(f"[recsys] wrote {path} (+ {path.name}.json): {info['description']}")
    if overlap is not None:
        users = min(check, run.model.n_users)
        print(f"[recsys] recall@10 against exact search on {users} users: {overlap:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
