"""Candidate export (recsys.candidates, scripts/candidates.py) on a tiny run: one row per user and
candidate with external ids, ranks 1..k, the model's exact scores and features, seen items and
denied items never listed, one row group per batch, and bad input as one line with status 2."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from recsys import pipeline
from recsys.candidates import COLUMNS, export_candidates
from recsys.index import build_index_from_model
from recsys.retrieval import CandidateGenerator
from tests.pipeline.scripts import load_script
from tests.pipeline.tiny import compose_cfg

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> pipeline.SavedRun:
    out = tmp_path_factory.mktemp("candidates") / "run"
    pipeline.run(compose_cfg(), out)
    return pipeline.load_run(out)


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_script("candidates")


def _export(script: ModuleType, run: pipeline.SavedRun, out: Path, *args: str) -> None:
    assert script.main([f"run_dir={run.folder}", f"out={out}", "progress=false", *args]) == 0


def _one_line_error(script: ModuleType, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert script.main(list(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


def _write_ids(path: Path, ids: np.ndarray) -> Path:
    path.write_text("\n".join(str(i) for i in ids) + "\n")
    return path


def _expected_counts(run: pipeline.SavedRun, users: np.ndarray, k: int, n_valid: int) -> np.ndarray:
    seen = np.diff(run.train.matrix.indptr)[users]
    return np.minimum(k, n_valid - seen)


def test_every_user_gets_k_unseen_candidates_with_model_scores(run, script, tmp_path) -> None:
    out = tmp_path / "c.parquet"
    k = 20
    _export(script, run, out, f"k={k}")
    table = pq.read_table(out)
    assert tuple(table.column_names) == COLUMNS
    train, model = run.train, run.model
    users = train.user_index(table["user_id"].to_numpy())
    items = train.item_index(table["item_id"].to_numpy())
    counts = np.bincount(users, minlength=model.n_users)
    np.testing.assert_array_equal(
        counts, _expected_counts(run, np.arange(model.n_users), k, model.n_items)
    )
    # ranks run 1..k within each user, best first
    ranks = table["rank"].to_numpy()
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    np.testing.assert_array_equal(ranks, np.arange(len(ranks)) - np.repeat(starts, counts) + 1)
    scores = table["score"].to_numpy()
    np.testing.assert_allclose(scores, model.predict(users, items), rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(scores)[np.diff(users) == 0] <= 1e-6)
    # never a seen item
    assert train.matrix[users, items].A1.sum() == 0
    assert len(set(zip(users.tolist(), items.tolist(), strict=True))) == len(users)
    # the features the model knows
    np.testing.assert_allclose(
        table["item_bias"].to_numpy(), model.item_bias.numpy()[items], rtol=1e-6
    )
    np.testing.assert_array_equal(
        table["item_popularity"].to_numpy(), np.diff(train.matrix.tocsc().indptr)[items]
    )
    np.testing.assert_array_equal(
        table["user_activity"].to_numpy(), np.diff(train.matrix.indptr)[users]
    )
    norms = np.linalg.norm(model.item_factors.numpy(), axis=1)[items]
    np.testing.assert_allclose(table["item_norm"].to_numpy(), norms, rtol=1e-5)


def test_row_groups_are_batches_and_stream(run, script, tmp_path) -> None:
    out = tmp_path / "c.parquet"
    _export(script, run, out, "k=7", "batch=64")
    parquet = pq.ParquetFile(out)
    n_users = run.model.n_users
    assert parquet.metadata.num_row_groups == -(-n_users // 64)
    users = np.arange(n_users)
    expected = _expected_counts(run, users, 7, run.model.n_items)
    for group in range(parquet.metadata.num_row_groups):
        rows = parquet.read_row_group(group)
        batch = users[group * 64 : (group + 1) * 64]
        assert rows.num_rows == expected[batch].sum()
        assert set(run.train.user_index(rows["user_id"].to_numpy())) == set(batch.tolist())
    assert sum(b.num_rows for b in parquet.iter_batches()) == expected.sum()
    assert parquet.schema_arrow.metadata[b"recsys.k"] == b"7"


def test_users_allow_and_deny_files(run, script, tmp_path) -> None:
    train = run.train
    users = np.array([5, 3, 17, 3])  # a repeat counts once, order kept
    allowed = np.arange(0, run.model.n_items, 2)
    denied = allowed[:10]
    out = tmp_path / "c.parquet"
    _export(
        script,
        run,
        out,
        "k=15",
        f"users={_write_ids(tmp_path / 'users.txt', train.user_ids[users])}",
        f"allow={_write_ids(tmp_path / 'allow.txt', train.item_ids[allowed])}",
        f"deny={_write_ids(tmp_path / 'deny.txt', train.item_ids[denied])}",
    )
    table = pq.read_table(out)
    got_users = train.user_index(table["user_id"].to_numpy())
    assert list(dict.fromkeys(got_users.tolist())) == [5, 3, 17]
    items = train.item_index(table["item_id"].to_numpy())
    valid = set(allowed.tolist()) - set(denied.tolist())
    assert set(items.tolist()) <= valid
    for user in (5, 3, 17):
        row = items[got_users == user]
        assert len(row) == min(15, len(valid - set(train.matrix[user].indices.tolist())))
        want, _ = run.model.recommend(
            [user], train.matrix[[user]], k=15, items=allowed, filter_items=denied
        )
        np.testing.assert_array_equal(row, want[0][: len(row)])


def test_exact_and_other_indexes_give_the_same_candidates(run, script, tmp_path) -> None:
    build_index_from_model(run.model, "hnsw", "ip").save(
        run.folder / "hnsw.faiss", model_path=run.folder / pipeline.MODEL_FILE
    )
    tables = {}
    for name in ("items.faiss", "exact", "hnsw.faiss", str(run.folder / "hnsw.faiss")):
        out = tmp_path / f"{Path(name).stem}.parquet"
        _export(script, run, out, "k=10", f"index={name}")
        tables[name] = pq.read_table(out)
    flat = tables["items.faiss"]
    for name, table in tables.items():
        assert table.num_rows == flat.num_rows, name
        np.testing.assert_allclose(
            table["score"].to_numpy(), flat["score"].to_numpy(), rtol=1e-5, atol=1e-5
        )
    assert tables["exact"]["item_id"].equals(flat["item_id"])
    for name, table in tables.items():
        assert table.schema.metadata[b"recsys.index"] == name.encode()


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_searched_indexes_keep_scores_exact_and_seen_out(run, tmp_path, kind) -> None:
    """With the index searched (not the small-catalog exhaustive path), the rows still hold k
    unseen items each with the model's exact score."""
    train, model = run.train, run.model
    index = build_index_from_model(model, kind, "ip")
    generator = CandidateGenerator(model, index, seen=train.matrix, exact_below=0)
    out = tmp_path / "c.parquet"
    users = np.arange(model.n_users)
    maps = (train.user_ids, train.item_ids)
    rows = export_candidates(generator, out, users, maps, k=30, batch_size=100)
    assert generator.last_exhaustive_rows < 100  # the index answered
    table = pq.read_table(out)
    assert rows == table.num_rows == _expected_counts(run, users, 30, model.n_items).sum()
    got_users = train.user_index(table["user_id"].to_numpy())
    items = train.item_index(table["item_id"].to_numpy())
    assert train.matrix[got_users, items].A1.sum() == 0
    np.testing.assert_allclose(
        table["score"].to_numpy(), model.predict(got_users, items), rtol=1e-5, atol=1e-5
    )


