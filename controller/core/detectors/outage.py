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

Silences are measured to what has been heard (`heard`): while the baseline should get traffic,
to the newest completion any cohort has reported (`context.last_seen`, at most `now`), so a
worker cut off from its inputs, or whose prediction lane stalls in a rebalance, sees no silence
grow; only with no baseline to hear, or before anything was reported, to the clock.

Failing: the canary fails at least `max_failure_share` of at least `min_requests` requests.

Judged from the clock: with no new data, the outcome turns when a silence gets long enough:
the canary's at max(its newest event time, step_started_at) + max(min_gap_s,
ln(1 / alpha) / rate) (PASS becomes FAIL, or INCONCLUSIVE if the baseline is silent by then),
and, once the canary is silent, the baseline's at its last event + max(min_gap_s,
ln(1 / alpha) / its rate) (FAIL becomes INCONCLUSIVE). `wake_at` gives the next of these, as
the exact float at which `evaluate` sees it; None when no silence can be judged (no traffic
routed to the canary, no rate or no start to expect requests from: only data changes that),
when the canary fails nearly every request (FAIL whatever the clock), or when both silences
have begun.
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
    earliest,
    number,
    parse_params,
    percent,
)
from controller.core.stats.cohort import CohortStats
from controller.core.verdict import EvidenceValue, Outcome, Verdict

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


@dataclass(frozen=True)
class Expectation:
    """What a silence is judged against: the canary's expected `rate` (req/s), the time it is
    silent `since`, the expected requests a silence must reach (`needed`, ln(1 / alpha)), and
    the baseline's observed rate and last event when a silence of its own can be judged (it
    should get traffic and its rate is known), else None."""

    rate: float
    since: float
    needed: float
    min_gap_s: float
    baseline_rate: float | None
    baseline_last: float | None

    def canary_silent(self, now: float) -> bool:
        return _silent(_gap(now, self.since), self.rate, self.needed, self.min_gap_s)

    def baseline_silent(self, now: float) -> bool:
        if self.baseline_rate is None or self.baseline_last is None:
            return False
        gap = _gap(now, self.baseline_last)
        return _silent(gap, self.baseline_rate, self.needed, self.min_gap_s)


def _gap(now: float, since: float) -> float:
    return max(now - since, 0.0)


def _silent(gap: float, rate: float, needed: float, min_gap_s: float) -> bool:
    """Has a Poisson stream at `rate` been silent for `gap` seconds against the odds (and for
    at least `min_gap_s`)?"""
    return rate * gap >= needed and gap >= min_gap_s


def _silent_from(since: float, rate: float, needed: float, min_gap_s: float) -> float | None:
    """The first time (an exact float) at which a stream silent since `since` counts as
    silent; None past the finite floats (a rate so low the silence never counts)."""
    if rate <= 0.0:
        return None
    return earliest(
        lambda t: _silent(_gap(t, since), rate, needed, min_gap_s),
        since + max(min_gap_s, needed / rate),
    )


def expectation(
    baseline: CohortStats, canary: CohortStats, context: EvaluationContext, params: OutageParams
) -> Expectation | Verdict:
    """What the canary's silence is judged against, or the verdict when it cannot be judged
    (PASS with no traffic routed to the canary, NO_DATA without a rate or a start)."""
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
    canary_last = _last(canary, context, "canary")
    starts = [t for t in (canary_last, context.step_started_at) if t is not None]
    if not starts:
        return Verdict.no_data(NAME, "no canary event and no step start to measure silence from")
    baseline_expected = baseline_share is None or baseline_share > 0.0
    return Expectation(
        rate=rate,
        since=max(starts),
        needed=math.log(1.0 / params.alpha),
        min_gap_s=params.min_gap_s,
        baseline_rate=observed if baseline_expected else None,
        baseline_last=_last(baseline, context, "baseline"),
    )


def _last(stats: CohortStats, context: EvaluationContext, cohort: str) -> float | None:
    """The cohort's newest event time: counted, or received and waiting to be counted."""
    times = [t for t in (stats.last_event_time, context.last_seen.get(cohort)) if t is not None]
    return max(times) if times else None


