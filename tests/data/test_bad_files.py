"""Files that used to load wrongly or end in a traceback: ids beyond int64, an id column with
one non-integer line, undecodable text, values beyond float32, corrupt Parquet and ``.npz``
files. Each either loads right or raises one DataError naming the file (and the line) and the
fix, with the whole-file and the chunked readers alike."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from recsys.data import DataError, load_lightgcn, load_table

HUGE = "99999999999999999999"
CHUNKS = [None, 1, 2]


def lightgcn_folder(tmp_path: Path, train: str, test: str = "0 1\n") -> Path:
    folder = tmp_path / "lg"
    folder.mkdir()
    (folder / "train.txt").write_text(train)
    (folder / "test.txt").write_text(test)
    return folder


@pytest.mark.parametrize("huge", [HUGE, "-" + HUGE, "9223372036854775808"])
def test_lightgcn_ids_beyond_int64_are_refused_with_their_line(tmp_path, huge):
    # numpy's parser saturated these to int64's maximum, merging distinct ids
    folder = lightgcn_folder(tmp_path, f"0 1 2\n1 9223372036854775807\n{huge} 3\n")
    with pytest.raises(DataError) as info:
        load_lightgcn(folder)
    assert info.value.line == 3 and "train.txt" in str(info.value)
    assert f"'{huge}' is an integer outside the int64 range" in str(info.value)


def test_lightgcn_extreme_int64_ids_and_a_byte_order_mark_load(tmp_path):
    folder = tmp_path / "lg"
    folder.mkdir()
    top, bottom = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    (folder / "train.txt").write_bytes(f"\ufeff0 1 {top}\n{bottom} 2\n".encode())
    (folder / "test.txt").write_text("0 2\n")
    split = load_lightgcn(folder)
    assert split.train.user_ids.tolist() == [bottom, 0]
    assert split.train.item_ids.tolist() == [1, 2, top]


@pytest.mark.parametrize("chunk_rows", CHUNKS)
def test_ids_beyond_int64_in_a_table(tmp_path, chunk_rows):
    f = tmp_path / "t.csv"
    f.write_text(f"user,item\n1,2\n2,{HUGE}\n3,9223372036854775807\n")
    with pytest.raises(DataError) as info:
        load_table(f, id_type="int", chunk_rows=chunk_rows)
    assert info.value.line == 3 and "outside the int64 range" in str(info.value)
    # "auto" keeps them apart as strings (and says which line made them strings)
    data = load_table(f, chunk_rows=chunk_rows)
    assert data.item_ids.tolist() == ["2", "9223372036854775807", HUGE]


@pytest.mark.parametrize("chunk_rows", CHUNKS)
def test_one_non_integer_id_names_its_line(tmp_path, chunk_rows, caplog):
    f = tmp_path / "events.csv"
    f.write_text("user,item,rating,ts\n1,2,3,1000\n2,3,4,1000\n3,4,1,1000\n12,abc,3,1000\n")
    with caplog.at_level(logging.WARNING, logger="recsys.data"):
        data = load_table(f, value_col="rating", chunk_rows=chunk_rows)
    assert data.item_ids.tolist() == ["2", "3", "4", "abc"] and data.user_ids.dtype.kind == "i"
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"{f}, line 5: 'item': 'abc' is not an int64 integer")
    assert "id_type='str'" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="recsys.data"):
        load_table(f, value_col="rating", id_type="str", chunk_rows=chunk_rows)
        strings = tmp_path / "labels.csv"
        strings.write_text("user,item\nu1,i1\nu2,i2\n")
        load_table(strings, chunk_rows=chunk_rows)
    assert not caplog.records  # ids read as strings on purpose, or all labels: nothing to say


@pytest.mark.parametrize("sep", [",", "::"])
@pytest.mark.parametrize("chunk_rows", CHUNKS)
def test_text_in_another_encoding_names_the_line_and_the_option(tmp_path, sep, chunk_rows):
    f = tmp_path / "latin.txt"
    f.write_bytes(f"user{sep}item\n1{sep}cafe\n2{sep}caf\xe9\n3{sep}caf\xe8\n".encode("latin-1"))
    with pytest.raises(DataError) as info:
        load_table(f, sep=sep, chunk_rows=chunk_rows)
    msg = str(info.value)
    assert info.value.line == 3 and msg.startswith(f"{f}, line 3: the file is not utf-8 text")
    assert "encoding='latin-1'" in msg and "UTF-8" in msg
    # with its encoding the two accented names stay two items
    data = load_table(f, sep=sep, encoding="latin-1", chunk_rows=chunk_rows)
    assert data.item_ids.tolist() == ["cafe", "caf\xe8", "caf\xe9"]


@pytest.mark.parametrize("chunk_rows", CHUNKS)
def test_values_beyond_float32_name_the_line_and_the_limit(tmp_path, chunk_rows):
    f = tmp_path / "r.csv"
    f.write_text("user,item,rating\n1,2,3.4028235e38\n2,3,-1e39\n3,3,1\n")
    with pytest.raises(DataError) as info:
        load_table(f, value_col="rating", chunk_rows=chunk_rows)
    assert info.value.line == 3
    assert "beyond float32's range of +-3.402823e+38" in str(info.value)


def test_in_memory_and_parquet_values_beyond_float32(tmp_path):
    from recsys.data import Interactions

    with pytest.raises(
        DataError, match=r"beyond float32's range .* row 1 \(user 2, item 4: 1e\+39"
    ):
        Interactions.from_columns([1, 2], [3, 4], [1.0, 1e39])
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    f = tmp_path / "r.parquet"
    pq.write_table(pa.table({"user": [1, 2], "item": [3, 4], "rating": [1.0, 1e39]}), f)
    for chunk_rows in CHUNKS:
        with pytest.raises(DataError, match=r"r\.parquet: .*'rating'.* float32.* at row 1"):
            load_table(f, value_col="rating", chunk_rows=chunk_rows)


def corrupt_parquet(tmp_path: Path, where: str) -> Path:
    """A Parquet file with one page of the item column damaged: its header, or (in a file
    written with page checksums) 8 bytes of its data."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    n = 10_000
    table = pa.table({"user": rng.integers(0, 100, n), "item": rng.integers(0, 1000, n)})
    f = tmp_path / "events.parquet"
    pq.write_table(table, f, row_group_size=2000, write_page_checksum=True)
    chunk = pq.ParquetFile(f).metadata.row_group(2).column(1)
    start = chunk.data_page_offset + (20 if where == "header" else chunk.total_compressed_size // 2)
    raw = bytearray(f.read_bytes())
    raw[start : start + 8] = bytes(b ^ 0xFF for b in raw[start : start + 8])
    f.write_bytes(bytes(raw))
    return f


@pytest.mark.parametrize("where", ["header", "data"])
@pytest.mark.parametrize("chunk_rows", [None, 500])
def test_a_corrupt_parquet_page_is_one_line_naming_the_file(tmp_path, where, chunk_rows):
    f = corrupt_parquet(tmp_path, where)
    with pytest.raises(DataError) as info:
        load_table(f, chunk_rows=chunk_rows)
    msg = str(info.value)
    assert msg.startswith(f"{f}: not a readable Parquet file (") and "\n" not in msg
    assert msg.endswith("Check the file (write or download it again).")


def saved_with(tmp_path: Path, **changes: np.ndarray | None) -> Path:
    """A saved Interactions (3 users x 3 items, user 1 with two items) with arrays replaced."""
    from recsys.data import Interactions

    good = tmp_path / "good.npz"
    Interactions.from_columns([1, 1, 2, 3], [5, 6, 6, 7], None, [10, 20, 30, 40]).save(good)
    with np.load(good) as z:
        arrays = {**dict(z), **changes}
    f = tmp_path / "train.npz"
    np.savez(f, **{k: v for k, v in arrays.items() if v is not None})
    return f


NPZ_CASES = {
    "index beyond the items": ({"indices": np.array([0, 3, 1, 2])}, "outside 0..2"),
    "negative index": ({"indices": np.array([0, 1, -1, 2])}, "outside 0..2"),
    "unsorted row": ({"indices": np.array([1, 0, 1, 2])}, "not strictly increasing"),
    "indptr going back": ({"indptr": np.array([0, 2, 1, 4])}, "indptr does not rise"),
    "indptr past the end": ({"indptr": np.array([0, 2, 3, 5])}, "indptr does not rise"),
    "indptr too short": ({"indptr": np.array([0, 2, 4])}, "indptr has 3 entries for 3 rows"),
    "negative shape": ({"shape": np.array([-3, 3])}, "the shape [-3, 3]"),
    "text values": ({"data": np.array(["a", "b", "c", "d"])}, "data is not a 1-d array"),
    "short timestamps": ({"timestamps": np.array([1, 2])}, "timestamps has shape (2,)"),
    "object ids": ({"user_ids": np.array([1, "a", None], dtype=object)}, "Object arrays"),
    "repeated ids": ({"user_ids": np.array([1, 1, 2])}, "repeated ids"),
    "no data": ({"data": None}, "'data is not a file in the archive'"),
}


@pytest.mark.parametrize("case", sorted(NPZ_CASES))
def test_a_corrupt_saved_interactions_file_is_one_line_naming_it(tmp_path, case):
    from recsys.data import Interactions

    changes, words = NPZ_CASES[case]
    f = saved_with(tmp_path, **changes)
    with pytest.raises(DataError) as info:
        Interactions.load(f)
    msg = str(info.value)
    assert msg.startswith(f"{f}: ") and words in msg and "\n" not in msg, msg
    assert info.value.fix


def test_a_truncated_saved_interactions_file(tmp_path):
    from recsys.data import Interactions

    f = saved_with(tmp_path)
    f.write_bytes(f.read_bytes()[:300])
    with pytest.raises(DataError, match=r"train\.npz: cannot read saved interactions"):
        Interactions.load(f)
    assert Interactions.load(saved_with(tmp_path)).shape == (3, 3)


@pytest.mark.parametrize("chunk_rows", CHUNKS)
def test_byte_order_marks(tmp_path, chunk_rows):
    # a UTF-8 mark no longer sticks to the first id of a file without a header
    f = tmp_path / "bom.csv"
    f.write_bytes("\ufeff1,2,3\n2,3,4\n".encode())
    data = load_table(f, header=False, user_col=0, item_col=1, id_type="int", chunk_rows=chunk_rows)
    assert data.user_ids.tolist() == [1, 2]
    # a UTF-16 file read as UTF-8 names the encoding to pass, and loads with it
    f16 = tmp_path / "wide.csv"
    f16.write_bytes("user,item\n1,2\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"wide\.csv: the file is utf-16 text .* encoding='utf-16'"):
        load_table(f16, chunk_rows=chunk_rows)
    assert load_table(f16, encoding="utf-16", chunk_rows=chunk_rows).item_ids.tolist() == [2]
    with pytest.raises(DataError, match=r"wide\.csv: unknown text encoding 'utf-61'"):
        load_table(f16, encoding="utf-61", chunk_rows=chunk_rows)


@pytest.mark.parametrize("chunk_rows", CHUNKS)
def test_sums_of_repeated_pairs_beyond_float32(tmp_path, chunk_rows):
    f = tmp_path / "r.csv"
    f.write_text("user,item,rating\n1,2,3e38\n1,2,3e38\n2,2,1\n")
    with pytest.raises(DataError, match=r"r\.csv: the values of a repeated .* float32's range"):
        load_table(f, value_col="rating", chunk_rows=chunk_rows)
    kept = load_table(f, value_col="rating", duplicates="max", chunk_rows=chunk_rows)
    assert kept.matrix.data.tolist() == [np.float32(3e38), 1.0]


def test_numeric_ids_beyond_int64_in_parquet_and_in_memory(tmp_path):
    from recsys.data import Interactions

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    f = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"user": pa.array([1, 2**64 - 1], pa.uint64()), "item": [1, 2]}), f)
    for chunk_rows in CHUNKS:
        with pytest.raises(DataError, match=r"ids\.parquet: users .* beyond int64 .* at row 1"):
            load_table(f, chunk_rows=chunk_rows)
    with pytest.raises(DataError, match=r"users contains an id beyond int64 \(1e\+20\) at row 0"):
        Interactions.from_columns([1e20, 2.0], [1, 2])


def test_a_header_of_one_field_suggests_the_separator(tmp_path):
    f = tmp_path / "events.csv"  # tab-separated despite its extension
    f.write_text("user\titem\n1\t2\n")
    with pytest.raises(DataError, match=r"Pass user_col= one of those names \(or sep= the file"):
        load_table(f)
    assert load_table(f, sep="\t").item_ids.tolist() == [2]
