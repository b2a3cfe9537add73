"""Anytime-valid tests: safe to check after every event, for as long as the rollout runs.

The building block is a one-sided test on a Bernoulli rate, H0: rate <= r0, with an e-value
that is a nonnegative supermartingale under H0: a mixture of likelihood ratios against
alternatives above r0,

    E_n = mean over k of (r_k / r0)^x ((1 - r_k) / (1 - r0))^(n - x),
    odds(r_k) = odds(r0) * odds_ratio_k,

with x events in n trials. Each component has expectation <= 1 per trial whenever the true rate
is <= r0, so by Ville's inequality P(E_n ever reaches 1/alpha) <= alpha: the false alarm rate
holds under continuous monitoring, at any sample size, with optional stopping. The grid of odds
ratios (1.5x to 20x by default) spreads power from modest to gross regressions; it only changes
power, never validity. Act on the first crossing (a rollback is terminal), since E_n can fall
again later.

`share_test` compares two cohorts without knowing either rate (the counting-process test used
for software deployments): requests are routed to the canary with share s, so among all "bad"
requests (errors, slow requests, missing features) each one is the canary's with probability
theta = s rate_c / (s rate_c + (1 - s) rate_b). H0: rate_c <= (1 + tolerance) rate_b means
odds(theta) <= (1 + tolerance) s / (1 - s), a Bernoulli test on the canary's share of the bad
requests. The rates cancel, so it works with zero baseline errors. The share s is estimated from
the request counts, a plug-in that is accurate once both cohorts have a few hundred requests.

`stratified_share_test` is `share_test` as a rollout runs it: on intervals, with restarts.

Intervals. The rollout takes a checkpoint every few seconds (and cuts where a step changes the
share: controller.core.rollout.alignment), and every interval between checkpoints is judged
against its own null share, from its own request counts: the e-value multiplies, for each
alternative, the likelihood ratios of the intervals. What that buys is a guarantee that rests
on the routing, not on the traffic. Suppose the router sends each request to the canary
independently of how the request will go, with a share that is fixed within an interval (it
may change between intervals: a step, whose switch is left out). Under H0,
given which requests of the interval failed and how many requests each cohort got, the set of
canary requests is a uniform draw, so the canary's count among the interval's bad requests is
hypergeometric, whatever made them bad: errors in runs, a burst of arrivals, latency that is
autocorrelated, an outage of a dependency both cohorts share. The hypergeometric is less
spread than the binomial (Hoeffding), so each interval's mixture likelihood ratio has
expectation <= 1 given the past, and the product is a test supermartingale. Pooled over the
rollout instead, a share that changes between steps is evidence by itself (Simpson): an
outage both cohorts share during a 50 % step, after a 5 % one, gives the canary far more of
the errors than its share over both.

What it does not cover: bad requests that depend on the cohort beyond the version (a canary
that is one pod, when that pod's node fails, is a canary fault to this test), and routing that
is sticky by user or session when outcomes cluster by user (the unit of randomization is then
the user: count users, or route per request).

Restarts. A cumulative e-value carries the canary's healthy history: every healthy error pulls
the alternatives down, so a regression that starts after ten healthy minutes needs minutes of
evidence to climb out of the hole. Restarting the test at checkpoints (k = 1, 2, ...) and
averaging the restarted e-values with weights fixed in advance,

    E_t = w_0 E_t(from the start) + sum over k of w_k E_t(from checkpoint k),
    w_0 = 1/2, w_k = 1 / (2 k (k + 1)), so that sum w = 1,

keeps Ville's inequality: each restarted e-value is a test supermartingale that is 1 until its
checkpoint (a stopping time: it depends on the past only), a weighted average of them is one too,
and dropping terms (old checkpoints the caller no longer keeps) only lowers it. A fault that
starts just before checkpoint k is judged on its own data at the price of ln(1 / w_k) in
evidence (4.4 nats at k = 6) instead of the whole healthy history (the shift-detection
"e-detector" idea, with a fixed budget instead of an average run length). The rollout keeps
its newest checkpoints only; the test "from the start" then treats everything before the
oldest kept checkpoint as one interval.

`split_alpha` is the significance budget: give each of n rules alpha / n (Bonferroni) and the
chance that any of them falsely fails during the rollout stays <= alpha.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Alternatives, as odds ratios over the null rate, that the mixture e-value averages over.
DEFAULT_ODDS_RATIOS: tuple[float, ...] = (1.5, 2.0, 3.0, 5.0, 10.0, 20.0)

_MAX_LOG = 700.0  # exp(700) is near the float maximum


def split_alpha(total_alpha: float, n_rules: int) -> float:
    """The per-rule significance level that keeps the overall false failure rate <= total_alpha.

    Bonferroni: P(any of n rules fails falsely) <= sum of their levels = total_alpha. Valid
    whatever the dependence between rules, and with anytime-valid rules it holds over the whole
    rollout.
    """
    if not 0.0 < total_alpha < 1.0:
        raise ValueError(f"total_alpha must be in (0, 1), got {total_alpha}")
    if n_rules < 1:
        raise ValueError(f"n_rules must be at least 1, got {n_rules}")
    return total_alpha / n_rules


def log_e_value(
    events: int,
    trials: int,
    null_rate: float,
    odds_ratios: Sequence[float] = DEFAULT_ODDS_RATIOS,
) -> float:
    """Log of the mixture e-value against H0: rate <= null_rate, after `events` in `trials`.

    0 (an e-value of 1, no evidence) when there are no trials or the null rate leaves no room
    above it.
    """
    if events < 0 or trials < events:
        raise ValueError(f"need 0 <= events <= trials, got {events} of {trials}")
    if trials == 0 or not 0.0 < null_rate < 1.0:
        return 0.0
    # With odds(alt) = r odds(null), a component's log is x ln r - n ln((1 + r o) / (1 + o)).
    null_odds = null_rate / (1.0 - null_rate)
    log_base = math.log1p(null_odds)
    logs = [
        events * math.log(ratio) - trials * (math.log1p(null_odds * ratio) - log_base)
        for ratio in odds_ratios
    ]
    top = max(logs)
    return top + math.log(math.fsum([math.exp(x - top) for x in logs]) / len(logs))


@dataclass(frozen=True)
class SequentialTest:
    """The state of one anytime-valid test: fail when `e_value >= threshold` (= 1 / alpha).

    `since` is the checkpoint whose restarted e-value weighs most (change-point tests; None
    for the test from the start)."""

    e_value: float
    log_e_value: float
    threshold: float
    null_rate: float
    events: int
    trials: int
    since: Restart | None = None

    @property
    def rejects(self) -> bool:
        return self.log_e_value >= math.log(self.threshold)


def bernoulli_test(
    events: int,
    trials: int,
    null_rate: float,
    alpha: float,
    odds_ratios: Sequence[float] = DEFAULT_ODDS_RATIOS,
) -> SequentialTest:
    """Test H0: rate <= null_rate (e.g. "the canary error rate is at most 5%")."""
    log_e = log_e_value(events, trials, null_rate, odds_ratios)
    return SequentialTest(
        e_value=math.exp(min(log_e, _MAX_LOG)),
        log_e_value=log_e,
        threshold=1.0 / alpha,
        null_rate=null_rate,
        events=events,
        trials=trials,
    )


@dataclass(frozen=True)
class Counts:
    """What a share test reads: bad requests ("events") and requests of each cohort."""

    canary_events: int
    canary_trials: int
    baseline_events: int
    baseline_trials: int

    def __post_init__(self) -> None:
        if min(self.canary_events, self.baseline_events) < 0 or (
            self.canary_events > self.canary_trials or self.baseline_events > self.baseline_trials
        ):
            raise ValueError(f"need 0 <= events <= trials in both cohorts, got {self}")

    def since(self, earlier: Counts) -> Counts:
        """The counts added after `earlier` (an error if `earlier` is not of this stream)."""
        return Counts(
            self.canary_events - earlier.canary_events,
            self.canary_trials - earlier.canary_trials,
            self.baseline_events - earlier.baseline_events,
            self.baseline_trials - earlier.baseline_trials,
        )

    def to_list(self) -> list[int]:
        return [self.canary_events, self.canary_trials, self.baseline_events, self.baseline_trials]

    @classmethod
    def from_list(cls, data: Sequence[Any]) -> Counts:
        ce, ct, be, bt = (int(x) for x in data)
        return cls(ce, ct, be, bt)


@dataclass(frozen=True)
class Restart:
    """The counts since the `index`-th checkpoint (from 1), taken at `at` on the caller's
    clock: the strongest restarted e-value of `stratified_share_test`."""

    index: int
    at: float
    counts: Counts

    def __post_init__(self) -> None:
        if self.index < 1:
            raise ValueError(f"checkpoint indices start at 1, got {self.index}")


def restart_weight(index: int) -> float:
    """The prior weight of the e-value restarted at checkpoint `index` (0: from the start)."""
    if index < 0:
        raise ValueError(f"index must not be negative, got {index}")
    return 0.5 if index == 0 else 0.5 / (index * (index + 1))


def null_share(canary_trials: int, baseline_trials: int, tolerance: float) -> float:
    """The canary's largest share of bad requests under H0: rate_c <= (1 + tolerance) rate_b."""
    if canary_trials <= 0 or baseline_trials <= 0:
        return 1.0
    odds = (1.0 + tolerance) * canary_trials / baseline_trials
    return odds / (1.0 + odds)


