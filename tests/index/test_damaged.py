"""Loading damaged or mismatched index files: every one ends in one line naming the file and the
fix, never a raw Faiss RuntimeError; and what save writes is durable and readable by others."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recsys.index import (
    IndexMismatchError,
    build_index,
    file_sha256,
    load_index,
    save_index,
    sidecar_path,
)

RNG = np.random.default_rng(5)
ITEMS = RNG.standard_normal((120, 6)).astype(np.float32)
QUERIES = RNG.standard_normal((3, 6)).astype(np.float32)

#: Every index kind, metric and transform a sidecar can describe (small and quick to build).
CASES = {
    "flat-ip": ("flat", "ip", {}),
    "flat-cosine": ("flat", "cosine", {}),
    "flat-l2": ("flat", "l2", {}),
    "ivf-ip": ("ivf", "ip", {"nlist": 4, "nprobe": 2}),
    "ivf-ip-mips": ("ivf", "ip", {"nlist": 4, "nprobe": 2, "mips_to_l2": True}),
    "ivf-l2": ("ivf", "l2", {"nlist": 4}),
    "hnsw-ip": ("hnsw", "ip", {"hnsw_m": 8}),
    "hnsw-cosine": ("hnsw", "cosine", {"hnsw_m": 8}),
    "factory-ip": ("factory", "ip", {"factory": "IVF4,SQ8"}),
    "flat-ip-shards": ("flat", "ip", {"shards": 2}),
    "ivf-l2-shards": ("ivf", "l2", {"nlist": 4, "shards": 2}),
    "hnsw-ip-shards": ("hnsw", "ip", {"hnsw_m": 8, "shards": 3}),
}


def _saved(tmp_path: Path, case: str = "flat-ip") -> Path:
    kind, metric, kwargs = CASES[case]
    path = tmp_path / case / "items.faiss"
    save_index(build_index(ITEMS, kind, metric, **kwargs), path)
    return path


def _edit_sidecar(path: Path, **changes: Any) -> None:
    """Change sidecar fields (and record the .faiss file's current hash, as a save would)."""
    side = sidecar_path(path)
    meta = json.loads(side.read_text())
    meta.update(index_sha256=file_sha256(path), **changes)
    side.write_text(json.dumps(meta))


def _one_line_error(path: Path, match: str) -> str:
    with pytest.raises(IndexMismatchError, match=match) as info:
        load_index(path)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert "export_index.py" in message or "re-export" in message
    return message


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[:40], id="truncated"),
        pytest.param(lambda b: b"XXXX" + b[4:], id="wrong-magic"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b"not a faiss index at all\n" * 4, id="text"),
    ],
)
@pytest.mark.parametrize("case", ["flat-ip", "ivf-ip-mips", "hnsw-ip", "flat-ip-shards"])
def test_unreadable_index_bytes_are_one_line_naming_the_file(
    tmp_path: Path, case: str, damage: Any
) -> None:
    path = _saved(tmp_path, case)
    good = path.read_bytes()
    path.write_bytes(damage(good))
    # the sidecar's SHA-256 catches the damage first
    msg = _one_line_error(path, "does not match its sidecar")
    assert str(path) in msg and "damaged" in msg
    # a pair damaged together (the hash recorded after the damage) reaches Faiss: still one line
    _edit_sidecar(path)
    msg = _one_line_error(path, "cannot be read by Faiss|do not fit")
    assert path.name in msg and "Error in" not in msg


