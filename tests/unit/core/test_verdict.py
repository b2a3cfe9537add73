"""Verdicts carry reasons and evidence, and fold along an explicit worst-of order."""

from __future__ import annotations

import json

import pytest

from controller.core.verdict import NO_RULES, ORDER, Outcome, Verdict, worst


def test_the_order_runs_from_pass_to_fail() -> None:
    assert ORDER == (Outcome.PASS, Outcome.NO_DATA, Outcome.INCONCLUSIVE, Outcome.FAIL)
    assert Outcome.FAIL.is_worse_than(Outcome.INCONCLUSIVE)
    assert Outcome.NO_DATA.is_worse_than(Outcome.PASS)
    assert not Outcome.PASS.is_worse_than(Outcome.PASS)


def test_worst_picks_the_most_severe_verdict() -> None:
    verdicts = [
        Verdict.passed("latency", "fine"),
        Verdict.failed("error_rate", "canary error rate 9.0% vs 1.0%"),
        Verdict.no_data("prediction_skew", "too few predictions"),
    ]

    assert verdicts[1] == worst(verdicts)


def test_worst_keeps_the_first_of_equally_severe_verdicts() -> None:
    first, second = Verdict.inconclusive("a", "one"), Verdict.inconclusive("b", "two")

    assert first == worst([Verdict.passed("c", "ok"), first, second])


def test_nothing_judged_is_no_data_not_a_pass() -> None:
    verdict = worst([])

    assert Outcome.NO_DATA == verdict.outcome
    assert NO_RULES == verdict.reason


@pytest.mark.parametrize("outcome", list(Outcome))
def test_a_verdict_survives_a_json_round_trip(outcome: Outcome) -> None:
    verdict = Verdict("latency", outcome, "canary p99 412 ms vs baseline 201 ms", {"ratio": 2.05})

    assert verdict == Verdict.from_dict(json.loads(json.dumps(verdict.to_dict())))


def test_non_finite_evidence_is_kept_as_its_name_so_it_stays_json() -> None:
    verdict = Verdict.failed("latency", "baseline p99 is 0 ms", {"ratio": float("inf")})

    assert {"ratio": "inf"} == verdict.evidence
    assert '"inf"' in json.dumps(verdict.to_dict(), allow_nan=False)


def test_a_verdict_is_hashable_despite_its_evidence_mapping() -> None:
    verdict = Verdict.passed("outage", "fine", {"silence_s": 0.5})

    assert hash(verdict) == hash(Verdict.passed("outage", "fine", {"silence_s": 0.5}))


def test_renamed_carries_the_rule_name() -> None:
    verdict = Verdict.failed("latency", "slow", {"x": 1}).renamed("p99-guard")

    assert "p99-guard" == verdict.detector
    assert Outcome.FAIL == verdict.outcome
