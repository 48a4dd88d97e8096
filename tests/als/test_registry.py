"""The part registries."""

from __future__ import annotations

import json

from recsys.als import ALS, SOLVERS, WEIGHTINGS


def test_registries_list_the_built_in_parts():
    assert {"cg", "cholesky"} <= set(SOLVERS.names())  # a new part's file adds itself
    assert {"explicit", "hkv", "ials"} <= set(WEIGHTINGS.names())
    assert json.loads(json.dumps(ALS().params))["solver"] == "cholesky"


def test_part_parameters_are_routed_to_the_part_that_declares_them():
    model = ALS(weighting="hkv", alpha=10.0, solver="cg", cg_steps=5, alpha0=0.3)
    assert model.weighting.alpha == 10.0 and model.solver.cg_steps == 5
    assert "alpha0" not in model.params  # ials's parameter: accepted, not used by hkv
    assert model.params["alpha"] == 10.0 and model.params["cg_steps"] == 5
    assert ALS(solver="cholesky", cg_steps=7).params.get("cg_steps") is None


def test_capabilities_are_class_attributes():
    assert SOLVERS.get("cholesky").exact and not SOLVERS.get("cg").exact
    assert SOLVERS.get("cg").converged_params == {"cg_steps": 40}
    assert WEIGHTINGS.get("explicit").uses_global_mean
    assert not WEIGHTINGS.get("hkv").uses_global_mean
    assert [WEIGHTINGS.get(n).name for n in WEIGHTINGS.names()] == WEIGHTINGS.names()


def test_every_default_lives_in_one_place():
    """The config's als.* defaults are the model's and the parts' own."""
    import dataclasses
    import inspect

    from recsys.config import ALSConfig

    defaults = {f.name: f.default for f in dataclasses.fields(ALSConfig)}
    for name, p in inspect.signature(ALS).parameters.items():
        if p.kind is not p.VAR_KEYWORD and name != "seed":
            assert defaults[name] == p.default, name
    for registry in (WEIGHTINGS, SOLVERS):
        for part in registry.names():
            for f in dataclasses.fields(registry.get(part)):
                assert defaults[f.name] == f.default, f.name
    assert ALS().use_bias and defaults["use_bias"]


def test_model_kwargs_are_the_als_arguments_of_a_config():
    from recsys.config import validate

    cfg = validate({"als": {"weighting": "ials", "alpha0": 0.2, "distributed": False}})
    kwargs = cfg.als.model_kwargs()
    assert not {"distributed", "distributed_timeout_s", "posterior_samples"} & set(kwargs)
    model = ALS(**kwargs)
    assert model.weighting.alpha0 == 0.2 and model.params["weighting"] == "ials"
