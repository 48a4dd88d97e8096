"""Export the top-k candidates of every user of a finished run, with ranker features, as Parquet.

    python scripts/candidates.py run_dir=outputs/<date>/<time> k=500 out=candidates.parquet
    python scripts/candidates.py run_dir=RUN out=c.parquet users=users.txt deny=sold_out.txt
    python scripts/candidates.py run_dir=RUN out=c.parquet index=hnsw.faiss batch=4096

One row per (user, candidate): ``user_id``, ``item_id`` (the dataset's external ids), ``rank``
(1 = best), ``score`` (the ALS score, exact whatever the index), ``item_bias`` (null without
biases), ``item_popularity`` and ``user_activity`` (training counts) and ``item_norm`` (norm of the
item factors). Each user's training items are never candidates. Options:

  k=N            candidates per user (default 100; above the number of items it is clipped)
  out=FILE       the .parquet file to write (required; written atomically, one row group per
                 batch so readers can stream it)
  users=FILE     only these users: one external user id per line (default: every user;
                 repeated ids count once)
  allow=FILE     only these items may be candidates (external item ids, one per line)
  deny=FILE      these items are never candidates (external item ids, one per line)
  index=FILE     the Faiss index that picks candidates: a path, or a file name in the run
                 folder (default items.faiss; scripts/export_index.py writes others);
                 index=exact scores every item exhaustively instead
  batch=N        users per batch (default 1024): memory grows with batch x k
  progress=false no progress bar
  device=cpu     where the model is loaded

Needs pyarrow (``pip install recsys[parquet]``). Errors print one line and exit with status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.pipeline import INDEX_FILE, MODEL_FILE, SavedRun, load_run, parse_key_values
from recsys.pipeline.saved import positive_int

LISTS = ("users", "allow", "deny")  # the keys that name files of ids
KEYS = ("run_dir", "k", "out", "users", "allow", "deny", "index", "batch", "progress", "device")


def _flag(key: str, value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"{key}={value}: must be true or false")
    return lowered in ("true", "1", "yes")


def read_ids(key: str, path: str, run: SavedRun) -> np.ndarray:
    """Internal indices of the external ids listed in the file ``path`` (one per line, blank
    lines skipped, repeats counted once in first-seen order): users for ``users=``, else items."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{key}={path}: cannot read the file ({err})") from None
    values = list(dict.fromkeys(line.strip() for line in lines if line.strip()))
    if not values:
        raise ValueError(f"{key}={path}: the file lists no ids; give one id per line")
    train = run.train
    what, table, lookup = (
        ("user", train.user_ids, train.user_index)
        if key == "users"
        else ("item", train.item_ids, train.item_index)
    )
    if table.dtype.kind in "iu":
        bad = [v for v in values if not v.lstrip("-").isdigit()]
        if bad:
            raise ValueError(
                f"{key}={path}: {len(bad)} lines are not integer {what} ids (first: {bad[:3]}); "
                f"this dataset's {what} ids are integers"
            )
    try:
        return lookup(np.asarray(values, dtype=np.int64 if table.dtype.kind in "iu" else str))
    except KeyError as err:
        raise ValueError(
            f"{key}={path}: {err.args[0]}, not in the run's training data; remove them or use "
            "the run they belong to"
        ) from None


def _index(run: SavedRun, value: str) -> Any:
    """The ItemIndex ``index=`` names (None for ``exact``): a path, else a run-folder file."""
    from recsys.index import load_index

    if value == "exact":
        return None
    path = Path(value)
    if not path.exists():
        path = run.folder / value
    if not path.is_file():
        raise ValueError(
            f"index={value}: no such index file (nor {path}); give a .faiss file, one that "
            "scripts/export_index.py wrote into the run folder, or index=exact"
        )
    return load_index(path, model=run.model, model_path=run.folder / MODEL_FILE)


def export(args: dict[str, list[str]]) -> tuple[int, int, Path]:
    """Run the export the parsed arguments describe: (rows, users, output path)."""
    from recsys.candidates import export_candidates, require_pyarrow
    from recsys.retrieval import CandidateGenerator

    if "run_dir" not in args or "out" not in args:
        raise ValueError("usage: candidates.py run_dir=<run folder> out=<file.parquet> [k=...]")
    opt = {key: values[-1] for key, values in args.items() if values}
    out = Path(opt["out"])
    if out.suffix != ".parquet":
        raise ValueError(f"out={out}: give a file name ending in .parquet")
    k = positive_int("k", opt.get("k", "100"))
    batch = positive_int("batch", opt.get("batch", "1024"))
    progress = _flag("progress", opt.get("progress", "true"))
    require_pyarrow()
    run = load_run(opt["run_dir"], device=opt.get("device", "cpu"))
    train = run.train
    if train is None:
        raise ValueError(
            f"run_dir={run.folder}: no train.npz (trained with save_train=false): the id maps "
            "and seen items are unknown; retrain with save_train=true"
        )
    users, allow, deny = (read_ids(key, opt[key], run) if key in opt else None for key in LISTS)
    index_name = opt.get("index", INDEX_FILE)
    # index=exact: no index search at all, every batch goes to the blocked exhaustive scorer
    exact = {"exact_below": run.model.n_items} if index_name == "exact" else {}
    generator = CandidateGenerator(
        run.model, _index(run, index_name), seen=train.matrix, batch_size=batch, **exact
    )
    if users is None:
        users = np.arange(run.model.n_users, dtype=np.int64)
    rows = export_candidates(
        generator,
        out,
        users,
        (train.user_ids, train.item_ids),
        k=min(k, run.model.n_items),
        allowed_items=allow,
        excluded_items=deny,
        batch_size=batch,
        progress=progress,
        metadata={"run_dir": run.folder, "index": index_name},
    )
    return rows, len(users), out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    try:
        rows, n_users, out = export(parse_key_values(argv, KEYS))
    except (KeyError, ValueError, OSError, ImportError, LookupError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
        return 2
    print(f"[recsys] wrote {out}: {rows} candidates for {n_users} users")
    return 0


if __name__ == "__main__":
    sys.exit(main())
