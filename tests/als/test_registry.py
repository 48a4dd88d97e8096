"""The part registries."""

from __future__ import annotations

import json

from recsys.als import ALS, SOLVERS, WEIGHTINGS


def test_registries_list_the_built_in_parts():
    assert SOLVERS.names() == ["cg", "cholesky"]
    assert WEIGHTINGS.names() == ["explicit", "hkv", "ials"]
    assert json.loads(json.dumps(ALS().params))["solver"] == "cholesky"
