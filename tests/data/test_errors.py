"""Bad input: every case raises DataError naming the file, the line (where there is one) and
what to fix, and leaves no partial output behind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from recsys.data.errors import DataError
from recsys.data.interactions import Interactions, require_nonnegative
from recsys.data.lightgcn import load_lightgcn
from recsys.data.movielens import load_movielens
from recsys.data.splits import leave_k_out, random_holdout, temporal_split
from recsys.data.tables import load_table


def ml100k(tmp_path: Path, text: str) -> Callable[[], object]:
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text(text)
    return lambda: load_movielens(folder)


def csv_file(tmp_path: Path, text: str, **kw) -> Callable[[], object]:
    f = tmp_path / "data.csv"
    f.write_text(text)
    kw = {"user_col": "user", "item_col": "item", "value_col": "rating", **kw}
    return lambda: load_table(f, **kw)


def lightgcn(tmp_path: Path, train: str, test: str = "0 1\n") -> Callable[[], object]:
    folder = tmp_path / "lg"
    folder.mkdir()
    (folder / "train.txt").write_text(train)
    (folder / "test.txt").write_text(test)
    return lambda: load_lightgcn(folder)


GOOD = "1\t10\t4\t100\n2\t20\t3\t200\n"
CASES = {
    # name: (make loader, file name in message, line or None, words in message)
    "malformed line": (
        lambda p: ml100k(p, GOOD + "\n3\t30\t5\n"),
        "u.data", 4, ["expected at least 4 fields", "Fix or remove"],
    ),
    "non-numeric id": (
        lambda p: ml100k(p, GOOD + "x7\t30\t5\t300\n"),
        "u.data", 3, ["user", "not an integer: 'x7'"],
    ),
    "non-numeric value": (
        lambda p: ml100k(p, GOOD + "3\t30\tfive\t300\n"),
        "u.data", 3, ["rating", "not a number: 'five'"],
    ),
    "NaN value": (
        lambda p: ml100k(p, "\n" + GOOD + "3\t30\tnan\t300\n"),
        "u.data", 4, ["rating", "NaN or infinite"],
    ),
    "infinite timestamp": (
        lambda p: ml100k(p, GOOD + "3\t30\t1\tinf\n"),
        "u.data", 3, ["timestamp", "NaN or infinite"],
    ),
    "empty file": (lambda p: ml100k(p, ""), "u.data", None, ["empty"]),
    "missing column": (
        lambda p: csv_file(p, "user,item,score\n1,2,3\n"),
        "data.csv", 1, ["missing column 'rating'", "['user', 'item', 'score']", "value_col="],
    ),
    "header only": (
        lambda p: csv_file(p, "user,item,rating\n"),
        "data.csv", None, ["no data lines after the header"],
    ),
    "non-numeric id with id_type=int": (
        lambda p: csv_file(p, "user,item,rating\n1,2,3\n1,b2,3\n", id_type="int"),
        "data.csv", 3, ["'item'", "not an integer"],
    ),
    "value column of text": (
        lambda p: csv_file(p, "user,item,rating\nu1,i1,3\nu2,i2,good\n"),
        "data.csv", 3, ["'rating'", "not a number: 'good'"],
    ),
    "empty id": (
        lambda p: csv_file(p, "user,item,rating\nu1,i1,3\n,i2,4\n"),
        "data.csv", 3, ["'user'", "empty"],
    ),
    "missing file": (
        lambda p: (lambda: load_table(p / "nope.csv")),
        "nope.csv", None, ["file not found", "Check the path"],
    ),
    "lightgcn bad token": (
        lambda p: lightgcn(p, "0 1 2\n1 2 x3\n"), "train.txt", 2, ["'x3' is not an integer"],
    ),
    "lightgcn float id": (
        lambda p: lightgcn(p, "0 1 2\n1 2.5\n"), "train.txt", 2, ["'2.5' is not an integer"],
    ),
    "lightgcn empty file": (
        lambda p: lightgcn(p, " \n\n"), "train.txt", None, ["no data"],
    ),
    "movielens folder without ratings": (
        lambda p: (lambda: load_movielens(p)), "test_bad_input_raises_a_clear", None,
        ["no MovieLens ratings file"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_raises_a_clear_data_error(tmp_path, case):
    make, fname, line, words = CASES[case]
    load = make(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(DataError) as info:
        load()
    err = info.value
    msg = str(err)
    assert fname in msg
    if line is not None:
        assert err.line == line and f"line {line}:" in msg
    for w in words:
        assert w in msg, msg
    assert msg.endswith(".") and err.fix  # says what to do
    # nothing was written next to the input
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_in_memory_columns_with_nan_or_bad_ids():
    with pytest.raises(DataError, match=r"1 value\(s\) are NaN or infinite, the first at row 1"):
        Interactions.from_columns([1, 2], [3, 4], [1.0, np.nan])
    with pytest.raises(DataError, match="non-integer numeric id"):
        Interactions.from_columns([1.5], [3])
    with pytest.raises(DataError, match="missing or non-finite id"):
        Interactions.from_columns([np.nan], [3])
    with pytest.raises(DataError, match="values must be numeric"):
        Interactions.from_columns([1], [3], ["high"])
    with pytest.raises(DataError, match="no interactions"):
        Interactions.from_columns([], [])
    with pytest.raises(DataError, match="users has 2 entries but items has 1"):
        Interactions.from_columns([1, 2], [3])


def test_negative_values_from_a_file_name_the_file(tmp_path):
    f = tmp_path / "ratings.csv"
    f.write_text("user,item,rating\n1,2,-1\n1,3,4\n")
    data = load_table(f, value_col="rating")
    with pytest.raises(DataError) as info:
        require_nonnegative(data)
    msg = str(info.value)
    assert "ratings.csv" in msg and "negative" in msg and "user 1, item 2: -1.0" in msg


def test_empty_splits_name_the_data_and_the_fix():
    single = Interactions.from_columns([1, 2], [5, 6], None, [1, 2], source="tiny.csv")
    with pytest.raises(DataError, match=r"tiny\.csv: the random_holdout split .* empty test set"):
        random_holdout(single)
    with pytest.raises(DataError, match="empty test set"):
        leave_k_out(single, k=1)
    with pytest.raises(DataError, match="no training interactions"):
        temporal_split(single, cut=0)
