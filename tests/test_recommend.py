"""scripts/recommend.py on a tiny run: bad arguments and damaged index files are one line on
stderr with exit status 2; a k above the catalog is clipped with a one-line note."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from recsys import pipeline
from recsys.index import file_sha256, sidecar_path
from tests.pipeline.tiny import compose_cfg

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("recommend") / "run"
    pipeline.run(compose_cfg(), out)
    return out


@pytest.fixture(scope="module")
def recommend() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_recommend", REPO / "scripts" / "recommend.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
