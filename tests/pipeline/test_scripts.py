"""The scripts on a run folder: recommend.py and export_index.py in-process on the tiny run, and
scripts/train.py through Hydra in a subprocess (a 2-job sweep, each job in its own folder)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from recsys import pipeline
from recsys.als import ALS
from recsys.data.interactions import Interactions

from .scripts import REPO, load_script

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
        assert (folder / "report.md").is_file()
        # the console shows every metric's table, not only the objective
        for name in ("recall", "coverage", "novelty"):  # one column: eval.k=[10]
            assert re.search(rf"^{name} +{metrics[f'{name}@10']:.4f}$", proc.stdout, re.M), name
        # each job has its own TensorBoard run with its own hparams session
        assert list((folder / "tb").glob("events.out.tfevents.*"))
        assert list((folder / "tb" / "hparams").glob("events.out.tfevents.*"))
    assert f"tensorboard --logdir {sweep.resolve()}" in proc.stdout
    assert proc.stdout.count("recall@10 = ") == 2
    assert proc.stdout.count("[recsys] test metrics (metrics.json):") == 2
    summary = (sweep / "summary.md").read_text()
    rows = [line for line in summary.splitlines() if line.startswith("| ")]
    assert rows[0] == "| job | als.n_factors | recall@10 (test) | epochs | train_seconds |"
    values = [float(row.split(" | ")[2]) for row in rows[1:]]
    assert len(values) == 2 and values == sorted(values, reverse=True)
    assert not (tmp_path / "outputs").exists()  # multirun writes only into the sweep folder


def test_recommend_script_serves_unseen_items_with_model_scores(
    tiny_run: pipeline.RunResult, capsys: pytest.CaptureFixture[str]
) -> None:
    recommend = load_script("recommend")
    out = tiny_run.output_dir
    assert recommend.main([f"run_dir={out}", "user=3,17", "k=5", "format=json"]) == 0
    result = json.loads(capsys.readouterr().out)
    model = ALS.load(out / "model.npz")
    train = Interactions.load(out / "train.npz")
    for rec in result["users"]:
        u = int(train.user_index([int(rec["user"])])[0])
        items = train.item_index([it["item"] for it in rec["items"]])
        assert len(items) == 5
        seen = set(train.matrix.indices[train.matrix.indptr[u] : train.matrix.indptr[u + 1]])
        assert not seen & set(items.tolist())
        dense = (
            model.user_embeddings([u]) @ model.item_embeddings().T
            + model.user_offsets([u])[:, None]
        )
        dense[0, list(seen)] = -np.inf
        want = np.sort(dense[0])[::-1][:5]
        np.testing.assert_allclose([it["score"] for it in rec["items"]], want, rtol=1e-5, atol=1e-5)
    # similar items by id, then a text report
    assert recommend.main([f"run_dir={out}", "item=12", "k=3"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("items similar to 12") and len(text.strip().splitlines()) == 4
    # an unknown user is one line on stderr, exit status 2
    assert recommend.main([f"run_dir={out}", "user=123456"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "123456" in err[0]


def test_export_index_rebuilds_with_other_settings(
    tiny_run: pipeline.RunResult, capsys: pytest.CaptureFixture[str]
) -> None:
    from recsys.index import default_nlist, default_nprobe, load_index, read_sidecar

    export = load_script("export_index")
    out = tiny_run.output_dir
    code = export.main([f"run_dir={out}", "index=hnsw", "index.M=8", "out=hnsw.faiss", "check=50"])
    assert code == 0
    assert "recall@10 against exact search on 50 users" in capsys.readouterr().out
    side = read_sidecar(out / "hnsw.faiss")
    assert side["kind"] == "hnsw" and side["params"]["M"] == 8
    model = ALS.load(out / "model.npz")
    load_index(out / "hnsw.faiss", model=model, model_path=out / "model.npz")
    assert read_sidecar(out / "items.faiss")["kind"] == "flat"  # the served index is untouched
    # index=ivf leaves nlist and nprobe to the library's size-dependent defaults
    assert export.main([f"run_dir={out}", "index=ivf", "out=ivf.faiss"]) == 0
    params = read_sidecar(out / "ivf.faiss")["params"]
    assert params["nlist"] == default_nlist(model.item_factors.shape[0])
    assert params["nprobe"] == default_nprobe(params["nlist"])
    assert export.main([f"run_dir={out}", "index.type=annoy"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: index.type=annoy: must be one of flat, ivf, hnsw, factory"
    )
