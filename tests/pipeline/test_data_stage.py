"""The data stage passes a file's encoding and id type from the config to the loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.config import ConfigError, validate
from recsys.data import DataError
from recsys.pipeline import load_data

from .tiny import compose_cfg


def _files_cfg(path: Path, *overrides: str):
    return validate(compose_cfg("data=files", f"data.path={path}", *overrides))


@pytest.fixture
def latin1_csv(tmp_path: Path) -> Path:
    path = tmp_path / "ratings.csv"
    lines = ["user,item"] + [f"{u},caf\xe9 {i}" for u in range(4) for i in range(3)]
    path.write_bytes("\n".join(lines).encode("latin-1"))
    return path


def test_the_encoding_reaches_the_loader(latin1_csv: Path) -> None:
    with pytest.raises(DataError, match="encoding"):
        load_data(_files_cfg(latin1_csv))
    data, _ = load_data(_files_cfg(latin1_csv, "data.encoding=latin-1"))
    assert sorted(data.item_ids) == ["caf\xe9 0", "caf\xe9 1", "caf\xe9 2"]


def test_the_id_type_reaches_the_loader(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text("user,item\n1,10\n2,11\n3,abc\n")
    data, _ = load_data(_files_cfg(path))
    assert sorted(data.item_ids) == ["10", "11", "abc"]
    with pytest.raises(DataError, match="line 4"):
        load_data(_files_cfg(path, "data.id_type=int"))
    with pytest.raises(ConfigError, match=r"data\.id_type"):
        _files_cfg(path, "data.id_type=float")
