"""Loader for LightGCN-style data folders (Gowalla, Yelp2018, Amazon-Book as released with
NGCF/LightGCN): ``train.txt`` and ``test.txt``, one line per user::

    <user> <item> <item> ...

A user may appear with no items (a line holding only the user id); they are kept in the id map
with an empty row. Blank lines are ignored. Ids are non-negative integers here but are treated as
labels: internal indices are assigned to the sorted union of the ids of both files, so train and
test share one id space (for the released data sets the ids are already 0..n-1 and the maps are
the identity).

Parsing is vectorised: token boundaries are found with numpy on the raw bytes and the numbers are
converted in one call, so Gowalla (1M interactions) loads in well under a second; a malformed
line is then located and reported with its line number.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path

import numpy as np

from recsys.data.errors import DataError
from recsys.data.ids import int_id_problem, unique_sorted
from recsys.data.predefined import split_from_parts
from recsys.data.splits import Split

__all__ = ["load_lightgcn", "read_lightgcn_file"]

_INT64 = np.iinfo(np.int64)
_IS_WHITESPACE = np.zeros(256, dtype=bool)
_IS_WHITESPACE[[ord(c) for c in " \t\r\n\v\f"]] = True


def _find_bad_line(path: Path, text: bytes) -> DataError:
    for n, line in enumerate(text.split(b"\n"), start=1):
        for tok in line.split():
            shown = tok.decode("utf-8", errors="replace")
            problem = int_id_problem(shown)
            if problem is not None:
                return DataError(
                    f"{shown!r} {problem} (lines are '<user> <item> <item> ...' of integer ids)",
                    path=path,
                    line=n,
                    fix="fix or remove this line",
                )
    return DataError("cannot parse the file", path=path, fix="check its format")


def read_lightgcn_file(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse one ``user item item ...`` file.

    Returns:
        (listed_users, users, items): every user id that has a line (including lines without
        items), and the (user, item) pair of every interaction, all int64.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=path, fix="check the folder and file name")
    text = path.read_bytes()
    if text.startswith(codecs.BOM_UTF8):  # a byte-order mark is not part of the first id
        text = b"   " + text[len(codecs.BOM_UTF8) :]
    raw = np.frombuffer(text, dtype=np.uint8)
    is_ws = _IS_WHITESPACE[raw]
    starts = np.flatnonzero(~is_ws & np.concatenate(([True], is_ws[:-1])))
    if starts.size == 0:
        raise DataError("the file has no data", path=path, fix="check that it was written fully")
    try:
        tokens = np.fromstring(text, dtype=np.int64, sep=" ")
    except ValueError:
        raise _find_bad_line(path, text) from None
    if tokens.size != starts.size:  # a token that is not a plain integer stopped the parser
        raise _find_bad_line(path, text)
    if np.any((tokens == _INT64.max) | (tokens == _INT64.min)):  # or numpy saturated an id
        err = _find_bad_line(path, text)
        if err.line is not None:
            raise err
    # line (0-based) of each token: the number of newlines before it
    line_of = np.searchsorted(np.flatnonzero(raw == 10), starts)
    first = np.concatenate(([True], line_of[1:] != line_of[:-1]))
    listed = tokens[first]
    owner = np.cumsum(first) - 1
    items = tokens[~first]
    users = listed[owner[~first]]
    return listed, users, items


def load_lightgcn(
    folder: str | os.PathLike[str],
    *,
    train_file: str = "train.txt",
    test_file: str = "test.txt",
) -> Split:
    """Load a LightGCN-style folder as a predefined train/test :class:`Split`.

    Every interaction has value 1.0 (an item repeated on a line counts once). ``report`` counts
    users listed without items and test interactions of users/items unseen in train.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("folder not found", path=folder, fix="pass the folder with train.txt")
    parts = {}
    listed = []
    for name in (train_file, test_file):
        lu, u, i = read_lightgcn_file(folder / name)
        listed.append(lu)
        parts[name] = {"user": u, "item": i}
    all_listed = unique_sorted(listed[0], listed[1])
    split = split_from_parts(
        parts[train_file],
        parts[test_file],
        train_source=str(folder / train_file),
        test_source=str(folder / test_file),
        duplicates="max",
        extra_users=all_listed,
    )
    split.report["method"] = "predefined_lightgcn"
    split.report["users_without_train_items"] = int((split.train.user_degrees() == 0).sum())
    split.report["users_without_test_items"] = int((split.test.user_degrees() == 0).sum())
    return split