def share_test(
    canary_events: int,
    canary_trials: int,
    baseline_events: int,
    baseline_trials: int,
    tolerance: float,
    alpha: float,
    odds_ratios: Sequence[float] = DEFAULT_ODDS_RATIOS,
) -> SequentialTest:
    """Test H0: canary rate <= (1 + tolerance) * baseline rate, from counts of both cohorts.

    `events` / `trials` of the result are the canary's bad requests among all bad requests.
    """
    if tolerance < 0.0:
        raise ValueError(f"tolerance must not be negative, got {tolerance}")
    share = null_share(canary_trials, baseline_trials, tolerance)
    return bernoulli_test(canary_events, canary_events + baseline_events, share, alpha, odds_ratios)


@dataclass(frozen=True)
class Interval:
    """The counts of one stretch of a rollout: from checkpoint `index` (0: the start of the
    rollout, `at` None) to the next checkpoint, or to now for the last one."""

    index: int
    at: float | None
    counts: Counts

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"interval indices start at 0, got {self.index}")


def _interval_logs(c: Counts, tolerance: float, odds_ratios: Sequence[float]) -> list[float]:
    """Each alternative's log likelihood ratio on one interval, against the interval's own null
    share (0 when one cohort had no requests in it: the interval says nothing)."""
    trials = c.canary_events + c.baseline_events
    if trials == 0 or c.canary_trials <= 0 or c.baseline_trials <= 0:
        return [0.0] * len(odds_ratios)
    null_odds = (1.0 + tolerance) * c.canary_trials / c.baseline_trials
    log_base = math.log1p(null_odds)
    x = c.canary_events
    return [
        x * math.log(ratio) - trials * (math.log1p(null_odds * ratio) - log_base)
        for ratio in odds_ratios
    ]


