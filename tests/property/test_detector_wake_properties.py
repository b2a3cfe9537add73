"""Invariants of the detectors judged from the clock: with no new data, a detector's outcome
stays what it is until its `wake_at`, turns exactly at it, and never turns after a None.

Followed from wake-up to wake-up, an outage verdict turns at most twice (PASS to a silence,
then FAIL to INCONCLUSIVE when the baseline falls silent too), each time at the exact float
`wake_at` returned: a tick at that time sees the change, a tick a moment before does not.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core.detectors import DETECTORS, EvaluationContext, build_detector
from controller.core.detectors.base import earliest
from controller.core.stats import CohortStats
from controller.core.stats.sequential import Counts
from controller.core.verdict import Outcome

CLOCK_DETECTORS = sorted(n for n in DETECTORS if build_detector(n).judged_from_clock)

times = st.floats(min_value=0.0, max_value=400.0)


@st.composite
def cohorts(draw: st.DrawFn, max_size: int) -> CohortStats:
    """Requests at any times (a burst, a trickle, a stop), some failed."""
    stats = CohortStats()
    for t in sorted(draw(st.lists(times, max_size=max_size))):
        ok = draw(st.booleans() | st.just(True))
        stats.observe(ok=ok, latency_ms=50.0, event_time=t, error_type=None if ok else "oom")
    return stats


strata = st.lists(
    st.tuples(
        st.integers(0, 300), st.integers(0, 300), st.integers(0, 300), st.integers(0, 300)
    ).map(lambda t: Counts(min(t[0], t[1]), t[1], min(t[2], t[3]), t[3])),
    max_size=3,
)
contexts = st.builds(
    EvaluationContext,
    now=times,
    step_started_at=st.none() | times,
    traffic_share=st.none() | st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0),
    last_seen=st.fixed_dictionaries({}, optional={"baseline": times, "canary": times}),
    label_strata=strata,
    label_seen=st.fixed_dictionaries({}, optional={"baseline": times, "canary": times}),
)
outage_params = st.fixed_dictionaries(
    {},
    optional={
        "alpha": st.floats(1e-9, 0.5),
        "min_gap_s": st.floats(0.01, 60.0),
        "expected_rate": st.floats(0.001, 100.0),
        "baseline_share": st.floats(0.0, 1.0),
        "min_baseline_requests": st.integers(1, 30),
        "min_requests": st.integers(1, 30),
        "max_failure_share": st.floats(0.5, 1.0),
    },
)
quality_params = st.fixed_dictionaries(
    {},
    optional={
        "min_pairs": st.integers(1, 400),
        "labels_late": st.sampled_from(["hold", "pass", "rollback"]),
        "label_deadline_s": st.floats(0.01, 300.0),
        "label_gap_s": st.floats(0.01, 300.0),
        "tolerance": st.floats(0.0, 1.0),
    },
)
#: The parameters of each detector judged from the clock: a new one needs its strategy here.
PARAMS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "outage": outage_params,
    "quality": quality_params,
}
configured = st.sampled_from(CLOCK_DETECTORS).flatmap(
    lambda name: st.tuples(st.just(name), PARAMS[name])
)
#: Where to look between two wake-ups: fractions of the way, and far beyond a None.
fractions = st.lists(st.floats(0.0, 1.0, exclude_min=True, exclude_max=True), max_size=5)
beyond = st.lists(st.floats(1e-6, 1e7), min_size=1, max_size=5)


def at(context: EvaluationContext, now: float) -> EvaluationContext:
    return dataclasses.replace(context, now=now)


@settings(max_examples=400, deadline=None)
@given(
    configured,
    cohorts(max_size=120),
    cohorts(max_size=40),
    contexts,
    fractions,
    beyond,
)
def test_the_outcome_holds_until_wake_at_and_turns_exactly_at_it(
    detector_params: tuple[str, dict[str, float]],
    baseline: CohortStats,
    canary: CohortStats,
    context: EvaluationContext,
    between: list[float],
    later: list[float],
) -> None:
    detector = build_detector(*detector_params)

    def outcome(now: float) -> Outcome:
        return detector.evaluate(baseline, canary, at(context, now)).outcome

    now, turns = context.now, 0
    while True:
        current = outcome(now)
        due = detector.wake_at(baseline, canary, at(context, now))
        if due is None:
            for d in later:
                assert current == outcome(now + d), f"turned at {now + d} after a None"
            break
        assert due > now
        assert current != outcome(due), f"no turn at the wake-up {due}"
        if detector.name == "outage":  # a silence only ever fails or stops judging
            assert Outcome.PASS != outcome(due)
        just_before = math.nextafter(due, -math.inf)
        if just_before > now:
            assert current == outcome(just_before), f"turned before the wake-up {due}"
        for f in between:
            t = now + f * (due - now)
            if now < t < due:
                assert current == outcome(t), f"turned at {t}, before the wake-up {due}"
        now, turns = due, turns + 1
        assert turns <= 2


@settings(max_examples=300, deadline=None)
@given(
    st.floats(-1e12, 1e12),
    st.floats(-1e6, 1e6) | st.floats(-1e12, 1e12),
)
def test_earliest_finds_the_exact_float_where_a_threshold_is_crossed(
    threshold: float, miss: float
) -> None:
    """However far the guess misses, the answer is the threshold itself (the first float at or
    above it)."""
    assert threshold == earliest(lambda t: t >= threshold, threshold + miss)


def test_earliest_says_none_when_the_condition_holds_at_no_finite_time() -> None:
    assert None is earliest(lambda t: t >= math.inf, 1.0)
    assert None is earliest(lambda t: False, 1.0)
    assert None is earliest(lambda t: t >= 0.0, math.inf)


def test_every_detector_judged_from_the_clock_has_its_parameters_drawn_here() -> None:
    assert sorted(PARAMS) == CLOCK_DETECTORS
