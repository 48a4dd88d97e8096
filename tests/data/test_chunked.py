"""Chunked loading (recsys.data.chunked through load_table / load_table_split): with any chunk
size the result and every error equal the whole-file read (chunk_rows=None), which is itself
tested against hand-computed cases in test_loaders.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.data import DataError, Interactions, Split
from recsys.data.chunked import IdCounter, build_from_chunks
from recsys.data.tables import load_table, load_table_split

CHUNKS = [1, 2, 3, 7]


def assert_same(a: Interactions, b: Interactions) -> None:
    """Equal down to dtypes: ids, matrix structure and values, timestamps."""
    assert a.user_ids.dtype.kind == b.user_ids.dtype.kind
    assert a.item_ids.dtype.kind == b.item_ids.dtype.kind
    np.testing.assert_array_equal(a.user_ids, b.user_ids)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    assert a.shape == b.shape and a.matrix.dtype == b.matrix.dtype == np.float32
    np.testing.assert_array_equal(a.matrix.indptr, b.matrix.indptr)
    np.testing.assert_array_equal(a.matrix.indices, b.matrix.indices)
    np.testing.assert_array_equal(a.matrix.data, b.matrix.data)
    assert (a.timestamps is None) == (b.timestamps is None)
    if a.timestamps is not None:
        assert a.timestamps.dtype == b.timestamps.dtype
        np.testing.assert_array_equal(a.timestamps.data, b.timestamps.data)
    assert a.matrix.has_canonical_format and a.source == b.source


def dense(x: Interactions) -> dict:
    m = x.matrix.tocoo()
    return {
        (x.user_ids[r].item(), x.item_ids[c].item()): float(v)
        for r, c, v in zip(m.row, m.col, m.data, strict=True)
    }


# users 3 and 1 come back in later chunks, (3, 10) and (1, 12) are repeated across chunks,
# a blank line sits in the middle, rows are not sorted
EVENTS = """user,item,rating,ts
3,10,1.5,100
1,11,2,105
3,12,4,101

