"""recsys.config and conf/: every group composes, every bad value fails with a one-line message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from recsys.config import (
    ConfigError,
    TrainConfig,
    check_overrides,
    differing_keys,
    latest_unfinished_run,
    register_configs,
    validate,
)

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"

register_configs()


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_default_config_matches_schema_defaults_where_not_overridden() -> None:
    conf = validate(_compose())
    assert isinstance(conf, TrainConfig)
    assert conf.data.source == "synthetic" and conf.data.preset == "small"
    assert conf.als.weighting == "hkv" and conf.index.type == "flat" and conf.index.metric == "ip"
    assert conf.eval.objective == "recall@20" and conf.eval.k == [10, 20, 100, 500]
    # seeds follow the top-level seed through interpolation
    conf = validate(_compose("seed=7"))
    assert conf.als.seed == conf.data.seed == conf.split.seed == 7


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        (["als=ials"], lambda c: c.als.weighting == "ials" and c.als.reg_exponent == 1.0),
        (["als=explicit", "eval=rating"], lambda c: c.als.use_bias and c.eval.objective == "rmse"),
        (["index=ivf", "index.nlist=64"], lambda c: c.index.type == "ivf" and c.index.nlist == 64),
        (["index=hnsw", "index.M=8"], lambda c: c.index.type == "hnsw" and c.index.M == 8),
        (["split=leave_k_out", "split.k=2"], lambda c: c.split.method == "leave_k_out"),
        (["split=strong"], lambda c: c.split.method == "strong"),
        (["split=temporal"], lambda c: c.split.method == "temporal"),
        (["data=files", "data.path=x.csv"], lambda c: c.data.source == "files"),
        (["data=lightgcn", "data.path=/d", "split=given"], lambda c: c.split.method == "given"),
        (["eval.k=[5,50]", "eval.objective=ndcg@50"], lambda c: c.eval.k == [5, 50]),
    ],
)
def test_groups_compose(overrides: list[str], check) -> None:
    assert check(validate(_compose(*overrides)))


def test_experiments_resolve_data_paths_against_the_repo(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # not the repo: the path must not depend on the cwd
    gowalla = validate(_compose("+experiment=gowalla"))
    assert Path(gowalla.data.path) == (REPO.parent / "shared" / "data" / "gowalla").resolve()
    assert gowalla.als.weighting == "ials" and gowalla.data.source == "lightgcn"
    assert gowalla.split.method == "given"
    ml = validate(_compose("+experiment=ml100k_explicit"))
    assert Path(ml.data.path) == (REPO.parent / "shared" / "data" / "ml-100k").resolve()
    assert (ml.data.train_file, ml.data.test_file) == ("u1.base", "u1.test")
    assert ml.als.weighting == "explicit" and ml.als.use_bias and ml.eval.objective == "rmse"
    other = validate(_compose("+experiment=gowalla", "data.path=/data/gw"))
    assert other.data.path == "/data/gw"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("als.n_factors=0", "als.n_factors=0: must be an integer >= 1"),
        ("als.regularization=-0.5", "als.regularization=-0.5: must be a number >= 0"),
        ("als.iterations=0", "als.iterations=0: must be an integer >= 1"),
        ("als.weighting=bpr", "als.weighting=bpr: must be one of explicit, hkv, ials"),
        ("als.solver=lu", "als.solver=lu: must be one of cg, cholesky"),
        ("als.alpha=-1", "als.alpha=-1.0: must be >= 0 for weighting 'hkv'"),
        ("als.alpha0=-0.5", "als.alpha0=-0.5: must be >= 0 for weighting 'ials'"),
        ("als.cg_steps=0", "als.cg_steps=0: must be >= 1"),
        ("als.dtype=float16", "als.dtype=float16: must be one of float32, float64"),
        ("als.device=tpu", "als.device=tpu: must be one of auto, cpu, cuda, cuda:<n>"),
        ("als.n_factors=abc", "als.n_factors=abc: must be an integer"),
        ("als.use_bias=maybe", "als.use_bias=maybe: must be true or false"),
        ("index.type=annoy", "index.type=annoy: must be one of flat, ivf, hnsw, factory"),
        ("index.metric=dot", "index.metric=dot: must be one of ip, cosine, l2"),
        ("index.nprobe=0", "index.nprobe=0: must be an integer >= 1"),
        ("index=annoy", "index=annoy: unknown option; must be one of flat, hnsw, ivf"),
        ("data=netflix", "data=netflix: unknown option; must be one of files, lightgcn,"),
        ("data.preset=huge", "data.preset=huge: must be one of tiny, small, medium, ml20m"),
        ("data=lightgcn", "data.path=null: data.source=lightgcn needs a path"),
        ("split=given", "split.method=given: data.source=synthetic has no test set of its own"),
        ("split.test_fraction=1.5", "split.test_fraction=1.5: must be a number in (0, 1)"),
        ("split.validation=1", "split.validation=1.0: must be a fraction in [0, 1)"),
        ("eval.k=20", "eval.k=20: must be a list, e.g. [10,20]"),
        ("eval.k=[0]", "eval.k=[0]: must be a non-empty list of integers >= 1"),
        ("eval.objective=recall@5", "eval.objective=recall@5: must be <metric>@<k> with k in"),
        ("eval.metrics=[recall,auc]", "eval.metrics=[recall,auc]: names must be in recall,"),
        ("eval.metrics=[ndcg]", "eval.metrics=[ndcg]: must include the objective's metric recall"),
        ("eval.objective=rmse", "eval.objective=rmse: rating metrics need als.weighting=explicit"),
        ("eval.patience=-1", "eval.patience=-1: must be an integer >= 0"),
        ("checkpoint.every=-2", "checkpoint.every=-2: must be an integer >= 0"),
        ("als.n_factor=8", "als.n_factor: unknown key; allowed keys in als: n_factors,"),
        ("+colour=red", "colour: unknown key; allowed keys at the top level: als, data,"),
        ("seed=x", "seed=x: must be an integer"),
        ("als.posterior_prior=flat", "als.posterior_prior=flat: must be one of learned, fixed"),
        ("als.n_factors=8,16", "als.n_factors=8,16: a sweep over several values needs -m"),
    ],
)
def test_bad_values_give_one_line_naming_key_and_allowed_values(
    override: str, expected: str
) -> None:
    message = check_overrides([override], config_dir=CONF)
    assert message is not None
    assert "\n" not in message
    assert message.startswith(expected), message


@pytest.mark.parametrize(
    ("override", "hint"),
    [
        ("als.n_factor=8", "; did you mean als.n_factors?"),
        ("als.regularisation=0.1", "; did you mean als.regularization?"),
        ("index.nprob=3", "; did you mean index.nprobe?"),
        ("+sed=3", "; did you mean seed?"),
        ("index=hsnw", "; did you mean hnsw?"),
    ],
)
def test_a_typo_names_the_nearest_key_at_the_end_of_its_one_line(override, hint) -> None:
    message = check_overrides([override], config_dir=CONF)
    assert message is not None and "\n" not in message
    assert message.endswith(hint) and message.count("did you mean") == 1, message


@pytest.mark.parametrize("override", ["+colour=red", "data=netflix", "als.zzz=1"])
def test_a_key_like_no_allowed_one_gets_no_guess(override) -> None:
    message = check_overrides([override], config_dir=CONF)
    assert message is not None and "did you mean" not in message


def test_nprobe_above_a_given_nlist_is_refused_at_config_time() -> None:
    """Probing more lists than there are would silently probe them all: an exhaustive search
    reporting recall 1.0 for any IVF index."""
    message = check_overrides(["index=ivf", "index.nlist=16", "index.nprobe=64"], config_dir=CONF)
    assert message == (
        "index.nprobe=64: must be at most index.nlist=16 (probing every list is an exhaustive "
        "search); lower index.nprobe or raise index.nlist"
    )
    assert (
        check_overrides(["index=ivf", "index.nlist=16", "index.nprobe=16"], config_dir=CONF) is None
    )


def test_posterior_sampling_needs_the_exact_solver_in_one_process() -> None:
    message = check_overrides(["als.posterior_samples=5", "als.solver=cg"], config_dir=CONF)
    assert message == "als.posterior_samples=5: needs als.solver=cholesky"
    message = check_overrides(["als.posterior_samples=5", "als.distributed=true"], config_dir=CONF)
    assert message == "als.posterior_samples=5: runs in one process; set als.distributed=false"


def test_every_sweep_value_is_checked_in_multirun() -> None:
    assert (
        check_overrides(["als.n_factors=8,16", "index=flat,hnsw"], config_dir=CONF, multirun=True)
        is None
    )
    bad = check_overrides(["als.n_factors=8,0", "index=flat,hnsw"], config_dir=CONF, multirun=True)
    assert bad == "als.n_factors=0: must be an integer >= 1"
    bad = check_overrides(["index=flat,annoy"], config_dir=CONF, multirun=True)
    assert bad is not None and bad.startswith("index=annoy: unknown option")
    # an Optuna-style interval cannot be enumerated: it is checked when the job runs
    assert check_overrides(["als.alpha=interval(1,10)"], config_dir=CONF, multirun=True) is None


def test_validate_accepts_dicts_and_dataclasses_and_rejects_bad_ones() -> None:
    conf = validate({"als": {"n_factors": 8}, "seed": 3})
    assert conf.als.n_factors == 8 and conf.als.seed == 3
    again = validate(conf)
    assert again == conf
    with pytest.raises(ConfigError, match=r"^als\.n_factors=0: must be an integer >= 1$"):
        validate({"als": {"n_factors": 0}})
    with pytest.raises(ConfigError, match=r"^als\.factors: unknown key"):
        validate({"als": {"factors": 8}})
    with pytest.raises(ConfigError, match=r"^als\.regularization=abc: must be a number"):
        validate(OmegaConf.create({"als": {"regularization": "abc"}}))


def test_train_script_rejects_bad_value_before_loading_data(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), "als.n_factors=0", "index.type=x"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: als.n_factors=0: must be an integer >= 1"]
    assert not (tmp_path / "outputs").exists()  # nothing ran, no run folder


def test_latest_unfinished_run_and_run_dir_resolver(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    for stamp, done in (("2024-01-01/10-00-00", False), ("2024-01-02/09-00-00", False),
                        ("2024-01-03/08-00-00", True)):  # fmt: skip
        folder = root / stamp
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "checkpoints" / "LATEST").write_text("epoch-00001\n")
        if done:
            (folder / "metrics.json").write_text("{}")
    assert latest_unfinished_run(root) == root / "2024-01-02" / "09-00-00"
    assert latest_unfinished_run(tmp_path / "missing") is None
    cfg = OmegaConf.create(
        {
            "run_dir": None,
            "resume": True,
            "d": f"${{recsys_run_dir:${{run_dir}},${{resume}},{root},x/y}}",
        }
    )
    assert cfg.d == str(root / "2024-01-02" / "09-00-00")
    cfg.resume = False
    assert cfg.d == str(root / "x" / "y")
    cfg.run_dir = "/somewhere"
    assert cfg.d == "/somewhere"


def test_data_with_its_own_test_set_needs_split_given() -> None:
    message = check_overrides(["data=lightgcn", "data.path=/d"], config_dir=CONF)
    assert message == (
        "split.method=random: data.source=lightgcn comes with its own test set here; use "
        "split=given"
    )


def test_metric_names_match_recsys_eval() -> None:
    from recsys.config import RANKING_METRICS
    from recsys.eval import ALL_METRICS

    assert sorted(RANKING_METRICS) == sorted(ALL_METRICS)


def test_differing_keys() -> None:
    a = {"als": {"n_factors": 8, "alpha": 1.0}, "resume": False}
    b = {"als": {"n_factors": 16, "alpha": 1.0}, "resume": True}
    assert differing_keys(a, b) == ["als.n_factors", "resume"]
    assert differing_keys(a, b, ignore=["resume"]) == ["als.n_factors"]