def test_external_ids_come_from_the_id_maps(run, tmp_path) -> None:
    """Ids in the file are the maps' values (strings here), never internal indices."""
    train = run.train
    user_names = np.array([f"u{i}" for i in range(train.n_users)])
    item_names = np.array([f"item-{i}" for i in range(train.n_items)])
    generator = CandidateGenerator(run.model, seen=train.matrix)
    out = tmp_path / "c.parquet"
    rows = export_candidates(generator, out, np.array([4, 9]), (user_names, item_names), k=5)
    table = pq.read_table(out)
    assert rows == table.num_rows == 10
    assert table.schema.field("user_id").type == pa.string()
    assert table["user_id"].to_pylist() == ["u4"] * 5 + ["u9"] * 5
    ids, _ = generator.candidates([4, 9], k=5)
    assert table["item_id"].to_pylist() == item_names[ids.ravel()].tolist()


def test_a_failed_export_leaves_no_file(run, tmp_path, monkeypatch) -> None:
    generator = CandidateGenerator(run.model, seen=run.train.matrix)
    calls = iter(range(10))

    def failing(*args, **kwargs):
        if next(calls) == 1:
            raise RuntimeError("interrupted")
        return CandidateGenerator.candidates(generator, *args, **kwargs)

    monkeypatch.setattr(generator, "candidates", failing)
    out = tmp_path / "c.parquet"
    out.write_text("old")
    maps = (run.train.user_ids, run.train.item_ids)
    with pytest.raises(RuntimeError, match="interrupted"):
        export_candidates(generator, out, np.arange(100), maps, k=5, batch_size=10)
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["c.parquet"]


