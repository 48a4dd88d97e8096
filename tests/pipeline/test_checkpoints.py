"""recsys.pipeline.checkpoints: atomic checkpoints, only the latest kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys import pipeline
from recsys.als import ALS


def test_checkpointer_is_atomic_and_keeps_only_the_latest(tmp_path: Path) -> None:
    model = ALS(n_factors=2, iterations=1, use_bias=False, device="cpu")
    from scipy import sparse

    model.fit(sparse.random(6, 5, density=0.5, format="csr", dtype=np.float32, random_state=0))
    ck = pipeline.Checkpointer(tmp_path / "checkpoints")
    assert ck.latest() is None and ck.load() is None
    ck.save(1, model, None, {"epoch": 1, "early_stopping": {}, "config": {}})

    class Broken:
        def save(self, path: Path) -> None:
            Path(path).write_bytes(b"half")
            raise OSError("disk full")

    with pytest.raises(OSError):
        ck.save(2, model, Broken(), {"epoch": 2})
    assert ck.latest() == tmp_path / "checkpoints" / "epoch-00001"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["LATEST", "epoch-00001"]
    ck.save(3, model, model, {"epoch": 3})
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "LATEST",
        "epoch-00001",
        "epoch-00003",
    ]  # the newest and the one before it
    loaded, best, state = ck.load()
    assert state == {"epoch": 3} and best is not None
    assert torch.equal(loaded.item_factors, model.item_factors)


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path: Path, caplog) -> None:
    model = ALS(n_factors=3, iterations=1, device="cpu").fit(sp.eye(5, format="csr"))
    ck = pipeline.Checkpointer(tmp_path / "checkpoints")
    for epoch in (1, 2, 3):
        ck.save(epoch, model, None, {"epoch": epoch})
    folders = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert folders == ["epoch-00002", "epoch-00003"]
    (tmp_path / "checkpoints" / "epoch-00003" / "model.npz").write_bytes(b"bit rot")
    _, _, state = ck.load()
    assert state == {"epoch": 2}
    assert "epoch-00003" in caplog.text and "trying an older one" in caplog.text
    ck.save(3, model, None, {"epoch": 3})  # resumed from epoch 2: epoch 3 is written anew
    assert ck.load()[2] == {"epoch": 3}
    folders = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert folders == ["epoch-00002", "epoch-00003"]
