"""Latency: is the canary slower than its baseline?

Two kinds of rule, judged together (the worst wins):

1. A sequential test, anytime-valid like `error_rate`: for each of `quantiles` (p50 and p95 by
   default), a request is "slow" when it lands above the bucket that holds the baseline's
   quantile. The canary's share of all slow requests is tested against the share it would have
   if its slow rate were at most (1 + tolerance) times the baseline's (`share_test`). Both
   cohorts are counted on the same sketch buckets, so the counts are exact; the approximation is
   that the threshold itself is estimated from the baseline and moves a little as the baseline
   grows, which is why the test needs `min_baseline_samples` and why the tolerance should not be
   zero. alpha is split across the quantiles. Like `error_rate`, each test is stratified over
   the intervals between the rollout's checkpoints (each against its own request share, each
   above the bucket of the baseline's quantile at its checkpoint; `stratified_share_test`,
   controller.core.stats.checkpoint), and with `restarts` on (the default) it also restarts at
   the checkpoints: a slowdown that starts late is not diluted by the fast history before it.
2. Plain rules on the canary's `quantile` (p99 by default): `max_ms` (absolute) and
   `max_ratio` (relative to the baseline's same quantile), once both cohorts have
   `min_samples` latencies, e.g. "canary p99 412 ms vs baseline 201 ms, ratio 2.05 > 1.5".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from controller.core.detectors.base import (
    EvaluationContext,
    JudgedFromData,
    Params,
    ParamsBase,
    check_alpha,
    check_positive,
    combine,
    number,
    parse_params,
    percent,
    restart_note,
)
from controller.core.stats.checkpoint import slow_counts, slow_intervals
from controller.core.stats.cohort import CohortStats
from controller.core.stats.sequential import (
    DEFAULT_ODDS_RATIOS,
    split_alpha,
    stratified_share_test,
)
from controller.core.verdict import EvidenceValue, Verdict
from controller.errors import InvariantError

NAME = "latency"


@dataclass(frozen=True)
class LatencyParams(ParamsBase):
    alpha: float = 0.01
    tolerance: float = 0.2
    quantiles: tuple[float, ...] = (0.5, 0.95)
    min_samples: int = 100
    min_baseline_samples: int = 200
    quantile: float = 0.99
    max_ms: float | None = None
    max_ratio: float | None = None
    odds_ratios: tuple[float, ...] = DEFAULT_ODDS_RATIOS
    restarts: bool = True

    def check(self) -> list[str]:
        problems = check_alpha(self.alpha)
        if self.tolerance < 0:
            problems.append(f"tolerance must not be negative, got {self.tolerance}")
        if any(not 0.0 < q < 1.0 for q in self.quantiles):
            problems.append(f"quantiles must be in (0, 1), got {list(self.quantiles)}")
        if not 0.0 < self.quantile <= 1.0:
            problems.append(f"quantile must be in (0, 1], got {self.quantile}")
        problems += check_positive(
            min_samples=self.min_samples,
            min_baseline_samples=self.min_baseline_samples,
            max_ms=self.max_ms,
            max_ratio=self.max_ratio,
        )
        if not self.odds_ratios or any(r <= 1.0 for r in self.odds_ratios):
            problems.append(f"odds_ratios must all be > 1, got {list(self.odds_ratios)}")
        return problems


def quantile_name(q: float) -> str:
    """0.99 -> "p99", 0.5 -> "p50", 0.999 -> "p99.9"."""
    return f"p{round(q * 100, 3):g}"


def _ms(value: float) -> str:
    return f"{number(value)} ms"


def _slow_test(
    baseline: CohortStats,
    canary: CohortStats,
    q: float,
    alpha: float,
    params: LatencyParams,
    context: EvaluationContext,
) -> Verdict:
    name = quantile_name(q)
    bucket = baseline.latency.quantile_bucket(q)
    if bucket is None:  # the caller checked the baseline has min_baseline_samples latencies
        raise InvariantError(f"latency: the baseline's {name} has no sketch bucket")
    counts = slow_counts(baseline, canary, bucket.slot)
    slow_c, n_c = counts.canary_events, counts.canary_trials
    slow_b, n_b = counts.baseline_events, counts.baseline_trials
    test = stratified_share_test(
        slow_intervals(context.checkpoints, q, baseline, canary, bucket.slot),
        params.tolerance,
        alpha,
        params.odds_ratios,
        restarts=params.restarts,
    )
    facts: dict[str, EvidenceValue] = {
        f"{name}_threshold_ms": bucket.upper,
        f"{name}_canary_slow": slow_c,
        f"{name}_baseline_slow": slow_b,
        f"{name}_e_value": test.e_value,
        f"{name}_threshold": test.threshold,
    }
    shares = (
        f"{percent(slow_c / n_c)} of canary requests above the baseline {name} "
        f"({_ms(bucket.upper)}) vs {percent(slow_b / n_b)} of baseline requests"
    )
    since = restart_note(test, context.now, "slow requests", facts, prefix=f"{name}_")
    if test.rejects:
        reason = (
            f"canary slower: {shares}, e-value {number(test.e_value)} >= "
            f"{number(test.threshold)}{since}"
        )
        return Verdict.failed(NAME, reason, facts)
    if n_c < params.min_samples:
        reason = f"{shares}: too few canary latencies to pass ({n_c} < {params.min_samples})"
        return Verdict.no_data(NAME, reason, facts)
    reason = f"{shares}: no evidence of a slower canary (e-value {number(test.e_value)})"
    return Verdict.passed(NAME, reason, facts)


def _rules(baseline: CohortStats, canary: CohortStats, params: LatencyParams) -> list[Verdict]:
    q, name = params.quantile, quantile_name(params.quantile)
    parts: list[Verdict] = []
    if params.max_ms is None and params.max_ratio is None:
        return parts
    n_c, n_b = canary.latency.count, baseline.latency.count
    if n_c < params.min_samples:
        reason = f"{n_c} canary latencies, {params.min_samples} needed to judge its {name}"
        return [Verdict.no_data(NAME, reason)]
    canary_q = canary.latency.quantile(q)
    if canary_q is None:
        raise InvariantError(f"latency: the canary's {name} is undefined with {n_c} latencies")
    facts: dict[str, EvidenceValue] = {f"canary_{name}_ms": canary_q}
    if params.max_ms is not None:
        facts["max_ms"] = params.max_ms
        if canary_q > params.max_ms:
            reason = f"canary {name} {_ms(canary_q)} > {_ms(params.max_ms)}"
            parts.append(Verdict.failed(NAME, reason, facts))
        else:
            reason = f"canary {name} {_ms(canary_q)} <= {_ms(params.max_ms)}"
            parts.append(Verdict.passed(NAME, reason, facts))
    if params.max_ratio is not None:
        if n_b < params.min_samples:
            reason = f"{n_b} baseline latencies, {params.min_samples} needed to compare {name}"
            parts.append(Verdict.no_data(NAME, reason, facts))
            return parts
        baseline_q = baseline.latency.quantile(q)
        if baseline_q is None:
            raise InvariantError(
                f"latency: the baseline's {name} is undefined with {n_b} latencies"
            )
        ratio = canary_q / baseline_q if baseline_q > 0 else float("inf")
        facts = {**facts, f"baseline_{name}_ms": baseline_q, "ratio": ratio}
        facts["max_ratio"] = params.max_ratio
        versus = f"canary {name} {_ms(canary_q)} vs baseline {_ms(baseline_q)}, ratio {ratio:.2f}"
        if ratio > params.max_ratio:
            parts.append(Verdict.failed(NAME, f"{versus} > {params.max_ratio:g}", facts))
        else:
            parts.append(Verdict.passed(NAME, f"{versus} <= {params.max_ratio:g}", facts))
    return parts


def judge_latency(
    baseline: CohortStats,
    canary: CohortStats,
    params: LatencyParams,
    context: EvaluationContext,
) -> Verdict:
    n_c, n_b = canary.latency.count, baseline.latency.count
    evidence: dict[str, EvidenceValue] = {
        "canary_samples": n_c,
        "baseline_samples": n_b,
        "alpha": params.alpha,
        "tolerance": params.tolerance,
    }
    if n_c == 0:
        return Verdict.no_data(NAME, "no canary latencies yet", evidence)
    parts: list[Verdict] = []
    if params.quantiles:
        if n_b < params.min_baseline_samples:
            reason = (
                f"{n_b} baseline latencies, {params.min_baseline_samples} needed to set the "
                "slow-request thresholds"
            )
            parts.append(Verdict.no_data(NAME, reason))
        else:
            alpha = split_alpha(params.alpha, len(params.quantiles))
            parts += [
                _slow_test(baseline, canary, q, alpha, params, context) for q in params.quantiles
            ]
    parts += _rules(baseline, canary, params)
    return combine(NAME, parts, evidence)


@dataclass(frozen=True)
class Latency(JudgedFromData):
    """The `latency` detector (see the module docstring)."""

    params: LatencyParams = LatencyParams()
    name: ClassVar[str] = NAME

    @classmethod
    def from_params(cls, params: Params | None = None) -> Latency:
        return cls(parse_params(LatencyParams, NAME, params))

    @property
    def checkpoint_quantiles(self) -> tuple[float, ...]:
        """The quantiles whose slow requests a checkpoint records for this rule's restarts."""
        return self.params.quantiles if self.params.restarts else ()

    def spends_alpha(self) -> bool:
        """When it has slow-request tests (anytime-valid, at `alpha` split over `quantiles`);
        a rule with `quantiles: []` has only the plain p99 rules, thresholds that spend none."""
        return bool(self.params.quantiles)

    def evaluate(
        self, baseline: CohortStats, canary: CohortStats, context: EvaluationContext
    ) -> Verdict:
        return judge_latency(baseline, canary, self.params, context)

    def wake_at(
        self, baseline: CohortStats, canary: CohortStats, context: EvaluationContext
    ) -> float | None:
        """None: the outcome is a function of the latency counts and of the context's checkpoints
        (where the change-point tests restart), not of the clock; `context.now` only words
        the reason ("strongest over the last 40 s"). The rollout takes its checkpoints on its
        own clock and wakes for them itself."""
        return None
