"""Error rate: is the canary failing more requests than its baseline?

Anytime-valid, so it may be checked after every event: the canary's share of all errors is
tested against the share it would have if its error rate were at most (1 + tolerance) times the
baseline's (`share_test`, see controller.core.stats.sequential). It fails when the e-value
reaches 1/alpha; under H0 that happens with probability <= alpha over the whole step. Because
the test is valid at every sample size, it may fail before `min_samples`; it passes only after
(PASS means "no evidence of harm so far": a sequential test never accepts).

Sparse data is handled by the evidence, not by special cases: with 0 of 1000 baseline requests
failing, 3 errors in 100 canary requests give an e-value of about 40, short of 100 at the default
alpha of 0.01; a fourth error (230) crosses it.

The test is stratified: each interval between the rollout's checkpoints (every `checkpoint_s`
seconds, and at the cuts where a step changes the share) is judged against its own request share
(`stratified_share_test`), so errors that come in runs, bursts and outages both cohorts share
do not count against the canary, provided the router assigns requests at random (see
controller.core.stats.sequential for exactly what the guarantee assumes). A fault that starts
late in a rollout is not diluted by the healthy history before it: with `restarts` on (the
default) the test also restarts at the checkpoints (half the weight on the test from the start,
the rest spread over the restarts), and the reason says over which recent span the evidence is
strongest.

An optional absolute cap (`max_error_rate`) fails when there is evidence, by the same kind of
test, that the canary's error rate exceeds the cap; alpha is then split between the two tests.
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
    check_share,
    combine,
    number,
    parse_params,
    percent,
    restart_note,
)
from controller.core.stats.checkpoint import error_intervals
from controller.core.stats.cohort import CohortStats
from controller.core.stats.sequential import (
    DEFAULT_ODDS_RATIOS,
    bernoulli_test,
    split_alpha,
    stratified_share_test,
)
from controller.core.verdict import EvidenceValue, Verdict

NAME = "error_rate"


@dataclass(frozen=True)
class ErrorRateParams(ParamsBase):
    alpha: float = 0.01
    tolerance: float = 0.2
    min_samples: int = 100
    max_error_rate: float | None = None
    odds_ratios: tuple[float, ...] = DEFAULT_ODDS_RATIOS
    restarts: bool = True

    def check(self) -> list[str]:
        problems = check_alpha(self.alpha) + check_share(max_error_rate=self.max_error_rate)
        if self.tolerance < 0:
            problems.append(f"tolerance must not be negative, got {self.tolerance}")
        problems += check_positive(min_samples=self.min_samples)
        if not self.odds_ratios or any(r <= 1.0 for r in self.odds_ratios):
            problems.append(f"odds_ratios must all be > 1, got {list(self.odds_ratios)}")
        return problems


def _rate(errors: int, requests: int) -> str:
    return f"{percent(errors / requests if requests else 0.0)} ({errors}/{requests})"


def judge_error_rate(
    baseline: CohortStats,
    canary: CohortStats,
    params: ErrorRateParams,
    context: EvaluationContext,
) -> Verdict:
    n_c, e_c, n_b, e_b = canary.requests, canary.errors, baseline.requests, baseline.errors
    evidence = {
        "canary_requests": n_c,
        "canary_errors": e_c,
        "canary_error_rate": canary.error_rate,
        "baseline_requests": n_b,
        "baseline_errors": e_b,
        "baseline_error_rate": baseline.error_rate,
        "alpha": params.alpha,
        "min_samples": params.min_samples,
    }
    if n_c == 0:
        return Verdict.no_data(NAME, "no canary requests yet", evidence)
    enough = n_c >= params.min_samples and n_b >= params.min_samples
    n_tests = 1 if params.max_error_rate is None else 2
    alpha = split_alpha(params.alpha, n_tests)
    parts: list[Verdict] = []

    if n_b == 0:
        parts.append(Verdict.no_data(NAME, "no baseline requests to compare with"))
    else:
        test = stratified_share_test(
            error_intervals(context.checkpoints, baseline, canary),
            params.tolerance,
            alpha,
            params.odds_ratios,
            restarts=params.restarts,
        )
        facts: dict[str, EvidenceValue] = {
            "e_value": test.e_value,
            "threshold": test.threshold,
            "tolerance": params.tolerance,
            "null_share": test.null_rate,
        }
        since = restart_note(test, context.now, "errors", facts)
        versus = f"canary error rate {_rate(e_c, n_c)} vs baseline {_rate(e_b, n_b)}"
        limit = f"{1 + params.tolerance:g}x the baseline's"
        if test.rejects:
            reason = (
                f"{versus}: e-value {number(test.e_value)} >= {number(test.threshold)}, "
                f"evidence that the canary fails more than {limit}{since}"
            )
            parts.append(Verdict.failed(NAME, reason, facts))
        elif not enough:
            reason = (
                f"{versus}: too few requests to pass (canary {n_c}, baseline {n_b}, "
                f"need {params.min_samples} each)"
            )
            parts.append(Verdict.no_data(NAME, reason, facts))
        else:
            reason = (
                f"{versus}: no evidence of more than {limit} (e-value "
                f"{number(test.e_value)} < {number(test.threshold)})"
            )
            parts.append(Verdict.passed(NAME, reason, facts))

    if params.max_error_rate is not None:
        cap = params.max_error_rate
        test = bernoulli_test(e_c, n_c, cap, alpha, params.odds_ratios)
        facts = {"max_error_rate": cap, "cap_e_value": test.e_value}
        observed = f"canary error rate {_rate(e_c, n_c)}"
        if test.rejects:
            reason = (
                f"{observed} above the {percent(cap)} cap: e-value {number(test.e_value)} >= "
                f"{number(test.threshold)}"
            )
            parts.append(Verdict.failed(NAME, reason, facts))
        elif n_c < params.min_samples:
            reason = f"{observed}: too few requests to pass the {percent(cap)} cap"
            parts.append(Verdict.no_data(NAME, reason, facts))
        else:
            reason = f"{observed}: no evidence of exceeding the {percent(cap)} cap"
            parts.append(Verdict.passed(NAME, reason, facts))
    return combine(NAME, parts, evidence)


@dataclass(frozen=True)
class ErrorRate(JudgedFromData):
    """The `error_rate` detector (see the module docstring)."""

    params: ErrorRateParams = ErrorRateParams()
    name: ClassVar[str] = NAME

    @classmethod
    def from_params(cls, params: Params | None = None) -> ErrorRate:
        return cls(parse_params(ErrorRateParams, NAME, params))

    def spends_alpha(self) -> bool:
        """Yes: anytime-valid tests at `alpha` (split with the cap's test when it is set)."""
        return True

    def evaluate(
        self, baseline: CohortStats, canary: CohortStats, context: EvaluationContext
    ) -> Verdict:
        return judge_error_rate(baseline, canary, self.params, context)

    def wake_at(
        self, baseline: CohortStats, canary: CohortStats, context: EvaluationContext
    ) -> float | None:
        """None: the outcome is a function of the counts and of the context's checkpoints
        (where the change-point tests restart), not of the clock; `context.now` only words
        the reason ("strongest over the last 40 s"). The rollout takes its checkpoints on its
        own clock and wakes for them itself."""
        return None
