"""Loaders: MovieLens (3 formats, predefined splits, verified download), LightGCN folders,
generic delimited and Parquet tables, and the real data sets when present."""

from __future__ import annotations

import hashlib
import logging
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from recsys.data.errors import DataError
from recsys.data.interactions import Interactions
from recsys.data.lightgcn import load_lightgcn
from recsys.data.loaders import load_dataset
from recsys.data.movielens import (
    download_archive,
    fetch_movielens,
    load_movielens,
    load_movielens_100k_split,
)
from recsys.data.splits import Split
from recsys.data.tables import load_table, load_table_split

RATINGS = [  # user, item, rating, timestamp
    (196, 242, 3, 881250949),
    (186, 302, 3, 891717742),
    (22, 377, 1, 878887116),
    (196, 302, 5, 881251000),
    (22, 242, 4, 878887200),
]


def dense(x: Interactions) -> dict[tuple, float]:
    coo = x.matrix.tocoo()
    return {
        (x.user_ids[r].item(), x.item_ids[c].item()): float(v)
        for r, c, v in zip(coo.row, coo.col, coo.data, strict=True)
    }


def expected_ratings() -> dict[tuple, float]:
    return {(u, i): float(r) for u, i, r, _ in RATINGS}


def write_ml100k(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS))
    (folder / "u.item").write_bytes(
        "242|Kolya (1996)|24-Jan-1997||http://x|0|0\n"
        "302|L.A. Confidential (1997)|01-Jan-1997||http://x|0|0\n"
        "377|Café au lait (1993)|01-Jan-1993||http://x|0|0\n".encode("latin-1")
    )
    return folder


def test_movielens_100k_format(tmp_path):
    x = load_movielens(write_ml100k(tmp_path / "ml-100k"))
    assert dense(x) == expected_ratings()
    assert x.user_ids.tolist() == [22, 186, 196] and x.item_ids.tolist() == [242, 302, 377]
    assert x.item_titles.tolist() == [
        "Kolya (1996)",
        "L.A. Confidential (1997)",
        "Café au lait (1993)",
    ]
    assert x.timestamps[x.user_index(196)[0], x.item_index(302)[0]] == 881251000
    assert load_movielens(tmp_path / "ml-100k", titles=False).item_titles is None


def test_movielens_1m_format(tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in RATINGS))
    (folder / "movies.dat").write_bytes(
        "242::Kolya (1996)::Comedy\n302::L.A. Confidential (1997)::Crime\n"
        "377::Café au lait (1993)::Comedy\n".encode("latin-1")
    )
    x = load_movielens(folder, variant="1m")
    assert dense(x) == expected_ratings()
    assert x.item_titles[x.item_index(377)[0]] == "Café au lait (1993)"


def test_movielens_csv_format_with_quoted_titles(tmp_path):
    folder = tmp_path / "ml-20m"
    folder.mkdir()
    rows = [(1, 2, 3.5, 1112486027), (1, 29, 4.0, 1112484676), (2, 2, 0.5, 974820889)]
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rows)
    )
    (folder / "movies.csv").write_text(
        'movieId,title,genres\n2,Jumanji (1995),Adventure\n29,"City of Lost Children, The '
        '(Cité des enfants perdus, La) (1995)",Drama\n999,Unrated (2000),Drama\n',
        encoding="utf-8",
    )
    x = load_movielens(folder)
    assert dense(x) == {(1, 2): 3.5, (1, 29): 4.0, (2, 2): 0.5}
    assert x.item_ids.tolist() == [2, 29]  # only rated movies
    assert x.item_titles[1].startswith("City of Lost Children, The (Cité")
    with pytest.raises(DataError, match="not those of MovieLens 1m"):
        load_movielens(folder, variant="1m")


