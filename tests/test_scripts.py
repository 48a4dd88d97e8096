"""scripts/train.py through Hydra in a subprocess: a 2-job sweep, each job in its own folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

TINY_CLI = [
    "data.preset=tiny",
    "als.iterations=2",
    "als.device=cpu",
    "eval.k=[10]",
    "eval.objective=recall@10",
    "progress=false",
    "tracking.projector_max_items=20",
]


def test_multirun_writes_one_complete_job_folder_per_combination(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), "-m", *TINY_CLI,
         "als.n_factors=2,3", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0", "1"]
    for job, factors in (("0", 2), ("1", 3)):
        folder = sweep / job
        for name in ("model.npz", "items.faiss", "items.faiss.json", "metrics.json",
                     "metadata.json", "train.npz"):  # fmt: skip
            assert (folder / name).is_file(), (job, name)
        overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
        assert f"als.n_factors={factors}" in overrides
        meta = json.loads((folder / "metadata.json").read_text())
        assert meta["config"]["als"]["n_factors"] == factors
        assert f"als.n_factors={factors}" in meta["overrides"]
        metrics = json.loads((folder / "metrics.json").read_text())
        assert 0.0 <= metrics["recall@10"] <= 1.0
        # each job has its own TensorBoard run with its own hparams session
        assert list((folder / "tb").glob("events.out.tfevents.*"))
        assert list((folder / "tb" / "hparams").glob("events.out.tfevents.*"))
    assert f"tensorboard --logdir {sweep.resolve()}" in proc.stdout
    assert proc.stdout.count("recall@10 = ") == 2
    assert not (tmp_path / "outputs").exists()  # multirun writes only into the sweep folder
