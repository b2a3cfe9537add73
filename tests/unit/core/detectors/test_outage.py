"""outage: judged from `now`, so a silent canary fails without any new event."""

from __future__ import annotations

import math

import pytest

from controller.core.detectors import EvaluationContext, Outage
from controller.core.stats import CohortStats
from controller.core.verdict import Outcome, Verdict

from ..factories import make_cohort

#: 18 req/s to the baseline from t=0 to t=110 while the canary has 10% of traffic (2 req/s).
BASELINE = make_cohort(1_981, rate=18.0)
#: The canary answered at 2 req/s until t=100, then stopped.
CANARY = make_cohort(201, rate=2.0)


def judge(
    now: float,
    baseline: CohortStats = BASELINE,
    canary: CohortStats = CANARY,
    share: float | None = 0.1,
    started: float | None = 0.0,
    **params: object,
) -> Verdict:
    context = EvaluationContext(now=now, step_started_at=started, traffic_share=share)
    return Outage.from_params(params).evaluate(baseline, canary, context)  # type: ignore[arg-type]


def test_a_short_gap_is_normal() -> None:
    verdict = judge(now=105.0)

    assert Outcome.PASS == verdict.outcome
    assert (
        "canary silent for 5.0 s at 2.0 req/s expected: a normal gap; "
        "canary fails 0.0% of requests (0/201), below 95.0%"
    ) == verdict.reason


def test_the_same_stats_fail_once_now_passes_the_minimum_gap() -> None:
    verdict = judge(now=111.0)

    assert Outcome.FAIL == verdict.outcome
    assert verdict.reason.startswith("no canary predictions for 11.0 s while 2.0 req/s expected")
    assert 22.0 == round(verdict.evidence["expected_requests"], 6)  # type: ignore[arg-type]


def test_a_canary_that_never_answered_is_silent_since_the_step_started() -> None:
    verdict = judge(now=112.3, canary=CohortStats(), started=100.0, expected_rate=20.0)

    assert Outcome.FAIL == verdict.outcome
    assert verdict.reason.startswith("no canary predictions for 12.3 s while 20.0 req/s expected")


def test_a_gap_needs_enough_expected_requests_not_just_time() -> None:
    """At 0.5 req/s, 20 s of silence is 10 expected requests: P(silence) = e^-10 > 1e-6."""
    verdict = judge(now=120.0, expected_rate=0.5)

    assert Outcome.PASS == verdict.outcome


def test_when_the_baseline_is_silent_too_the_stream_is_quiet_not_the_canary() -> None:
    verdict = judge(now=200.0)

    assert Outcome.INCONCLUSIVE == verdict.outcome
    assert "the baseline is silent too for 90.0 s" in verdict.reason


def test_no_traffic_routed_to_the_canary_is_no_outage() -> None:
    assert Outcome.PASS == judge(now=500.0, share=0.0).outcome


def test_without_a_traffic_share_or_an_expected_rate_there_is_no_expectation() -> None:
    verdict = judge(now=500.0, share=None)

    assert Outcome.NO_DATA == verdict.outcome
    assert "traffic share unknown" in verdict.reason


def test_with_all_traffic_on_the_canary_only_an_expected_rate_sets_the_expectation() -> None:
    assert Outcome.NO_DATA == judge(now=500.0, share=1.0).outcome
    assert Outcome.FAIL == judge(now=500.0, share=1.0, expected_rate=2.0).outcome


def test_a_traffic_share_given_in_percent_is_refused() -> None:
    with pytest.raises(ValueError, match="a percent"):
        EvaluationContext(now=0.0, traffic_share=10.0)


def test_a_baseline_too_small_to_measure_its_rate_gives_no_data() -> None:
    verdict = judge(now=500.0, baseline=make_cohort(5))

    assert Outcome.NO_DATA == verdict.outcome


def test_a_canary_failing_nearly_every_request_fails() -> None:
    canary = make_cohort(60, 58, start=100.0, rate=2.0)

    verdict = judge(now=130.0, canary=canary)

    assert Outcome.FAIL == verdict.outcome
    assert "canary failing 96.7% of requests (58/60)" == verdict.reason


def test_a_few_failed_requests_are_not_an_outage() -> None:
    assert Outcome.NO_DATA != judge(now=101.0, canary=make_cohort(10, 10, start=96.0)).outcome
    assert Outcome.PASS == judge(now=101.0, canary=make_cohort(10, 10, start=96.0)).outcome


# ---- when the outcome turns with no new data: wake_at -------------------------------------


