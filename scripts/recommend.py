"""Top-N recommendations and similar items from a finished training run.

    python scripts/recommend.py run_dir=outputs/<date>/<time> user=42
    python scripts/recommend.py run_dir=outputs/<date>/<time> user=1,2,3 k=20
    python scripts/recommend.py run_dir=outputs/<date>/<time> item=50          # an item id
    python scripts/recommend.py run_dir=outputs/<date>/<time> item="star wars" # a title substring
    python scripts/recommend.py run_dir=outputs/<date>/<time> user=42 index=ivf.faiss

Users and items are given by their external ids (the ids of the dataset's files). Candidates
come through the run's saved Faiss index (``items.faiss``, or ``index=<name>.faiss``, a file of
the run folder such as one ``scripts/export_index.py out=<name>.faiss`` wrote) with each user's
training items excluded; similar items are the nearest items by cosine over the item factors.
Options: ``k`` (default 10; above the number of items it is clipped to it, with a note on
stderr, as ``implicit`` does), ``exclude_seen`` (default true), ``format=json`` for
machine-readable output (user and item ids keep the dataset's id type: numbers or strings),
``device`` (default cpu) to load the model on. Errors (unknown user, bad k, missing run folder,
damaged index, ...) print one line and exit with status 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.pipeline import INDEX_FILE, MODEL_FILE, SavedRun, load_run, parse_key_values
from recsys.pipeline.saved import index_file_name, positive_int, script_help

KEYS = ("run_dir", "user", "item", "k", "exclude_seen", "format", "device", "index")


def _external(ids: np.ndarray, value: str) -> Any:
    """`value` typed like the dataset's external ids (int64 or str)."""
    if ids.dtype.kind in "iu":
        try:
            return int(value)
        except ValueError:
            return None
    return value


def _clip_k(k: int, run: SavedRun) -> int:
    """``k`` clipped to the number of items of the run's model, noting it on stderr."""
    n_items = int(run.model.n_items)
    if k > n_items:
        print(
            f"note: k={k} is more than the {n_items} items; showing at most {n_items}",
            file=sys.stderr,
        )
        return n_items
    return k


def _title(run: SavedRun, item: int) -> str:
    titles = run.train.item_titles if run.train is not None else None
    return "" if titles is None else str(titles[item])


def _index_path(run: SavedRun, name: str) -> Path:
    """The index file `name` (``index=``) of the run folder; FileNotFoundError naming the
    indexes the folder holds and how to build this one when it is not there."""
    name = index_file_name("index", name, "it names an index file inside the run folder")
    path = run.folder / name
    if not path.exists():
        held = ", ".join(sorted(p.name for p in run.folder.glob("*.faiss"))) or "none"
        raise FileNotFoundError(
            f"index={name}: no such index in {run.folder} (it holds: {held}); build it with "
            f"scripts/export_index.py run_dir={run.folder} out={name}"
        )
    return path


def _generator(run: SavedRun, index_name: str) -> Any:
    from recsys.index import load_index
    from recsys.retrieval import CandidateGenerator

    path = _index_path(run, index_name)
    index = load_index(path, model=run.model, model_path=run.folder / MODEL_FILE)
    seen = run.train.matrix if run.train is not None else None
    similar = index if index.metric == "cosine" and index.vectors == "factors" else None
    return CandidateGenerator(run.model, index, seen=seen, similar_index=similar)


def _require_train(run: SavedRun) -> Any:
    if run.train is None:
        raise ValueError(
            f"{run.folder} has no train.npz (trained with save_train=false): the id maps and "
            "seen items are unknown; retrain with save_train=true"
        )
    return run.train


def recommend_users(
    run: SavedRun,
    users: Sequence[str],
    k: int = 10,
    exclude_seen: bool = True,
    index: str = INDEX_FILE,
) -> list[dict[str, Any]]:
    """Top-`k` items for each external user id through the run's index file `index`:
    ``[{"user", "items": [{"item", "title", "score"}]}]``, ids typed as the dataset's."""
    train = _require_train(run)
    typed = [_external(train.user_ids, u) for u in users]
    if any(t is None for t in typed):
        bad = [u for u, t in zip(users, typed, strict=True) if t is None]
        raise KeyError(f"unknown user id(s) {bad}: this dataset's user ids are integers")
    internal = train.user_index(np.asarray(typed))
    ids, scores = _generator(run, index).candidates(internal, k=k, exclude_seen=exclude_seen)
    out = []
    for user, row_ids, row_scores in zip(internal, ids, scores, strict=True):
        items = [
            {"item": train.item_ids[i].item(), "title": _title(run, i), "score": float(s)}
            for i, s in zip(row_ids, row_scores, strict=True)
            if i >= 0
        ]
        out.append({"user": train.user_ids[user].item(), "items": items})
    return out