def heard(context: EvaluationContext, expect: Expectation) -> float:
    """The time silences are measured to: while the baseline should get traffic, the newest
    completion any cohort has reported (at most `now`), so a silence grows only while the
    other cohort is heard. A worker cut off from its inputs (a broker outage, its prediction
    lane stalled by a rebalance) hears neither, and no silence grows; a dead canary beside a
    live baseline is heard as silent within a report batch. With no baseline to hear (all
    traffic on the canary), the clock."""
    if expect.baseline_rate is None or not context.last_seen:
        return context.now
    return min(context.now, max(context.last_seen.values()))


def _silence(
    baseline: CohortStats, canary: CohortStats, context: EvaluationContext, params: OutageParams
) -> Verdict:
    expect = expectation(baseline, canary, context, params)
    if isinstance(expect, Verdict):
        return expect
    rate, needed = expect.rate, expect.needed
    now = heard(context, expect)
    gap = _gap(now, expect.since)
    expected = rate * gap
    facts: dict[str, EvidenceValue] = {
        "silence_s": gap,
        "expected_rate": rate,
        "expected_requests": expected,
        "needed_expected_requests": needed,
        "min_gap_s": params.min_gap_s,
    }
    silent = f"no canary predictions for {gap:.1f} s while {_per_second(rate)} expected"
    if not expect.canary_silent(now):
        reason = f"canary silent for {gap:.1f} s at {_per_second(rate)} expected: a normal gap"
        return Verdict.passed(NAME, reason, facts)
    if expect.baseline_rate is not None and expect.baseline_last is not None:
        baseline_gap = _gap(now, expect.baseline_last)
        facts["baseline_silence_s"] = baseline_gap
        if expect.baseline_silent(now):
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


def outage_wake_at(
    baseline: CohortStats, canary: CohortStats, context: EvaluationContext, params: OutageParams
) -> float | None:
    """The next time the outcome of `judge_outage` turns with no new data (see the module
    docstring), or None."""
    failing = _failing(canary, params)
    if failing is not None and failing.outcome is Outcome.FAIL:
        return None
    expect = expectation(baseline, canary, context, params)
    if isinstance(expect, Verdict):
        return None
    # silences grow with what is heard (`heard`): with the clock only up to the newest report
    limit = math.inf
    if expect.baseline_rate is not None and context.last_seen:
        limit = max(context.last_seen.values())
        if context.now >= limit:
            return None  # only an input turns the outcome now
    wake = _clock_wake(expect, context.now)
    return wake if wake is None or wake <= limit else None


def _clock_wake(expect: Expectation, now: float) -> float | None:
    """When a silence measured to the clock next turns the outcome, from `now`."""
    if not expect.canary_silent(now):
        return _silent_from(expect.since, expect.rate, expect.needed, expect.min_gap_s)
    if expect.baseline_rate is None or expect.baseline_last is None:
        return None
    if expect.baseline_silent(now):
        return None
    return _silent_from(expect.baseline_last, expect.baseline_rate, expect.needed, expect.min_gap_s)


@dataclass(frozen=True)
class Outage:
    """The `outage` detector (see the module docstring)."""

    params: OutageParams = OutageParams()
    name: ClassVar[str] = NAME
    #: A silence is judged from `context.now`: a timer can fail a canary that sends nothing.
    judged_from_clock: ClassVar[bool] = True

    @classmethod
    def from_params(cls, params: Params | None = None) -> Outage:
        return cls(parse_params(OutageParams, NAME, params))

    def spends_alpha(self) -> bool:
        """No: `alpha` is the probability of one silence, governed by its own parameters."""
        return False

    def evaluate(
        self, baseline: CohortStats, canary: CohortStats, context: EvaluationContext
    ) -> Verdict:
        return judge_outage(baseline, canary, context, self.params)

    def wake_at(
        self, baseline: CohortStats, canary: CohortStats, context: EvaluationContext
    ) -> float | None:
        """When the next silence begins to count (see the module docstring)."""
        return outage_wake_at(baseline, canary, context, self.params)