def wake_at(
    now: float,
    baseline: CohortStats = BASELINE,
    canary: CohortStats = CANARY,
    share: float | None = 0.1,
    started: float | None = 0.0,
    **params: object,
) -> float | None:
    context = EvaluationContext(now=now, step_started_at=started, traffic_share=share)
    detector = Outage.from_params(params)  # type: ignore[arg-type]
    return detector.wake_at(baseline, canary, context)


def before(t: float) -> float:
    return math.nextafter(t, -math.inf)


def test_a_silent_canary_is_due_when_its_gap_reaches_the_minimum() -> None:
    """Silent since t=100 at 2 req/s: 6.9 s make ln(1e6) expected requests, min_gap_s is 10."""
    assert 110.0 == wake_at(now=105.0)
    assert Outcome.PASS == judge(now=before(110.0)).outcome
    assert Outcome.FAIL == judge(now=110.0).outcome


def test_a_slow_canary_is_due_when_enough_requests_were_expected() -> None:
    """At 0.5 req/s, ln(1e6) = 13.8 expected requests take 27.6 s: due at the exact float."""
    busy = make_cohort(2_700, rate=18.0)  # the baseline answers until t=150

    due = wake_at(now=120.0, baseline=busy, expected_rate=0.5)

    assert due is not None
    assert 100.0 + math.log(1e6) / 0.5 == pytest.approx(due, abs=1e-9)
    assert Outcome.PASS == judge(now=before(due), baseline=busy, expected_rate=0.5).outcome
    assert Outcome.FAIL == judge(now=due, baseline=busy, expected_rate=0.5).outcome


def test_a_failing_silence_is_due_again_when_the_baseline_falls_silent_too() -> None:
    """The baseline's last event is at t=110 (18 req/s): quiet too from t=120 on."""
    assert 120.0 == wake_at(now=115.0)
    assert Outcome.FAIL == judge(now=before(120.0)).outcome
    assert Outcome.INCONCLUSIVE == judge(now=120.0).outcome


def test_a_canary_that_never_answered_is_due_from_the_step_start() -> None:
    assert 110.0 == wake_at(now=100.0, canary=CohortStats(), started=100.0, expected_rate=20.0)


@pytest.mark.parametrize(
    ("case", "kwargs"),
    [
        ("both silent: only data changes it", {"now": 200.0}),
        ("no traffic routed to the canary", {"now": 105.0, "share": 0.0}),
        ("no traffic share, no expected rate", {"now": 105.0, "share": None}),
        ("all traffic on the canary, no expected rate", {"now": 105.0, "share": 1.0}),
        ("a baseline too small for a rate", {"now": 105.0, "baseline": make_cohort(5)}),
        ("failing nearly every request", {"now": 101.0, "canary": make_cohort(60, 58)}),
        ("nothing to measure silence from", {"now": 5.0, "canary": CohortStats(), "started": None}),
    ],
)
def test_no_wake_up_when_only_new_data_can_change_the_outcome(
    case: str, kwargs: dict[str, object]
) -> None:
    now = kwargs["now"]
    assert isinstance(now, float)
    outcome = judge(**kwargs).outcome  # type: ignore[arg-type]

    assert None is wake_at(**kwargs), case  # type: ignore[arg-type]
    for later in (now + 1.0, now + 1e3, now + 1e7):
        assert outcome == judge(**{**kwargs, "now": later}).outcome, case  # type: ignore[arg-type]


def test_silence_is_measured_from_the_newest_event_received_not_only_the_counted() -> None:
    """Canary data that waits for the baseline to report as far (alignment) is not silence."""
    context = EvaluationContext(
        now=112.0, step_started_at=0.0, traffic_share=0.1, last_seen={"canary": 111.5}
    )

    verdict = Outage.from_params({}).evaluate(BASELINE, CANARY, context)

    assert Outcome.PASS == verdict.outcome
    assert "canary silent for 0.0 s" in verdict.reason  # heard as far as anything was


def test_a_silence_grows_only_while_the_other_cohort_is_heard() -> None:
    """A worker cut off from its inputs (its lane stalled in a rebalance, a broker outage)
    hears neither cohort: 30 s of clock is no silence. A dead canary beside a baseline that
    reports on is one."""
    stalled = EvaluationContext(
        now=130.0,
        step_started_at=0.0,
        traffic_share=0.1,
        last_seen={"canary": 100.0, "baseline": 100.2},
    )
    dead = EvaluationContext(
        now=130.0,
        step_started_at=0.0,
        traffic_share=0.1,
        last_seen={"canary": 100.0, "baseline": 129.5},
    )
    detector = Outage.from_params({})

    assert Outcome.PASS == detector.evaluate(BASELINE, CANARY, stalled).outcome
    assert None is detector.wake_at(BASELINE, CANARY, stalled)  # only an input turns it
    assert Outcome.FAIL == detector.evaluate(BASELINE, CANARY, dead).outcome
