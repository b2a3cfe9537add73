"""Outage: has the canary stopped answering, or is it failing nearly every request?

Judged from `context.now`, so a timer can fire it while no canary event arrives at all.

Silence: while traffic is routed to the canary, canary requests should arrive at
`expected_rate` req/s (given, or the baseline's observed rate scaled by the traffic shares:
rate_b * share / baseline_share, with baseline_share = 1 - share unless given). If the canary has
been silent for `gap` seconds since its last event (or since the step started), a Poisson stream
would stay silent that long with probability exp(-rate * gap). The rule fails when that is below
`alpha` (rate * gap >= ln(1 / alpha)) and the gap is at least `min_gap_s`. alpha is a
per-silence probability: a rollout sees about as many silences as canary requests, so keep it
far below 1 / (expected canary requests); the default 1e-6 needs 13.8 expected requests.

When the baseline is silent too (by the same criterion) while it should get traffic, the whole
stream is quiet (a stalled consumer, a night without traffic): that is INCONCLUSIVE, not a canary
outage. With all traffic on the canary there is no baseline rate: give `expected_rate`.

Failing: the canary fails at least `max_failure_share` of at least `min_requests` requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from controller.core.detectors.base import (
    EvaluationContext,
    Params,
    ParamsBase,
    check_alpha,
    check_positive,
    check_share,
    combine,
    number,
    parse_params,
    percent,
)
from controller.core.stats.cohort import CohortStats
from controller.core.verdict import EvidenceValue, Verdict

NAME = "outage"


@dataclass(frozen=True)
class OutageParams(ParamsBase):
    alpha: float = 1e-6
    min_gap_s: float = 10.0
    expected_rate: float | None = None
    baseline_share: float | None = None
    min_baseline_requests: int = 20
    max_failure_share: float = 0.95
    min_requests: int = 20

    def check(self) -> list[str]:
        return (
            check_alpha(self.alpha)
            + check_positive(
                min_gap_s=self.min_gap_s,
                expected_rate=self.expected_rate,
                min_baseline_requests=self.min_baseline_requests,
                min_requests=self.min_requests,
            )
            + check_share(
                baseline_share=self.baseline_share, max_failure_share=self.max_failure_share
            )
        )


def baseline_rate(baseline: CohortStats, min_requests: int) -> float | None:
    """The baseline's observed request rate (req/s), or None with too few requests."""
    span = baseline.duration()
    if baseline.requests < max(min_requests, 2) or span <= 0.0:
        return None
    return (baseline.requests - 1) / span


def _per_second(rate: float) -> str:
    return f"{rate:.1f} req/s" if rate >= 0.1 else f"{number(rate)} req/s"


def _failing(canary: CohortStats, params: OutageParams) -> Verdict | None:
    if canary.requests < params.min_requests:
        return None
    share = canary.error_rate
    facts = {"canary_failure_share": share, "max_failure_share": params.max_failure_share}
    counts = f"{percent(share)} of requests ({canary.errors}/{canary.requests})"
    if share >= params.max_failure_share:
        return Verdict.failed(NAME, f"canary failing {counts}", facts)
    limit = percent(params.max_failure_share)
    return Verdict.passed(NAME, f"canary fails {counts}, below {limit}", facts)


def _silence(
    baseline: CohortStats, canary: CohortStats, context: EvaluationContext, params: OutageParams
) -> Verdict:
    share = context.traffic_share
    if share is not None and share <= 0.0:
        return Verdict.passed(NAME, "no traffic routed to the canary")
    observed = baseline_rate(baseline, params.min_baseline_requests)
    baseline_share = params.baseline_share
    if baseline_share is None and share is not None:
        baseline_share = 1.0 - share
    rate = params.expected_rate
    if rate is None:
        if share is None or baseline_share is None:
            return Verdict.no_data(NAME, "traffic share unknown: cannot expect a canary rate")
        if baseline_share <= 0.0:
            reason = "no traffic goes to the baseline: set expected_rate to judge canary silence"
            return Verdict.no_data(NAME, reason)
        if observed is None:
            reason = (
                f"baseline has {baseline.requests} requests, {params.min_baseline_requests} "
                "needed to expect a canary request rate"
            )
            return Verdict.no_data(NAME, reason)
        rate = observed * share / baseline_share
    starts = [t for t in (canary.last_event_time, context.step_started_at) if t is not None]
    if not starts:
        return Verdict.no_data(NAME, "no canary event and no step start to measure silence from")
    since = max(starts)
    gap = max(context.now - since, 0.0)
    expected = rate * gap
    needed = math.log(1.0 / params.alpha)
    facts: dict[str, EvidenceValue] = {
        "silence_s": gap,
        "expected_rate": rate,
        "expected_requests": expected,
        "needed_expected_requests": needed,
        "min_gap_s": params.min_gap_s,
    }
    silent = f"no canary predictions for {gap:.1f} s while {_per_second(rate)} expected"
    if expected < needed or gap < params.min_gap_s:
        reason = f"canary silent for {gap:.1f} s at {_per_second(rate)} expected: a normal gap"
        return Verdict.passed(NAME, reason, facts)
    baseline_expected = baseline_share is None or baseline_share > 0.0
    if baseline_expected and observed is not None and baseline.last_event_time is not None:
        baseline_gap = max(context.now - baseline.last_event_time, 0.0)
        facts["baseline_silence_s"] = baseline_gap
        if observed * baseline_gap >= needed and baseline_gap >= params.min_gap_s:
            reason = (
                f"{silent}, but the baseline is silent too for {baseline_gap:.1f} s: "
                "the stream is quiet, not just the canary"
            )
            return Verdict.inconclusive(NAME, reason, facts)
    return Verdict.failed(NAME, f"{silent} (P(silence) < {params.alpha:g})", facts)


def judge_outage(
    baseline: CohortStats, canary: CohortStats, context: EvaluationContext, params: OutageParams
) -> Verdict:
    parts = [_silence(baseline, canary, context, params)]
    failing = _failing(canary, params)
    if failing is not None:
        parts.append(failing)
    evidence = {"now": context.now, "traffic_share": context.traffic_share}
    return combine(NAME, parts, evidence)


@dataclass(frozen=True)
class Outage:
    """The `outage` detector (see the module docstring)."""

    params: OutageParams = OutageParams()
    name: ClassVar[str] = NAME

    @classmethod
    def from_params(cls, params: Params | None = None) -> Outage:
        return cls(parse_params(OutageParams, NAME, params))

    def evaluate(
        self, baseline: CohortStats, canary: CohortStats, context: EvaluationContext
    ) -> Verdict:
        return judge_outage(baseline, canary, context, self.params)