2,10,1,99
3,10,2.5,120
1,12,3,90
1,12,1,95
4,11,5,130
3,10,0.5,110
"""


@pytest.mark.parametrize("duplicates", ["sum", "max", "first", "last"])
@pytest.mark.parametrize("chunk_rows", CHUNKS)
def test_chunked_csv_equals_whole_file(tmp_path: Path, duplicates: str, chunk_rows: int) -> None:
    f = tmp_path / "events.csv"
    f.write_text(EVENTS)
    kw = dict(value_col="rating", timestamp_col="ts", duplicates=duplicates)
    whole = load_table(f, chunk_rows=None, **kw)
    got = load_table(f, chunk_rows=chunk_rows, **kw)
    assert_same(got, whole)
    # the hand-computed combination of (3, 10): 1.5 @100, 2.5 @120, 0.5 @110
    want = {"sum": 4.5, "max": 2.5, "first": 1.5, "last": 0.5}[duplicates]
    assert dense(got)[(3, 10)] == want
    assert got.timestamps[got.user_index(3)[0], got.item_index(10)[0]] == 120


def test_ids_turn_to_strings_in_a_late_chunk(tmp_path: Path) -> None:
    # "007" parses as an integer in the first chunks but the column is strings overall, so it
    # must stay "007" (not "7"); the item column is all integers and stays int64
    f = tmp_path / "mixed.tsv"
    f.write_text("user\titem\n007\t5\n7\t6\n 12 \t5\n12\t7\nbob\t6\n007\t6\n")
    whole = load_table(f, chunk_rows=None)
    assert whole.user_ids.tolist() == ["007", "12", "7", "bob"] and whole.item_ids.dtype.kind == "i"
    for chunk_rows in CHUNKS:
        assert_same(load_table(f, chunk_rows=chunk_rows), whole)


def test_string_item_ids_make_the_all_integer_user_column_int_again(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text("user,item\n10,a\n9,b\n010,c\n9,a\n")
    whole = load_table(f, chunk_rows=None)
    assert whole.user_ids.dtype.kind == "i" and whole.user_ids.tolist() == [9, 10]
    for chunk_rows in CHUNKS:
        assert_same(load_table(f, chunk_rows=chunk_rows), whole)


def test_timestamps_and_values_that_need_float64(tmp_path: Path) -> None:
    # integral timestamps first, a fractional one last (-> float64 overall); values 0.1 and
    # 0.2 are not exact in float32, so summing them must start from the float64 values
    f = tmp_path / "t.csv"
    f.write_text("user,item,v,t\n1,1,0.1,5\n2,1,0.7,6\n1,1,0.2,7\n1,2,0.1,8.5\n")
    whole = load_table(f, value_col="v", timestamp_col="t", chunk_rows=None)
    assert whole.timestamps.dtype == np.float64
    assert whole.matrix.data[0] == np.float32(0.1 + 0.2)
    for chunk_rows in CHUNKS:
        assert_same(load_table(f, value_col="v", timestamp_col="t", chunk_rows=chunk_rows), whole)
    ints = tmp_path / "i.csv"
    ints.write_text("user,item,t\n1,1,5\n2,1,6\n1,1,7\n")
    whole = load_table(ints, timestamp_col="t", chunk_rows=None)
    assert whole.timestamps.dtype == np.int64
    assert_same(load_table(ints, timestamp_col="t", chunk_rows=1), whole)


@pytest.mark.parametrize(
    "text, kw",
    [
        ("1::10::5\n2::11::3\n1::10::1\n3::12::2\n", dict(sep="::")),
        ("1  10 5\n\n2\t11 3\n1 10 1\n", dict(sep=None)),
        ('"a",1,2\n"b",1,3\n"a",2,4\n', dict(sep=",")),
    ],
)
def test_separators_and_headerless_files(tmp_path: Path, text: str, kw: dict) -> None:
    f = tmp_path / "data.txt"
    f.write_text(text)
    kw = dict(user_col=0, item_col=1, value_col=2, header=False, **kw)
    whole = load_table(f, chunk_rows=None, **kw)
    for chunk_rows in CHUNKS:
        assert_same(load_table(f, chunk_rows=chunk_rows, **kw), whole)


def test_random_tables_with_duplicates(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for trial in range(3):
        n = int(rng.integers(25, 60))
        users = rng.integers(0, 8, n) * 1000 + 7  # a sparse id range
        items = rng.integers(0, 12, n)
        item_col = [f"it{v}" for v in items] if trial % 2 else items.tolist()
        values = rng.integers(1, 11, n) / 2
        times = rng.integers(0, 10**9, n)
        lines = ["u,i,v,t"] + [
            f"{u},{i},{v},{t}" for u, i, v, t in zip(users, item_col, values, times, strict=True)
        ]
        f = tmp_path / f"r{trial}.csv"
        f.write_text("\n".join(lines) + "\n")
        kw = dict(user_col="u", item_col="i", value_col="v", timestamp_col="t")
        for duplicates in ("sum", "last"):
            whole = load_table(f, chunk_rows=None, duplicates=duplicates, **kw)
            assert whole.nnz < n  # there are duplicates to combine
            for chunk_rows in (1, 5, int(rng.integers(2, n))):
                got = load_table(f, chunk_rows=chunk_rows, duplicates=duplicates, **kw)
                assert_same(got, whole)


# ----------------------------------------------------------------------------- Parquet
def write_parquet(path: Path, columns: dict, row_group_size: int) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)


@pytest.mark.parametrize("duplicates", ["sum", "max", "first", "last"])
def test_chunked_parquet_equals_whole_file(tmp_path: Path, duplicates: str) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    f = tmp_path / "x.parquet"
    write_parquet(
        f,
        {
            "u": ["c", "a", "c", "b", "a", "c", "d", "a", "c"],
            "i": [10, 11, 12, 10, 12, 10, 11, 12, 10],
            "r": [1.5, 2.0, 4.0, 1.0, 3.0, 2.5, 5.0, 1.0, 0.5],
            "t": [100.0, 105.0, 101.0, 99.0, 90.0, 120.0, 130.0, 95.0, 110.0],
        },
        row_group_size=4,
    )
    assert pq.ParquetFile(f).metadata.num_row_groups == 3
    kw = dict(user_col="u", item_col="i", value_col="r", timestamp_col="t", duplicates=duplicates)
    whole = load_table(f, chunk_rows=None, **kw)
    assert whole.timestamps.dtype == np.int64  # integral float timestamps become int64
    for chunk_rows in (1, 3, 4, 100):
        assert_same(load_table(f, chunk_rows=chunk_rows, **kw), whole)


def test_parquet_datetimes_and_integer_ids(tmp_path: Path) -> None:
    f = tmp_path / "d.parquet"
    times = np.array(["2020-01-01T00:00:05", "2020-01-02", "2020-01-01", "2021-06-01"], "M8[s]")
    write_parquet(f, {"u": [5, 3, 5, 3], "i": [1, 1, 1, 2], "t": times}, row_group_size=1)
    whole = load_table(f, user_col="u", item_col="i", timestamp_col="t", chunk_rows=None)
    got = load_table(f, user_col="u", item_col="i", timestamp_col="t", chunk_rows=2)
    assert_same(got, whole)
    assert dense(got) == {(3, 1): 1.0, (3, 2): 1.0, (5, 1): 2.0}


# ----------------------------------------------------------------------------- splits
def test_chunked_split_equals_whole_file_split(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("user,item,r\n1,a,1\n2,b,2\n1,a,3\n3,c,1\n")
    (tmp_path / "test.csv").write_text("user,item,r\nx9,a,5\n2,d,1\n")
    kw = dict(value_col="r")
    whole = load_table_split(tmp_path / "train.csv", tmp_path / "test.csv", chunk_rows=None, **kw)
    assert whole.train.user_ids.tolist() == ["1", "2", "3", "x9"]
    for chunk_rows in (1, 2, 10):
        got = load_table(
            tmp_path / "train.csv", test_path=tmp_path / "test.csv", chunk_rows=chunk_rows, **kw
        )
        assert isinstance(got, Split)
        assert_same(got.train, whole.train)
        assert_same(got.test, whole.test)
        assert got.report == whole.report


# ----------------------------------------------------------------------------- errors
TEXT_ERRORS = {
    # a bad number after clean chunks: its own line
    "bad value": "user,item,rating\n1,2,3\n1,3,4\n2,2,1\n2,3,x\n",
    # empty string id in a later chunk, NaN earlier: the whole-file reader reports the empty id
    "empty id after nan": "user,item,rating\na,2,nan\nb,3,4\nc,2,1\n,3,2\n",
    # NaN in several chunks: the first line, and the count over the whole file
    "nan twice": "user,item,rating\n1,2,nan\n1,3,4\n2,2,1\n2,3,inf\n",
    "too few fields": "user,item,rating\n1,2,3\n1,3,4\n2,2\n2,3,1\n",
    "header only": "user,item,rating\n",
    "string id then bad value": "user,item,rating\nu1,2,3\nu2,3,4\nu3,2,1\nu4,3,bad\n",
}


@pytest.mark.parametrize("case", sorted(TEXT_ERRORS))
def test_text_errors_are_the_whole_file_errors(tmp_path: Path, case: str) -> None:
    f = tmp_path / "data.csv"
    f.write_text(TEXT_ERRORS[case])
    with pytest.raises(DataError) as whole:
        load_table(f, value_col="rating", chunk_rows=None)
    for chunk_rows in (1, 2):
        with pytest.raises(DataError) as chunked:
            load_table(f, value_col="rating", chunk_rows=chunk_rows)
        assert str(chunked.value) == str(whole.value)
        assert chunked.value.line == whole.value.line
    if case == "nan twice":
        assert "line 2:" in str(whole.value) and "2 such lines" in str(whole.value)


def test_integer_ids_required_in_a_late_chunk(tmp_path: Path) -> None:
    f = tmp_path / "data.csv"
    f.write_text("user,item\n1,2\n1,3\n2,b2\n")
    with pytest.raises(DataError) as whole:
        load_table(f, id_type="int", chunk_rows=None)
    with pytest.raises(DataError) as chunked:
        load_table(f, id_type="int", chunk_rows=1)
    assert str(chunked.value) == str(whole.value) and whole.value.line == 4


PARQUET_ERRORS = {
    "nulls in two row groups": {"u": ["a", None, "b", "c", None], "i": [1, 2, 3, 4, 5]},
    "nan value late": {"u": ["a", "b", "c", "d"], "i": [1, 2, 3, 4], "r": [1.0, 2.0, 3.0, np.nan]},
    "fractional id": {"u": [1.0, 2.0, 3.0, 3.5], "i": [1, 2, 3, 4]},
    "id nulls beat value nan": {"u": ["a", "b", "c", None], "i": [1, 2, 3, 4], "r": [np.nan] * 4},
}


@pytest.mark.parametrize("case", sorted(PARQUET_ERRORS))
def test_parquet_errors_are_the_whole_file_errors(tmp_path: Path, case: str) -> None:
    f = tmp_path / "x.parquet"
    columns = PARQUET_ERRORS[case]
    write_parquet(f, columns, row_group_size=2)
    kw = dict(user_col="u", item_col="i", value_col="r" if "r" in columns else None)
    with pytest.raises(DataError) as whole:
        load_table(f, chunk_rows=None, **kw)
    for chunk_rows in (1, 3):
        with pytest.raises(DataError) as chunked:
            load_table(f, chunk_rows=chunk_rows, **kw)
        assert str(chunked.value) == str(whole.value)
    if case == "nulls in two row groups":
        assert "2 missing values, the first at row 1" in str(whole.value)


def test_chunk_rows_is_checked(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text("user,item\n1,2\n")
    for bad in (0, -3, 2.5, True, "10"):
        with pytest.raises(ValueError, match="chunk_rows must be a positive number of rows"):
            load_table(f, chunk_rows=bad)
    with pytest.raises(ValueError, match="duplicates must be one of"):
        load_table(f, duplicates="mean", chunk_rows=1)


# ----------------------------------------------------------------------------- the builder
def test_id_counter_merges_chunks() -> None:
    c = IdCounter()
    c.add(np.array([5, 3, 5]))
    c.add(np.array([9, 3]))
    ids, counts = c.result()
    assert ids.tolist() == [3, 5, 9] and counts.tolist() == [2, 2, 1]
    s = IdCounter()
    s.add(np.array(["07", "7", "10"]))
    s.as_int()
    ids, counts = s.result()
    assert ids.tolist() == [7, 10] and counts.tolist() == [2, 1]


def test_build_from_chunks_matches_from_columns_with_tiny_blocks() -> None:
    rng = np.random.default_rng(3)
    n = 500
    users = rng.integers(0, 30, n)
    items = rng.integers(0, 20, n)
    values = rng.integers(1, 6, n).astype(np.float64)
    times = rng.integers(0, 1000, n)
    want = Interactions.from_columns(users, items, values, times, duplicates="last")
    uids, rows = np.unique(users, return_counts=True)
    cuts = np.sort(rng.choice(np.arange(1, n), 9, replace=False))

    def chunks():
        for part in np.split(np.arange(n), cuts):
            yield {
                "user": users[part],
                "item": items[part],
                "value": values[part],
                "timestamp": times[part],
            }

    for block in (1, 7, 10_000):
        got = build_from_chunks(
            chunks,
            user_ids=uids,
            item_ids=np.unique(items),
            user_rows=rows,
            duplicates="last",
            timestamp_dtype=np.int64,
            block_entries=block,
        )
        assert_same(got, want)
    for missing_item, item_ids in (
        ("int", np.unique(items)[1:]),
        ("str", np.unique(items).astype(str)),
    ):
        with pytest.raises(DataError, match="item ids differ between the two passes"):
            build_from_chunks(
                chunks
                if missing_item == "int"
                else lambda: ({**c, "item": c["item"].astype(str)} for c in chunks()),
                user_ids=uids,
                item_ids=item_ids if missing_item == "int" else item_ids[item_ids != "3"],
                user_rows=rows,
            )
    with pytest.raises(DataError, match="more rows than the first pass"):
        build_from_chunks(chunks, user_ids=uids, item_ids=np.unique(items), user_rows=rows - 1)


def test_data_chunk_rows_config_reaches_load_table(tmp_path: Path, monkeypatch) -> None:
    from types import SimpleNamespace

    from recsys import pipeline
    from recsys.config import ConfigError, DataConfig
    from recsys.data import tables

    f = tmp_path / "events.csv"
    f.write_text(EVENTS)
    with pytest.raises(ConfigError, match=r"data.chunk_rows=0: must be an integer >= 1"):
        DataConfig(source="files", path=str(f), chunk_rows=0, seed=0)
    seen = []
    real = tables.load_table
    monkeypatch.setattr(
        "recsys.data.load_table", lambda *a, **kw: seen.append(kw["chunk_rows"]) or real(*a, **kw)
    )
    for chunk_rows in (2, None):
        conf = DataConfig(
            source="files", path=str(f), value_col="rating", chunk_rows=chunk_rows, seed=0
        )
        data, split = pipeline.load_data(SimpleNamespace(data=conf))
        assert split is None
        assert_same(data, load_table(f, value_col="rating", chunk_rows=None))
    assert seen == [2, None]
