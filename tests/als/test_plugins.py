"""A weighting written outside the package (tests/als/plugins/scaled_weighting.py, copied to a
folder on the path as a user's own module) is one file: registering it makes it usable through
the API, the config (its field becomes ``als.beta``) and ``scripts/train.py``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.als import ALS, WEIGHTINGS
from recsys.config import ConfigError, load_plugins, validate

from .reference import random_matrix, reference_user_update

REPO = Path(__file__).resolve().parents[2]
PLUGIN = Path(__file__).resolve().parent / "plugins" / "scaled_weighting.py"


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder outside the package holding the plugin module, on sys.path; the weighting is
    registered by importing it and forgotten afterwards."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    shutil.copy(PLUGIN, folder / "scaled_weighting.py")
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    WEIGHTINGS.unregister("scaled")
    sys.modules.pop("scaled_weighting", None)


def test_an_unregistered_parameter_is_refused_with_the_accepted_names() -> None:
    with pytest.raises(ValueError, match=r"unknown ALS argument\(s\) beta; accepted: alpha, "):
        ALS(beta=2.0)


def test_a_registered_weighting_trains_through_the_api(plugin_dir: Path, tmp_path: Path) -> None:
    load_plugins(["scaled_weighting"])
    dense = random_matrix(seed=21)
    model = ALS(n_factors=5, regularization=0.1, weighting="scaled", beta=2.0, iterations=2)
    model.fit(sp.csr_matrix(dense))
    assert model.weighting.beta == 2.0 and model.params["beta"] == 2.0
    xs, _ = reference_user_update(model, dense)
    factors, _ = model.fold_in_factors(sp.csr_matrix(dense))
    assert np.abs(factors.double().numpy() - xs).max() / np.abs(xs).max() < 1e-4
    # as an object carrying its own parameters, and back from a saved file by its name
    obj = ALS(n_factors=5, weighting=type(model.weighting)(beta=2.0), iterations=2)
    assert obj.params == {**model.params, "regularization": 0.01, "bias_regularization": 0.01}
    loaded = ALS.load(model.fit(sp.csr_matrix(dense)).save(tmp_path / "m.npz"))
    assert type(loaded.weighting) is type(model.weighting) and loaded.weighting.beta == 2.0
    with pytest.raises(ValueError, match="beta given to ALS and to the weighting object too"):
        ALS(weighting=type(model.weighting)(), beta=1.0)
    with pytest.raises(ValueError, match="beta must be >= 0 for weighting 'scaled', got -1"):
        ALS(weighting="scaled", beta=-1)


def test_the_config_takes_the_plugins_keys_and_checks(plugin_dir: Path) -> None:
    cfg = validate({"plugins": ["scaled_weighting"], "als": {"weighting": "scaled", "beta": 3.0}})
    model = ALS(**cfg.als.model_kwargs())
    assert model.weighting.name == "scaled" and model.weighting.beta == 3.0
    with pytest.raises(ConfigError, match=r"^als.beta=-1.0: must be >= 0 for weighting 'scaled'$"):
        validate({"plugins": ["scaled_weighting"], "als": {"weighting": "scaled", "beta": -1.0}})
    with pytest.raises(ConfigError, match=r"^plugins=\[no_such_module\]: cannot import it"):
        validate({"plugins": ["no_such_module"]})


def test_scripts_train_imports_the_plugin_named_on_the_command_line(plugin_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(REPO)])}
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), "plugins=[scaled_weighting]",
         "als.weighting=scaled", "als.beta=2.0", "als.n_factors=3", "als.iterations=2",
         "als.device=cpu", "data.preset=tiny", "eval.k=[10]", "eval.objective=recall@10",
         "progress=false", "tracking.enabled=false", "run_dir=run"],
        cwd=plugin_dir.parent, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = plugin_dir.parent / "run"
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["config"]["plugins"] == ["scaled_weighting"]
    assert meta["config"]["als"]["weighting"] == "scaled" and meta["config"]["als"]["beta"] == 2.0
    load_plugins(meta["config"]["plugins"])  # the model file names the part; its module is code
    params = ALS.load(run / "model.npz").params
    assert params["weighting"] == "scaled" and params["beta"] == 2.0