def test_movielens_predefined_split_shares_ids(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k")
    (folder / "u1.base").write_text("196\t242\t3\t1\n186\t302\t3\t2\n")
    (folder / "u1.test").write_text("22\t377\t1\t3\n196\t302\t5\t4\n")
    split = load_movielens_100k_split(folder, "u1")
    assert isinstance(split, Split) and split.train.shape == split.test.shape == (3, 3)
    assert dense(split.train) == {(196, 242): 3.0, (186, 302): 3.0}
    assert dense(split.test) == {(22, 377): 1.0, (196, 302): 5.0}
    assert split.report["test_interactions_cold_user"] == 1  # user 22
    assert split.report["test_interactions_cold_item"] == 1  # item 377
    assert split.train.item_titles[0] == "Kolya (1996)"
    same = load_movielens(folder, train_file="u1.base", test_file="u1.test")
    assert dense(same.test) == dense(split.test)
    with pytest.raises(DataError, match=r"u2\.base"):
        load_movielens_100k_split(folder, "u2")


def make_zip(tmp_path: Path) -> tuple[Path, str]:
    src = write_ml100k(tmp_path / "src" / "ml-100k")
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in src.iterdir():
            zf.write(f, f"ml-100k/{f.name}")
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


def test_download_verifies_sha256_and_caches(tmp_path):
    archive, sha = make_zip(tmp_path)
    cache = tmp_path / "cache"
    folder = fetch_movielens("100k", cache, url=archive.as_uri(), sha256=sha)
    assert folder == cache / "ml-100k" and (folder / "u.data").is_file()
    assert sorted(p.name for p in cache.iterdir()) == ["ml-100k"]  # no temporary files left
    archive.unlink()  # cached: no second download
    assert fetch_movielens("100k", cache, url=archive.as_uri(), sha256=sha) == folder
    x = load_movielens("100k", cache_dir=cache)
    assert dense(x) == expected_ratings()


def test_download_with_wrong_hash_leaves_nothing(tmp_path):
    archive, sha = make_zip(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=f"SHA-256 mismatch.*got {sha}"):
        fetch_movielens("100k", cache, url=archive.as_uri(), sha256="0" * 64)
    assert list(cache.iterdir()) == []


def test_pinned_hash_is_used_by_default(tmp_path):
    archive, _ = make_zip(tmp_path)  # our zip is not the official archive
    with pytest.raises(DataError, match="expected 50d2a982"):
        fetch_movielens("100k", tmp_path / "c", url=archive.as_uri())
    assert list((tmp_path / "c").iterdir()) == []


def test_download_without_hash_warns_with_the_hash(tmp_path, caplog):
    archive, sha = make_zip(tmp_path)
    with caplog.at_level(logging.WARNING, logger="recsys.data.movielens"):
        folder = download_archive(archive.as_uri(), tmp_path / "c", "ml-100k", sha256=None)
    assert (folder / "u.data").is_file()
    assert sha in caplog.text and "without a checksum" in caplog.text


def test_download_errors_are_data_errors(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"this is not a zip")
    sha = hashlib.sha256(bad.read_bytes()).hexdigest()
    with pytest.raises(DataError, match="not a valid zip"):
        download_archive(bad.as_uri(), tmp_path / "c", "x", sha256=sha)
    assert list((tmp_path / "c").iterdir()) == []
    with pytest.raises(DataError, match="could not download"):
        download_archive((tmp_path / "missing.zip").as_uri(), tmp_path / "c", "x", sha256=None)
    with pytest.raises(DataError, match="download=True"):
        load_movielens("20m", cache_dir=tmp_path / "empty")


def write_lightgcn(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text("0 0 1 2\n1 2 3\n\n2\n3 1 1 4  \n")
    (folder / "test.txt").write_text("0 3\n1 0\n2 4\n4\n")
    return folder


def test_lightgcn_folder(tmp_path):
    split = load_lightgcn(write_lightgcn(tmp_path / "lg"))
    assert split.train.shape == split.test.shape == (5, 5)
    assert split.train.user_ids.tolist() == [0, 1, 2, 3, 4]
    assert dense(split.train) == {
        (0, 0): 1.0, (0, 1): 1.0, (0, 2): 1.0, (1, 2): 1.0, (1, 3): 1.0, (3, 1): 1.0, (3, 4): 1.0
    }  # fmt: skip
    assert dense(split.test) == {(0, 3): 1.0, (1, 0): 1.0, (2, 4): 1.0}
    assert split.train.user_degrees().tolist() == [3, 2, 0, 2, 0]  # users 2 and 4: no items
    assert split.report["users_without_train_items"] == 2
    assert split.report["test_interactions_cold_user"] == 1
    assert isinstance(load_dataset("lightgcn", folder=tmp_path / "lg"), Split)


def test_delimited_table_with_header_and_string_ids(tmp_path):
    f = tmp_path / "events.csv"
    f.write_text("ts,who,what,clicks\n10,alice,x1,2\n20,bob,x2,1\n30,alice,x1,3\n")
    x = load_table(f, user_col="who", item_col="what", value_col="clicks", timestamp_col="ts")
    assert x.user_ids.tolist() == ["alice", "bob"] and x.item_ids.tolist() == ["x1", "x2"]
    assert dense(x) == {("alice", "x1"): 5.0, ("bob", "x2"): 1.0}
    assert x.timestamps.data.tolist() == [30, 20]
    m = load_table(f, user_col="who", item_col="what", value_col="clicks", duplicates="max")
    assert dense(m)[("alice", "x1")] == 3.0


def test_delimited_table_without_header(tmp_path):
    f = tmp_path / "data.txt"
    f.write_text("1;7;0.5\n2;7;1.5\n")
    x = load_table(f, user_col=0, item_col=1, value_col=2, header=False)
    assert dense(x) == {(1, 7): 0.5, (2, 7): 1.5}
    y = load_table(f, user_col="u", item_col="i", header=False, names=["u", "i", "v"], sep=";")
    assert dense(y) == {(1, 7): 1.0, (2, 7): 1.0}
    w = tmp_path / "ws.txt"
    w.write_text("1  7\n2\t8\n")
    assert dense(load_table(w, user_col=0, item_col=1, header=False)) == {(1, 7): 1.0, (2, 8): 1.0}


def test_table_split_from_two_files(tmp_path):
    (tmp_path / "train.tsv").write_text("user\titem\n1\ta\n2\tb\n")
    (tmp_path / "test.tsv").write_text("user\titem\n2\ta\n3\tc\n")
    split = load_table_split(tmp_path / "train.tsv", tmp_path / "test.tsv")
    assert split.train.user_ids.tolist() == [1, 2, 3] and split.train.item_ids.tolist() == [
        "a",
        "b",
        "c",
    ]
    assert dense(split.test) == {(2, "a"): 1.0, (3, "c"): 1.0}
    same = load_table(tmp_path / "train.tsv", test_path=tmp_path / "test.tsv")
    assert isinstance(same, Split) and dense(same.train) == dense(split.train)


def test_parquet_table(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table(
        {"u": ["a", "b", "a"], "i": [10, 20, 30], "r": [1.0, 2.0, 4.0], "t": [5, 6, 7]}
    )
    pq.write_table(table, tmp_path / "x.parquet")
    x = load_table(tmp_path / "x.parquet", user_col="u", item_col="i", value_col="r",
                   timestamp_col="t")  # fmt: skip
    assert dense(x) == {("a", 10): 1.0, ("b", 20): 2.0, ("a", 30): 4.0}
    assert x.timestamps.data.tolist() == [5, 7, 6]
    pq.write_table(pa.table({"u": ["a"], "i": [1]}), tmp_path / "test.parquet")
    split = load_table(tmp_path / "x.parquet", user_col="u", item_col="i",
                       test_path=tmp_path / "test.parquet")  # fmt: skip
    assert split.test.shape == split.train.shape == (2, 4)
    with pytest.raises(DataError, match=r"missing column 'rating'.*\['u', 'i', 'r', 't'\]"):
        load_table(tmp_path / "x.parquet", user_col="u", item_col="i", value_col="rating")
    pq.write_table(pa.table({"u": ["a", None], "i": [1, 2]}), tmp_path / "null.parquet")
    with pytest.raises(DataError, match="missing values, the first at row 1"):
        load_table(tmp_path / "null.parquet", user_col="u", item_col="i")


def test_load_dataset_dispatch(tmp_path):
    x = load_dataset("synthetic", preset="tiny", seed=1)
    assert x.shape == (300, 200)
    y = load_dataset("movielens", source=write_ml100k(tmp_path / "m"))
    assert y.nnz == len(RATINGS)
    with pytest.raises(ValueError, match="unknown data set kind"):
        load_dataset("nope")


# ------------------------------------------------------------------ real data (when present)


def test_real_movielens_100k(shared_data):
    folder = shared_data / "ml-100k"
    if not (folder / "u.data").is_file():
        pytest.skip("ml-100k not present")
    x = load_movielens(folder)
    assert (x.n_users, x.n_items, x.nnz) == (943, 1682, 100_000)
    assert x.item_titles[x.item_index(1)[0]] == "Toy Story (1995)"
    assert set(np.unique(x.matrix.data).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    split = load_movielens_100k_split(folder, "u1")
    assert (split.train.nnz, split.test.nnz) == (80_000, 20_000)
    assert split.train.shape == split.test.shape == (943, 1682)
    assert split.train.item_titles[0] == "Toy Story (1995)"


def test_real_gowalla(shared_data):
    folder = shared_data / "gowalla"
    if not (folder / "train.txt").is_file():
        pytest.skip("gowalla not present")
    split = load_lightgcn(folder)
    assert split.train.shape == (29_858, 40_981)
    assert (split.train.nnz, split.test.nnz) == (810_128, 217_242)
    assert split.test.shape == split.train.shape


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    with pytest.raises(ImportError, match=r"x\.parquet.*pip install pyarrow"):
        load_table(tmp_path / "x.parquet")
