"""scripts/recommend.py on a tiny run: bad arguments and damaged index files are one line on
stderr with exit status 2; a k above the catalog is clipped with a one-line note; ``index=``
serves another index file of the run; JSON ids keep the dataset's id type; ``--help``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from recsys import pipeline
from recsys.index import file_sha256, sidecar_path

from .scripts import load_script
from .tiny import compose_cfg


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("recommend") / "run"
    pipeline.run(compose_cfg(), out)
    return out


@pytest.fixture(scope="module")
def recommend() -> ModuleType:
    return load_script("recommend")


def _one_line_error(recommend: ModuleType, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert recommend.main(list(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["user=3", "k=0"], "k=0: must be an integer >= 1"),
        (["user=3", "k=-3"], "k=-3: must be an integer >= 1"),
        (["user=3", "k=1.5"], "k=1.5: must be an integer >= 1"),
        (["user=3", "k=abc"], "k=abc: must be an integer >= 1"),
        (["user=abc"], "unknown user id(s) ['abc']"),
        (["user=1.5"], "unknown user id(s) ['1.5']"),
        (["user=99999999"], "99999999"),
        (["user=-1"], "[-1]"),
        (["user="], "user=: give at least one user id"),
        (["item="], "item=: give at least one item id"),
    ],
)
def test_bad_arguments_are_one_line(run_dir, recommend, capsys, args, match) -> None:
    assert match in _one_line_error(recommend, capsys, f"run_dir={run_dir}", *args)


@pytest.mark.parametrize("what", ["user=3", "item=12"])
def test_k_above_the_catalog_is_clipped_with_a_note(run_dir, recommend, capsys, what) -> None:
    n_items = json.loads((run_dir / "items.faiss.json").read_text())["n_items"]
    assert recommend.main([f"run_dir={run_dir}", what, "k=99999999999", "format=json"]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        f"note: k=99999999999 is more than the {n_items} items; showing at most {n_items}"
    )
    result = json.loads(captured.out)
    items = (result.get("users") or result["similar"])[0]["items"]
    assert 0 < len(items) <= n_items


def _damaged_copy(run_dir: Path, tmp_path: Path, data: bytes | None, rehash: bool) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("tb"))
    index = copy / "items.faiss"
    if data is None:
        index.unlink()
        index.mkdir()
    else:
        index.write_bytes(data)
    if rehash and data is not None:
        meta = json.loads(sidecar_path(index).read_text())
        meta["index_sha256"] = file_sha256(index)
        sidecar_path(index).write_text(json.dumps(meta))
    return copy


@pytest.mark.parametrize("rehash", [False, True])
@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(lambda b: b"XXXX" + b[4:], id="wrong-magic"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: None, id="directory"),
    ],
)
def test_a_damaged_index_is_one_line_naming_it(
    run_dir, recommend, capsys, tmp_path, damage, rehash
) -> None:
    copy = _damaged_copy(run_dir, tmp_path, damage((run_dir / "items.faiss").read_bytes()), rehash)
    message = _one_line_error(recommend, capsys, f"run_dir={copy}", "user=3")
    assert str(copy / "items.faiss") in message


def test_an_invalid_sidecar_is_one_line_naming_it(run_dir, recommend, capsys, tmp_path) -> None:
    copy = _damaged_copy(run_dir, tmp_path, (run_dir / "items.faiss").read_bytes(), False)
    (copy / "items.faiss.json").write_text("{\n")
    message = _one_line_error(recommend, capsys, f"run_dir={copy}", "user=3")
    assert str(copy / "items.faiss.json") in message and "not valid JSON" in message


def test_help_shows_the_docstring_and_the_keys(recommend, capsys) -> None:
    for flag in ("--help", "-h"):
        assert recommend.main([flag]) == 0
        out = capsys.readouterr().out
        assert out.startswith(recommend.__doc__.strip().splitlines()[0])
        assert out.strip().endswith("keys: " + ", ".join(recommend.KEYS))
        assert "index" in recommend.KEYS


def test_a_typo_names_the_nearest_key(run_dir, recommend, capsys) -> None:
    message = _one_line_error(recommend, capsys, f"run_dir={run_dir}", "user=3", "kk=3")
    assert message.startswith("error: kk=3: expected key=value with key one of run_dir,")
    assert message.endswith("; did you mean k?")


def test_index_serves_another_index_file_of_the_run(run_dir, recommend, capsys, tmp_path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("tb"))
    export = load_script("export_index")
    assert export.main([f"run_dir={copy}", "index=hnsw", "out=hnsw.faiss", "check=0"]) == 0
    capsys.readouterr()
    assert recommend.main([f"run_dir={copy}", "user=3", "k=4", "format=json"]) == 0
    flat = json.loads(capsys.readouterr().out)
    for name in ("items.faiss", "items.faiss.json"):  # only the chosen index is read
        (copy / name).unlink()
    args = [f"run_dir={copy}", "user=3", "k=4", "format=json", "index=hnsw.faiss"]
    assert recommend.main(args) == 0
    assert json.loads(capsys.readouterr().out) == flat  # HNSW is exact on 200 items
    for args, name in ((["user=3"], "items.faiss"), (["item=12", "index=ivf.faiss"], "ivf.faiss")):
        message = _one_line_error(recommend, capsys, f"run_dir={copy}", *args)
        assert message == (
            f"error: index={name}: no such index in {copy} (it holds: hnsw.faiss); build it "
            f"with scripts/export_index.py run_dir={copy} out={name}"
        )


@pytest.mark.parametrize("name", ["model.npz", "../items.faiss", "", ".x.faiss"])
def test_index_is_a_faiss_file_name_inside_the_run(run_dir, recommend, capsys, name) -> None:
    message = _one_line_error(recommend, capsys, f"run_dir={run_dir}", "user=3", f"index={name}")
    assert message == (
        f"error: index={name}: give a file name ending in .faiss (no folder, e.g. "
        "index=ivf.faiss); it names an index file inside the run folder"
    )


def _string_id_run(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 40, 600), rng.integers(0, 30, 600)
    csv = tmp_path / "plays.csv"
    rows = sorted({(f"u{u}", f"i{i}") for u, i in zip(users, items, strict=True)})
    csv.write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in rows))
    out = tmp_path / "run"
    pipeline.run(compose_cfg("data=files", f"data.path={csv}", "eval.k=[5]",
                             "eval.objective=recall@5"), out)  # fmt: skip
    return out


def test_json_ids_keep_the_dataset_id_type(run_dir, recommend, capsys, tmp_path) -> None:
    assert recommend.main([f"run_dir={run_dir}", "user=3,17", "item=12", "format=json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [rec["user"] for rec in result["users"]] == [3, 17]  # numbers, as the item ids
    ids = [it["item"] for rec in result["users"] for it in rec["items"]]
    ids += [result["similar"][0]["item"]] + [it["item"] for it in result["similar"][0]["items"]]
    assert all(type(i) is int for i in ids)
    run = _string_id_run(tmp_path)
    assert recommend.main([f"run_dir={run}", "user=u3", "item=i12", "k=3", "format=json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["users"][0]["user"] == "u3" and result["similar"][0]["item"] == "i12"
    items = result["users"][0]["items"] + result["similar"][0]["items"]
    assert len(items) == 6 and all(isinstance(it["item"], str) for it in items)
