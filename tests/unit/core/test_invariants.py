"""The core guards its invariants with a named error, not `assert` (which `python -O` strips):
a broken invariant raises InvariantError, a RolloutError, whatever the interpreter's flags."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import controller.core
from controller.core.detectors.base import parse_params
from controller.core.detectors.training_serving_skew import FeatureSkew
from controller.errors import InvariantError, RolloutError

CORE = Path(controller.core.__file__).parent
#: The modules held to it here: the state, the policy, the detectors and the statistics.
GUARDED = [
    CORE / "state.py",
    CORE / "policy.py",
    *sorted((CORE / "detectors").glob("*.py")),
    *sorted((CORE / "stats").glob("*.py")),
]


@pytest.mark.parametrize("path", GUARDED, ids=lambda p: str(p.relative_to(CORE)))
def test_the_core_has_no_assert_statement(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))

    lines = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Assert)]

    assert [] == lines


def test_an_invariant_error_is_a_rollout_error() -> None:
    assert issubclass(InvariantError, RolloutError)


def test_parameters_parse_only_into_a_dataclass() -> None:
    with pytest.raises(InvariantError, match="parameters are parsed into a dataclass"):
        parse_params(dict, "error_rate", {})


def test_a_feature_that_was_not_judged_has_no_distance_to_describe() -> None:
    skew = FeatureSkew("age", "JS", None, 0.1, samples=12)

    with pytest.raises(InvariantError, match="age was not judged"):
        skew.describe()
