"""The search space: Hydra's sweep grammar as Optuna distributions, fixed overrides apart."""

from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from recsys.tuning.space import SpaceError, override_value, search_space


def test_each_expression_becomes_its_distribution() -> None:
    params = {
        "als.n_factors": "int(tag(log, interval(16, 2048)))",
        "als.regularization": "tag(log, interval(1e-4, 1e-1))",
        "als.reg_exponent": "interval(0, 1)",
        "als.use_bias": "choice(true, false)",
        "als.iterations": "range(2, 12)",
        "index": "flat,hnsw",
    }
    space, fixed = search_space(params, [])
    assert fixed == []
    assert space == {
        "als.n_factors": IntDistribution(16, 2048, log=True),
        "als.regularization": FloatDistribution(1e-4, 1e-1, log=True),
        "als.reg_exponent": FloatDistribution(0.0, 1.0),
        "als.use_bias": CategoricalDistribution([True, False]),
        "als.iterations": IntDistribution(2, 11),  # range's stop is excluded, as in Python
        "index": CategoricalDistribution(["flat", "hnsw"]),
    }


def test_the_command_line_adds_dimensions_overrides_params_and_fixes_the_rest() -> None:
    params = {"als.n_factors": "int(interval(16, 2048))", "als.alpha": "interval(1, 10)"}
    arguments = ["data.preset=tiny", "als.n_factors=int(interval(2, 8))", "als.alpha=3",
                 "seed=1,2", "+experiment=x"]  # fmt: skip
    space, fixed = search_space(params, arguments)
    assert space == {
        "als.n_factors": IntDistribution(2, 8),
        "seed": CategoricalDistribution([1, 2]),
    }
    assert fixed == ["data.preset=tiny", "als.alpha=3", "+experiment=x"]


def test_bad_expressions_are_one_line_errors() -> None:
    with pytest.raises(SpaceError, match=r"^als\.alpha: a log scale needs a start above 0"):
        search_space({"als.alpha": "tag(log, interval(0, 1))"}, [])
    with pytest.raises(SpaceError) as err:
        search_space({"als.alpha": "interval(1"}, [])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("value", "text"),
    [(True, "true"), (False, "false"), (None, "null"), (64, "64"), (0.0035, "0.0035"),
     ("hnsw", "hnsw"), ("a b", "'a b'")],
)  # fmt: skip
def test_values_are_written_as_overrides_hydra_parses_back(value, text) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert override_value(value) == text
    assert OverridesParser.create().parse_override(f"k={text}").value() == value
