"""latency: a sequential test on slow requests, plus plain p99 rules."""

from __future__ import annotations

from controller.core.detectors import EvaluationContext, Latency
from controller.core.stats import CohortStats
from controller.core.stats.checkpoint import Checkpoint
from controller.core.verdict import Outcome, Verdict

from ..factories import lognormal_latencies, make_cohort

NOW = EvaluationContext(now=1_000.0)


def judge(baseline: CohortStats, canary: CohortStats, **params: object) -> Verdict:
    return Latency.from_params(params).evaluate(baseline, canary, NOW)  # type: ignore[arg-type]


def served(latencies: list[float]) -> CohortStats:
    return make_cohort(len(latencies), latencies=latencies)


def test_a_canary_without_latencies_is_no_data() -> None:
    verdict = judge(served(lognormal_latencies(500, seed=1)), CohortStats())

    assert Outcome.NO_DATA == verdict.outcome


def test_the_slow_request_test_waits_for_enough_baseline_samples() -> None:
    verdict = judge(served(lognormal_latencies(50, seed=1)), served(lognormal_latencies(500, 2)))

    assert Outcome.NO_DATA == verdict.outcome
    assert "50 baseline latencies, 200 needed" in verdict.reason


def test_a_canary_as_fast_as_its_baseline_passes() -> None:
    baseline = served(lognormal_latencies(5_000, seed=1))
    canary = served(lognormal_latencies(1_000, seed=2))

    verdict = judge(baseline, canary)

    assert Outcome.PASS == verdict.outcome, verdict.reason
    assert "above the baseline p50" in verdict.reason


def test_a_canary_30_percent_slower_fails() -> None:
    baseline = served(lognormal_latencies(5_000, seed=1, median_ms=100.0))
    canary = served(lognormal_latencies(500, seed=2, median_ms=130.0))

    verdict = judge(baseline, canary)

    assert Outcome.FAIL == verdict.outcome
    assert verdict.reason.startswith("canary slower: ")
    assert {"p50_e_value", "p95_e_value"} <= set(verdict.evidence)


def test_a_canary_twice_as_slow_fails_on_the_median_too() -> None:
    baseline = served(lognormal_latencies(5_000, seed=1, median_ms=100.0))
    canary = served(lognormal_latencies(500, seed=2, median_ms=200.0))

    verdict = judge(baseline, canary)

    assert Outcome.FAIL == verdict.outcome
    assert "above the baseline p50" in verdict.reason


def test_a_canary_with_a_slow_tail_fails_on_the_p95() -> None:
    baseline = served(lognormal_latencies(5_000, seed=1))
    fast = lognormal_latencies(450, seed=2)
    canary = served(fast + [v * 5 for v in lognormal_latencies(50, seed=3)])

    verdict = judge(baseline, canary)

    assert Outcome.FAIL == verdict.outcome
    assert "above the baseline p95" in verdict.reason
    assert "p50" not in verdict.reason


def test_the_ratio_rule_reads_like_the_alert() -> None:
    baseline, canary = served([201.0] * 200), served([412.0] * 200)

    verdict = judge(baseline, canary, quantiles=[], max_ratio=1.5)

    assert Outcome.FAIL == verdict.outcome
    assert "canary p99 412 ms vs baseline 201 ms, ratio 2.05 > 1.5" == verdict.reason
    assert 2.05 == round(verdict.evidence["ratio"], 2)  # type: ignore[arg-type]


def test_the_absolute_rule_compares_the_canary_quantile_with_a_limit() -> None:
    canary = served([100.0] * 195 + [412.0] * 5)

    failed = judge(served([100.0] * 200), canary, quantiles=[], max_ms=300)
    passed = judge(served([100.0] * 200), canary, quantiles=[], quantile=0.9, max_ms=300)

    assert "canary p99 412 ms > 300 ms" == failed.reason
    assert "canary p90 100 ms <= 300 ms" == passed.reason


def test_rules_wait_for_min_samples() -> None:
    verdict = judge(served([100.0] * 200), served([900.0] * 20), quantiles=[], max_ms=300)

    assert Outcome.NO_DATA == verdict.outcome


def test_a_late_slowdown_fails_on_the_restarted_test_and_says_since_when() -> None:
    """Ten fast minutes of both cohorts, then 300 canary requests at twice the latency: the
    restart at the checkpoint before them judges them alone; the test from the start (and
    `restarts: false`) sees them diluted in 12,000 fast ones."""
    history = lognormal_latencies(12_000, seed=3)
    baseline = served(lognormal_latencies(48_000, seed=4))
    canary = served(history)
    checkpoint = Checkpoint.take(60, 600.0, baseline, canary, quantiles=[0.5, 0.95])
    baseline_now = baseline.merged(served(lognormal_latencies(1_200, seed=5)))
    canary_now = canary.merged(served([2 * x for x in lognormal_latencies(300, seed=6)]))
    context = EvaluationContext(now=615.0, checkpoints=(checkpoint,))

    verdict = Latency.from_params({}).evaluate(baseline_now, canary_now, context)
    cumulative = Latency.from_params({"restarts": False}).evaluate(
        baseline_now, canary_now, context
    )

    assert Outcome.FAIL == verdict.outcome, verdict.reason
    assert "strongest over the last 15 s" in verdict.reason
    assert 600.0 == verdict.evidence["p50_since"]
    assert Outcome.PASS == cumulative.outcome, cumulative.reason


def test_a_rule_restarts_on_its_quantiles_only_when_told_to() -> None:
    assert (0.5, 0.95) == Latency.from_params({}).checkpoint_quantiles
    assert () == Latency.from_params({"restarts": False}).checkpoint_quantiles
