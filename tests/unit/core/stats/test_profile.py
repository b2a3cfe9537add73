"""Feature profiles: plain reference distributions with the wire's field names."""

from __future__ import annotations

import pytest

from controller.core.stats import FeatureKind, FeatureProfile, InvalidProfileError


def test_a_numeric_profile_has_one_proportion_per_bin_including_the_tails() -> None:
    profile = FeatureProfile("age", FeatureKind.NUMERIC, (18.0, 40.0, 65.0), (0.0, 0.5, 0.4, 0.1))

    assert profile.is_numeric
    assert 4 == len(profile.proportions)


def test_a_profile_without_tails_gets_empty_ones() -> None:
    profile = FeatureProfile("age", FeatureKind.NUMERIC, (18.0, 40.0, 65.0), (0.6, 0.4))

    assert (0.0, 0.6, 0.4, 0.0) == profile.proportions


def test_kind_may_be_given_as_its_wire_string() -> None:
    profile = FeatureProfile("country", "categorical", categories={"de": 0.5, "fr": 0.5})  # type: ignore[arg-type]

    assert FeatureKind.CATEGORICAL is profile.kind


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": FeatureKind.NUMERIC}, "needs bin_edges"),
        ({"kind": FeatureKind.NUMERIC, "bin_edges": (2.0, 1.0)}, "ascending"),
        ({"kind": FeatureKind.NUMERIC, "bin_edges": (1.0,), "proportions": (1.0,)}, "need 2"),
        ({"kind": FeatureKind.NUMERIC, "bin_edges": (1.0,), "proportions": (0.2, 0.2)}, "sum"),
        ({"kind": FeatureKind.CATEGORICAL}, "needs categories"),
    ],
)
def test_malformed_profiles_are_refused_with_the_reason(kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidProfileError, match=message):
        FeatureProfile("f", **kwargs)


def test_a_profile_round_trips_through_its_dict() -> None:
    profile = FeatureProfile(
        "score", FeatureKind.NUMERIC, (0.0, 1.0), (0.1, 0.8, 0.1), domain_min=0.0, domain_max=1.0
    )

    assert profile == FeatureProfile.from_dict(profile.to_dict())
