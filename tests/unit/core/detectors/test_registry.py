"""The registry builds detectors by name from plain parameters, and refuses what it does not
know with the list of what it does."""

from __future__ import annotations

import pytest

from controller.core.detectors import (
    DETECTORS,
    Detector,
    EvaluationContext,
    InvalidParameterError,
    UnknownDetectorError,
    build_detector,
    get_detector,
)
from controller.core.stats import CohortStats
from controller.core.verdict import Outcome
from controller.errors import RolloutError

from ..factories import make_cohort

NAMES = [
    "error_rate",
    "latency",
    "outage",
    "prediction_skew",
    "training_serving_skew",
    "data_quality",
    "quality",
    "estimated_accuracy",
]


def test_every_detector_is_registered_under_its_own_name() -> None:
    assert sorted(NAMES) == sorted(DETECTORS)
    for name in NAMES:
        assert name == build_detector(name).name


@pytest.mark.parametrize("name", NAMES)
def test_every_detector_says_no_data_about_empty_cohorts(name: str) -> None:
    context = EvaluationContext(now=0.0)

    verdict = build_detector(name).evaluate(CohortStats(), CohortStats(), context)

    assert Outcome.NO_DATA == verdict.outcome
    assert name == verdict.detector


def test_an_unknown_detector_lists_the_known_ones() -> None:
    with pytest.raises(UnknownDetectorError) as caught:
        get_detector("eror_rate")

    assert isinstance(caught.value, RolloutError)
    assert sorted(NAMES) == caught.value.known
    assert "error_rate, estimated_accuracy, latency, outage" in str(caught.value)


def test_an_unknown_parameter_lists_the_known_ones() -> None:
    with pytest.raises(InvalidParameterError, match="known parameters: alpha, max_error_rate"):
        build_detector("error_rate", {"max_errors": 3})


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("error_rate", {"alpha": "high"}, "'alpha' must be float"),
        ("error_rate", {"alpha": True}, "'alpha' must be float"),
        ("error_rate", {"alpha": 2.0}, "alpha must be in"),
        ("error_rate", {"min_samples": 2.5}, "'min_samples' must be int"),
        ("latency", {"quantiles": [0.5, 1.5]}, "quantiles must be in"),
        ("latency", {"max_ratio": -1}, "max_ratio must be positive"),
        ("prediction_skew", {"bins": 1}, "bins must be at least 2"),
        ("training_serving_skew", {"threshold.age": "x"}, "'threshold.age' must be float"),
        ("data_quality", {"check_prediction": 1}, "'check_prediction' must be bool"),
    ],
)
def test_ill_typed_or_out_of_range_parameters_fail_when_the_policy_loads(
    name: str, params: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        build_detector(name, params)  # type: ignore[arg-type]  # ill-typed on purpose


def test_parameters_take_their_wire_forms() -> None:
    latency = build_detector("latency", {"quantiles": [0.5, 0.9], "max_ms": 300, "max_ratio": None})
    skew = build_detector("training_serving_skew", {"threshold.age": 0.25, "min_samples": 100.0})

    assert (0.5, 0.9) == latency.params.quantiles  # type: ignore[attr-defined]
    assert 300.0 == latency.params.max_ms  # type: ignore[attr-defined]
    assert {"age": 0.25} == skew.params.thresholds  # type: ignore[attr-defined]
    assert 100 == skew.params.min_samples  # type: ignore[attr-defined]


# ---- what each detector says about itself --------------------------------------------------

#: name -> (spends alpha with its default parameters, judged from the clock)
CAPABILITIES = {
    "error_rate": (True, False),
    "latency": (True, False),
    "outage": (False, True),
    "prediction_skew": (False, False),
    "training_serving_skew": (False, False),
    "data_quality": (True, False),
    "quality": (True, True),
    "estimated_accuracy": (False, False),
}


@pytest.mark.parametrize("name", NAMES)
def test_every_detector_says_what_it_spends_and_whether_the_clock_judges_it(name: str) -> None:
    detector = build_detector(name)

    assert isinstance(detector, Detector)
    assert CAPABILITIES[name] == (detector.spends_alpha(), detector.judged_from_clock)


def test_a_latency_rule_with_only_plain_p99_rules_spends_no_alpha() -> None:
    assert not build_detector("latency", {"quantiles": [], "max_ratio": 1.5}).spends_alpha()
    assert build_detector("latency", {"quantiles": [0.9]}).spends_alpha()


@pytest.mark.parametrize("name", [n for n in NAMES if not CAPABILITIES[n][1]])
def test_a_detector_not_judged_from_the_clock_never_asks_to_be_woken(name: str) -> None:
    baseline = make_cohort(500, 3, start=0.0, rate=10.0)
    canary = make_cohort(50, 40, start=0.0, rate=1.0)

    for now in (0.0, 60.0, 1e9):
        context = EvaluationContext(now=now, step_started_at=0.0, traffic_share=0.1)
        assert None is build_detector(name).wake_at(baseline, canary, context)