def find_item(run: SavedRun, query: str) -> tuple[int, int]:
    """Internal index of the item `query` names (external id, else title substring) and the
    number of items that matched."""
    train = _require_train(run)
    typed = _external(train.item_ids, query)
    if typed is not None:
        hit = np.flatnonzero(train.item_ids == typed)
        if hit.size:
            return int(hit[0]), 1
    titles = train.item_titles
    if titles is None:
        raise KeyError(f"no item with id {query!r} (this dataset has no titles to search)")
    lowered = np.char.lower(titles.astype(str))
    matches = np.flatnonzero(np.char.find(lowered, query.lower()) >= 0)
    if matches.size == 0:
        raise KeyError(f"no item with id {query!r} and no title containing {query!r}")
    popularity = np.diff(train.matrix.tocsc().indptr)
    best = matches[np.argmax(popularity[matches])]
    return int(best), int(matches.size)


def similar_items(
    run: SavedRun, query: str, k: int = 10, index: str = INDEX_FILE
) -> dict[str, Any]:
    """The `k` items most similar to the item `query` names (cosine over item factors; the
    index file `index` answers when it is a cosine index over the factors)."""
    train = _require_train(run)
    item, n_matches = find_item(run, query)
    ids, scores = _generator(run, index).similar_items([item], k=k)
    return {
        "item": train.item_ids[item].item(),
        "title": _title(run, item),
        "matches": n_matches,
        "items": [
            {"item": train.item_ids[i].item(), "title": _title(run, i), "score": float(s)}
            for i, s in zip(ids[0], scores[0], strict=True)
            if i >= 0
        ],
    }


def _print_items(items: list[dict[str, Any]]) -> None:
    width = max([len(str(it["item"])) for it in items] + [4])
    for rank, it in enumerate(items, 1):
        title = f"  {it['title']}" if it["title"] else ""
        print(f"  {rank:>3}. {it['item']!s:<{width}}  {it['score']:>9.4f}{title}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    text = script_help(argv, __doc__, KEYS)
    if text is not None:
        print(text)
        return 0
    try:
        args = parse_key_values(argv, KEYS)
        if "run_dir" not in args or ("user" not in args and "item" not in args):
            raise ValueError(
                "usage: recommend.py run_dir=<run folder> user=<id>[,<id>...] | item=<id or title>"
            )
        k = positive_int("k", args.get("k", ["10"])[-1])
        for key in ("user", "item"):
            if key in args and not args[key]:
                raise ValueError(f"{key}=: give at least one {key} id")
        exclude = args.get("exclude_seen", ["true"])[-1].lower() not in ("false", "0", "no")
        as_json = args.get("format", ["text"])[-1] == "json"
        index = (args["index"] or [""])[-1] if "index" in args else INDEX_FILE
        run = load_run(Path(args["run_dir"][-1]), device=args.get("device", ["cpu"])[-1])
        k = _clip_k(k, run)
        result: dict[str, Any] = {}
        if "user" in args:
            users = args["user"]
            result["users"] = recommend_users(run, users, k=k, exclude_seen=exclude, index=index)
        if "item" in args:
            result["similar"] = [similar_items(run, q, k=k, index=index) for q in args["item"]]
    except (KeyError, ValueError, OSError, LookupError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(result, indent=2))
        return 0
    for rec in result.get("users", []):
        seen = "seen items excluded" if exclude else "seen items included"
        print(f"user {rec['user']}: top {len(rec['items'])} ({seen})")
        _print_items(rec["items"])
    for sim in result.get("similar", []):
        title = f" {sim['title']!r}" if sim["title"] else ""
        note = f" (best of {sim['matches']} title matches)" if sim["matches"] > 1 else ""
        print(f"items similar to {sim['item']}{title}{note}:")
        _print_items(sim["items"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