def test_a_directory_is_not_an_index_file(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    path.unlink()
    path.mkdir()
    with pytest.raises(IsADirectoryError, match=f"{path} is a directory"):
        load_index(path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{\n", "is not valid JSON"),
        ("", "is not valid JSON"),
        ("[1, 2]", "holds a JSON list, not an object"),
        ('{"format": 1}', "field 'kind' must be a JSON str"),
    ],
)
def test_an_invalid_sidecar_names_its_file(tmp_path: Path, text: str, match: str) -> None:
    path = _saved(tmp_path)
    sidecar_path(path).write_text(text)
    assert str(sidecar_path(path)) in _one_line_error(path, match)


def test_a_binary_sidecar_names_its_file(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    sidecar_path(path).write_bytes(b"\xff\xfe\x00garbage")
    assert str(sidecar_path(path)) in _one_line_error(path, "is not valid JSON")


@pytest.mark.parametrize(
    ("case", "changes", "match"),
    [
        ("ivf-ip", {"kind": "hnsw"}, "holds a Faiss IndexIVFFlat but its sidecar says kind 'hnsw'"),
        ("hnsw-ip", {"kind": "flat"}, "but its sidecar says kind 'flat'"),
        ("flat-ip", {"kind": "ivf"}, "but its sidecar says kind 'ivf'"),
        ("hnsw-ip-shards", {"kind": "ivf"}, "but its sidecar says kind 'ivf'"),
        ("flat-ip", {"metric": "l2"}, "sidecar says metric 'l2'"),
        ("flat-l2", {"metric": "cosine"}, "sidecar says metric 'cosine'"),
        ("ivf-ip-mips", {"mips_to_l2": False, "dim": 7}, "mips_to_l2=False"),
        ("flat-ip", {"index_dim": 5}, "6 but its sidecar says 120 x 5"),
        ("flat-ip", {"dim": 5}, "Faiss index has dimension 6 but 5 was expected"),
        ("flat-ip", {"n_items": 119}, "120 vectors of dimension 6 but its sidecar says 119"),
        ("flat-ip", {"item_ids": [1, 2]}, "item_ids has 2 entries but the index holds 120"),
        ("flat-ip", {"kind": "annoy"}, "kind must be one of"),
        ("flat-ip", {"dim": "6"}, "field 'dim' must be a JSON int"),
        ("flat-ip", {"dim": True}, "field 'dim' must be a JSON int"),
        ("flat-ip-shards", {"shards": "two"}, "field 'shards' must be a JSON int"),
        ("ivf-ip", {"params": [8, 2]}, "field 'params' must be a JSON dict"),
        ("flat-ip-shards", {"shard_bytes": [1, 2]}, "describes 2 shards but its shard_sizes"),
    ],
)
def test_a_sidecar_that_contradicts_its_index_names_the_file(
    tmp_path: Path, case: str, changes: dict[str, Any], match: str
) -> None:
    path = _saved(tmp_path, case)
    _edit_sidecar(path, **changes)
    msg = _one_line_error(path, match)
    assert path.name in msg


def test_fuzzed_index_files_load_correctly_or_fail_in_one_line(tmp_path: Path) -> None:
    """Random truncations and bit flips of every kind, with the hash recorded after the damage
    (the sidecar only guards against accidents): a correct load or one line, never a crash."""
    rng = np.random.default_rng(40)
    outcomes = {"loaded": 0, "refused": 0}
    for case in CASES:
        path = _saved(tmp_path, case)
        good = bytearray(path.read_bytes())
        for trial in range(40):
            damaged = bytearray(good)
            if trial % 2 == 0:
                damaged = damaged[: int(rng.integers(0, len(good)))]
            else:
                for pos in rng.integers(0, len(good), int(rng.integers(1, 4))):
                    damaged[pos] ^= 1 << int(rng.integers(0, 8))
            path.write_bytes(bytes(damaged))
            side = sidecar_path(path)
            meta = json.loads(side.read_text())
            meta["index_sha256"] = file_sha256(path)
            side.write_text(json.dumps(meta))
            try:
                loaded = load_index(path)
            except IndexMismatchError as err:
                assert "\n" not in str(err) and path.name in str(err), err
                outcomes["refused"] += 1
                continue
            ids, _ = loaded.search(QUERIES, 5)
            assert ids.shape == (3, 5) and ids.max() < len(ITEMS)
            outcomes["loaded"] += 1
    assert outcomes["refused"] > 0 and outcomes["loaded"] > 0


@pytest.mark.parametrize("case", ["flat-ip", "flat-ip-shards"])
def test_saved_files_are_fsynced_and_readable_by_others_under_umask_022(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    synced: list[str] = []  # what was flushed, in order (the test needs no real flush)
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")))
    before = os.umask(0o022)
    try:
        path = _saved(tmp_path, case)
    finally:
        os.umask(before)
    side = sidecar_path(path)
    for written in (path, side):
        assert stat.S_IMODE(written.stat().st_mode) == 0o644
        # the content under its temporary name, then the folder holding the renamed file
        i = next(
            j for j, p in enumerate(synced) if p.startswith(str(path.parent / f".{written.name}."))
        )
        assert synced[i + 1] == str(path.parent)
    assert sorted(p.name for p in path.parent.iterdir()) == ["items.faiss", "items.faiss.json"]
