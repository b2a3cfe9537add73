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


def test_every_numeric_kind_is_numeric_and_only_integer_and_binary_are_discrete() -> None:
    assert [k for k in FeatureKind if k.is_numeric] == [
        FeatureKind.CONTINUOUS,
        FeatureKind.INTEGER,
        FeatureKind.BINARY,
        FeatureKind.NUMERIC,
    ]
    assert {FeatureKind.INTEGER, FeatureKind.BINARY} == {k for k in FeatureKind if k.is_discrete}


@pytest.mark.parametrize(
    ("kind", "edges", "proportions"),
    [
        (FeatureKind.CONTINUOUS, (100.0, 106.0, 112.0), (0.1, 0.3, 0.3, 0.3)),
        (FeatureKind.CONTINUOUS, (-1e-6, 0.0, 1e-6), (0.1, 0.3, 0.3, 0.3)),
        (FeatureKind.INTEGER, (100.0, 101.0, 102.0), (0.1, 0.3, 0.3, 0.3)),
        (FeatureKind.INTEGER, (0.0, 1000.0, 5000.0), (0.1, 0.3, 0.3, 0.3)),
        (FeatureKind.BINARY, (1.0,), (0.7, 0.3)),
        (FeatureKind.BINARY, (0.0, 1.0), (0.0, 0.7, 0.3)),
        (FeatureKind.NUMERIC, (100.0, 100.5, 101.0), (0.1, 0.3, 0.3, 0.3)),
    ],
)
def test_profiles_whose_edges_the_detector_honours_are_accepted(
    kind: FeatureKind, edges: tuple[float, ...], proportions: tuple[float, ...]
) -> None:
    assert kind is FeatureProfile("f", kind, edges, proportions).kind


@pytest.mark.parametrize(
    ("kind", "edges", "proportions", "message"),
    [
        (FeatureKind.CONTINUOUS, (100.0, 104.0), (0.3, 0.4, 0.3), "closer than the serving"),
        (FeatureKind.CONTINUOUS, (0.0, 1e-7), (0.3, 0.4, 0.3), "closer than the serving"),
        (FeatureKind.INTEGER, (1.0, 2.5), (0.3, 0.4, 0.3), "whole numbers"),
        (FeatureKind.INTEGER, (0.0, 2.0**54), (0.3, 0.4, 0.3), "whole numbers"),
        (FeatureKind.INTEGER, (1000.0, 1001.0, 1300.0), (0.3, 0.3, 0.1, 0.3), "span 300"),
        (FeatureKind.BINARY, (0.5,), (0.5, 0.5), r"must be \[1\] or \[0, 1\]"),
        (FeatureKind.BINARY, (0.0, 1.0, 2.0), (0.0, 0.5, 0.5, 0.0), r"must be \[1\] or"),
        (FeatureKind.BINARY, (0.0, 1.0), (0.1, 0.5, 0.4), "below 0 must be empty"),
    ],
)
def test_profiles_whose_edges_the_detector_cannot_honour_are_refused(
    kind: FeatureKind, edges: tuple[float, ...], proportions: tuple[float, ...], message: str
) -> None:
    with pytest.raises(InvalidProfileError, match=message):
        FeatureProfile("f", kind, edges, proportions)
