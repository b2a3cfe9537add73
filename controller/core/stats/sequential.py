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

`changepoint_share_test` is `share_test` for a fault that starts late. A cumulative e-value
carries the canary's healthy history: every healthy error pulls the alternatives down, so a
regression that starts after ten healthy minutes needs minutes of evidence to climb out of the
hole. Restarting the test at checkpoints (every few seconds of the caller's clock, k = 1, 2, ...)
and averaging the restarted e-values with weights fixed in advance,

    E_t = w_0 E_t(from the start) + sum over k of w_k E_t(from checkpoint k),
    w_0 = 1/2, w_k = 1 / (2 k (k + 1)), so that sum w = 1,

keeps Ville's inequality: each restarted e-value is a test supermartingale that is 1 until its
checkpoint (a stopping time: it depends on the past only), a weighted average of them is one too,
and dropping terms (old checkpoints the caller no longer keeps) only lowers it. A fault that
starts just before checkpoint k is judged on its own data at the price of ln(1 / w_k) in
evidence (4.4 nats at k = 6) instead of the whole healthy history (the shift-detection
"e-detector" idea, with a fixed budget instead of an average run length).

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
    clock: one restarted e-value of `changepoint_share_test`."""

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


def changepoint_share_test(
    counts: Counts,
    restarts: Sequence[Restart],
    tolerance: float,
    alpha: float,
    odds_ratios: Sequence[float] = DEFAULT_ODDS_RATIOS,
) -> SequentialTest:
    """`share_test` on the whole stream (`counts`) and restarted at checkpoints (the counts
    since each), weights `restart_weight` (module docstring). `events` / `trials` of the result
    are those of the strongest part: the whole stream or the restart in `since`.
    """
    if tolerance < 0.0:
        raise ValueError(f"tolerance must not be negative, got {tolerance}")

    def log_e(c: Counts) -> float:
        share = null_share(c.canary_trials, c.baseline_trials, tolerance)
        trials = c.canary_events + c.baseline_events
        return log_e_value(c.canary_events, trials, share, odds_ratios)

    terms = [math.log(restart_weight(0)) + log_e(counts)]
    best, best_term = None, terms[0]
    for restart in restarts:
        term = math.log(restart_weight(restart.index)) + log_e(restart.counts)
        terms.append(term)
        if term > best_term:
            best, best_term = restart, term
    top = max(terms)
    log_e_all = top + math.log(math.fsum([math.exp(t - top) for t in terms]))
    strongest = counts if best is None else best.counts
    return SequentialTest(
        e_value=math.exp(min(log_e_all, _MAX_LOG)),
        log_e_value=log_e_all,
        threshold=1.0 / alpha,
        null_rate=null_share(strongest.canary_trials, strongest.baseline_trials, tolerance),
        events=strongest.canary_events,
        trials=strongest.canary_events + strongest.baseline_events,
        since=best,
    )