def test_help_prints_the_docstring(script, capsys) -> None:
    assert script.main(["--help"]) == 0
    assert "users=FILE" in capsys.readouterr().out


def test_without_pyarrow_the_error_says_what_to_install(run, script, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    line = _one_line_error(script, capsys, f"run_dir={run.folder}", "out=c.parquet")
    assert "pip install recsys[parquet]" in line


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["k=0"], "k=0: must be an integer >= 1"),
        (["batch=x"], "batch=x: must be an integer >= 1"),
        (["progress=maybe"], "progress=maybe: must be true or false"),
        (["users=missing.txt"], "users=missing.txt: cannot read the file"),
        (["users=FILE:abc\n"], "are not integer user ids"),
        (["users=FILE:999999\n"], "not in the run's training data"),
        (["allow=FILE:\n\n"], "the file lists no ids"),
        (["deny=FILE:-5\n"], "deny=FILE: unknown item id(s): [-5], not in"),
        (["index=nope.faiss"], "index=nope.faiss: no such index file"),
        (["bogus=1"], "key one of"),
    ],
)
def test_bad_input_is_one_line(run, script, capsys, tmp_path, args, match) -> None:
    argv = []
    for arg in args:
        key, _, value = arg.partition("=")
        if value.startswith("FILE:"):
            path = tmp_path / "ids.txt"
            path.write_text(value[len("FILE:") :])
            arg = f"{key}={path}"
            match = match.replace("FILE", str(path))
        argv.append(arg)
    out = tmp_path / "c.parquet"
    line = _one_line_error(script, capsys, f"run_dir={run.folder}", f"out={out}", *argv)
    assert match in line
    assert not out.exists()


def test_missing_out_and_wrong_suffix_are_one_line(run, script, capsys) -> None:
    assert "usage:" in _one_line_error(script, capsys, f"run_dir={run.folder}")
    line = _one_line_error(script, capsys, f"run_dir={run.folder}", "out=c.csv")
    assert "out=c.csv: give a file name ending in .parquet" in line


def test_rescoring_in_small_blocks_gives_the_same_candidates(run, monkeypatch) -> None:
    """Exact rescoring gathers a bounded block of rows at a time; the result does not change."""
    generator = CandidateGenerator(run.model, seen=run.train.matrix)
    users = np.arange(run.model.n_users)
    whole = generator.candidates(users, k=25)
    monkeypatch.setattr("recsys.retrieval.RESCORE_BLOCK_BYTES", 25 * generator.dim * 4 * 7)
    blocked = generator.candidates(users, k=25)
    np.testing.assert_array_equal(blocked[0], whole[0])
    np.testing.assert_array_equal(blocked[1], whole[1])