def _log_mean_exp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(math.fsum([math.exp(v - top) for v in values]) / len(values))


def stratified_share_test(
    intervals: Sequence[Interval],
    tolerance: float,
    alpha: float,
    odds_ratios: Sequence[float] = DEFAULT_ODDS_RATIOS,
    *,
    restarts: bool = True,
) -> SequentialTest:
    """The share test over `intervals`, restarted at each checkpoint (module docstring): the
    e-value from a checkpoint multiplies, for each alternative, the likelihood ratios of the
    intervals since, each against the canary's share of the interval's requests. `intervals` run in
    order, consecutively, the last one up to now; an interval with index 0 is the start (the
    test from the start, weight 1/2); each other one starts a restart (weight
    `restart_weight(index)`). Without `restarts`, only the product over all intervals counts
    (weight 1). `events` / `trials` of the result are those of the strongest term."""
    if tolerance < 0.0:
        raise ValueError(f"tolerance must not be negative, got {tolerance}")
    if not intervals:
        return bernoulli_test(0, 0, 0.5, alpha, odds_ratios)
    logs = [_interval_logs(i.counts, tolerance, odds_ratios) for i in intervals]
    suffix = [0.0] * len(odds_ratios)
    sums: list[Counts] = []
    total = Counts(0, 0, 0, 0)
    terms: list[tuple[float, int]] = []
    for position in range(len(intervals) - 1, -1, -1):
        interval = intervals[position]
        suffix = [a + b for a, b in zip(suffix, logs[position], strict=True)]
        c = interval.counts
        total = Counts(
            total.canary_events + c.canary_events,
            total.canary_trials + c.canary_trials,
            total.baseline_events + c.baseline_events,
            total.baseline_trials + c.baseline_trials,
        )
        sums.append(total)
        if not restarts:
            if position == 0:
                terms.append((_log_mean_exp(suffix), position))
            continue
        terms.append((math.log(restart_weight(interval.index)) + _log_mean_exp(suffix), position))
    sums.reverse()
    log_e_all = _log_mean_exp([t for t, _ in terms]) + math.log(len(terms))  # log sum exp
    _, best_position = max(terms, key=lambda t: (t[0], -t[1]))
    strongest = sums[best_position]
    first = intervals[best_position]
    since = (
        None
        if first.index == 0 or first.at is None or not restarts
        else Restart(first.index, first.at, strongest)
    )
    return SequentialTest(
        e_value=math.exp(min(log_e_all, _MAX_LOG)),
        log_e_value=log_e_all,
        threshold=1.0 / alpha,
        null_rate=null_share(strongest.canary_trials, strongest.baseline_trials, tolerance),
        events=strongest.canary_events,
        trials=strongest.canary_events + strongest.baseline_events,
        since=since,
    )
