"""Data quality: is the canary's input (or output) data more often missing, invalid or out of
domain than allowed, and than the baseline's?

For every feature seen in either cohort (and profiled features, whose domain gives the
out-of-domain count), and for the prediction, three rates are checked once the canary has
`min_samples` observations of the field:

- missing: null or absent from an event that carries features (a prediction: none on a
  successful request), limit `max_missing_rate` (5%);
- invalid: NaN, infinity or a value of an unusable type, limit `max_invalid_rate` (1%);
- out of domain: outside the profile's [domain_min, domain_max] or `allowed` categories, among
  present values, limit `max_out_of_domain_rate` (5%).

A rate fails when both hold:

1. there is evidence that the canary's rate exceeds the limit: an anytime-valid Bernoulli test
   (`bernoulli_test`), so a rate near the limit does not fail by chance while checked
   after every event;
2. if the baseline has `min_samples` observations of the field: the canary is worse than the
   baseline by more than `baseline_margin` (absolute) and, by the share test, by more than the
   factor 1 + `baseline_tolerance`. A feature that is just as often missing in the baseline is a
   property of production traffic, not of the canary, and does not block it.

alpha is split (Bonferroni) across every rate tested, so the detector as a whole keeps alpha.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from controller.core.detectors.base import (
    EvaluationContext,
    JudgedFromData,
    Params,
    ParamsBase,
    check_alpha,
    check_positive,
    check_share,
    number,
    parse_params,
    percent,
)
from controller.core.stats.cohort import PREDICTION, CohortStats
from controller.core.stats.profile import FeatureProfile
from controller.core.stats.quality import FieldQuality
from controller.core.stats.sequential import (
    DEFAULT_ODDS_RATIOS,
    bernoulli_test,
    share_test,
    split_alpha,
)
from controller.core.verdict import EvidenceValue, Verdict

NAME = "data_quality"
MAX_LISTED = 5


class Problem(Enum):
    """The kinds of bad value, each with its count and the observations it is a share of."""

    MISSING = "missing"
    INVALID = "invalid"
    OUT_OF_DOMAIN = "out_of_domain"

    def count(self, quality: FieldQuality) -> int:
        if self is Problem.MISSING:
            return quality.missing
        if self is Problem.INVALID:
            return quality.invalid
        return quality.out_of_domain

    def trials(self, quality: FieldQuality) -> int:
        """Out-of-domain is a share of present values; the others of every observation."""
        return quality.present if self is Problem.OUT_OF_DOMAIN else quality.total

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


@dataclass(frozen=True)
class DataQualityParams(ParamsBase):
    alpha: float = 0.01
    max_missing_rate: float = 0.05
    max_invalid_rate: float = 0.01
    max_out_of_domain_rate: float = 0.05
    baseline_margin: float = 0.02
    baseline_tolerance: float = 0.5
    min_samples: int = 200
    check_prediction: bool = True

    def limit(self, problem: Problem) -> float:
        return {
            Problem.MISSING: self.max_missing_rate,
            Problem.INVALID: self.max_invalid_rate,
            Problem.OUT_OF_DOMAIN: self.max_out_of_domain_rate,
        }[problem]

    def check(self) -> list[str]:
        problems = check_alpha(self.alpha) + check_share(
            max_missing_rate=self.max_missing_rate,
            max_invalid_rate=self.max_invalid_rate,
            max_out_of_domain_rate=self.max_out_of_domain_rate,
            baseline_margin=self.baseline_margin,
        )
        if self.baseline_tolerance < 0:
            problems.append(
                f"baseline_tolerance must not be negative, got {self.baseline_tolerance}"
            )
        return problems + check_positive(min_samples=self.min_samples)


@dataclass(frozen=True)
class Finding:
    """One rate of one field that fails."""

    field: str
    problem: Problem
    count: int
    trials: int
    limit: float
    e_value: float
    baseline_rate: float | None

    @property
    def rate(self) -> float:
        return self.count / self.trials

    def describe(self) -> str:
        versus = "" if self.baseline_rate is None else f" vs {percent(self.baseline_rate)} baseline"
        return (
            f"{self.field} {self.problem.label} in {percent(self.rate)} "
            f"({self.count}/{self.trials}){versus}, limit {percent(self.limit)} "
            f"(e-value {number(self.e_value)})"
        )


def _qualities(
    stats: CohortStats, profiles: Mapping[str, FeatureProfile], check_prediction: bool
) -> dict[str, FieldQuality]:
    names = set(stats.quality) | set(stats.features)
    result = {name: stats.field_quality(name, profiles.get(name)) for name in names}
    if check_prediction and stats.prediction_quality.total:
        result[PREDICTION] = stats.prediction_quality
    return result


def judge_data_quality(
    baseline: CohortStats,
    canary: CohortStats,
    context: EvaluationContext,
    params: DataQualityParams,
) -> Verdict:
    profiles = context.training_profile
    canary_q = _qualities(canary, profiles, params.check_prediction)
    baseline_q = _qualities(baseline, profiles, params.check_prediction)
    evidence: dict[str, EvidenceValue] = {"min_samples": params.min_samples, "alpha": params.alpha}
    ready = {n: q for n, q in canary_q.items() if q.total >= params.min_samples}
    if not ready:
        reason = (
            f"no field has {params.min_samples} canary observations yet"
            if canary_q
            else "no features or predictions recorded"
        )
        return Verdict.no_data(NAME, reason, evidence)
    tests = [(n, p) for n in sorted(ready) for p in Problem if p.trials(ready[n]) > 0]
    alpha = split_alpha(params.alpha, max(len(tests), 1))
    findings: list[Finding] = []
    for name, problem in tests:
        mine = ready[name]
        count, trials, limit = problem.count(mine), problem.trials(mine), params.limit(problem)
        evidence[f"{name}.{problem.value}_rate"] = count / trials
        if count == 0:
            continue
        over = bernoulli_test(count, trials, limit, alpha, DEFAULT_ODDS_RATIOS)
        if not over.rejects:
            continue
        theirs = baseline_q.get(name)
        baseline_rate = None
        if theirs is not None and theirs.total >= params.min_samples:
            b_count, b_trials = problem.count(theirs), problem.trials(theirs)
            baseline_rate = b_count / b_trials if b_trials else 0.0
            evidence[f"{name}.baseline_{problem.value}_rate"] = baseline_rate
            if count / trials <= baseline_rate + params.baseline_margin:
                continue
            worse = share_test(count, trials, b_count, b_trials, params.baseline_tolerance, alpha)
            if not worse.rejects:
                continue
        findings.append(Finding(name, problem, count, trials, limit, over.e_value, baseline_rate))
    evidence["rates_tested"] = len(tests)
    if findings:
        findings.sort(key=lambda f: -f.rate / f.limit)
        listed = "; ".join(f.describe() for f in findings[:MAX_LISTED])
        more = f" and {len(findings) - MAX_LISTED} more" if len(findings) > MAX_LISTED else ""
        return Verdict.failed(NAME, f"canary data quality: {listed}{more}", evidence)
    waiting = sorted(set(canary_q) - set(ready))
    note = (
        f"; {len(waiting)} fields still below {params.min_samples} observations" if waiting else ""
    )
    reason = (
        f"{len(ready)} fields within limits (missing <= {percent(params.max_missing_rate)}, "
        f"invalid <= {percent(params.max_invalid_rate)}, out of domain <= "
        f"{percent(params.max_out_of_domain_rate)}, or no worse than baseline){note}"
    )
    evidence["threshold"] = 1.0 / alpha
    return Verdict.passed(NAME, reason, evidence)


@dataclass(frozen=True)
class DataQuality(JudgedFromData):
    """The `data_quality` detector (see the module docstring)."""

    params: DataQualityParams = DataQualityParams()
    name: ClassVar[str] = NAME

    @classmethod
    def from_params(cls, params: Params | None = None) -> DataQuality:
        return cls(parse_params(DataQualityParams, NAME, params))

    def spends_alpha(self) -> bool:
        """Yes: anytime-valid tests, `alpha` split over every rate tested."""
        return True

    def evaluate(
        self, baseline: CohortStats, canary: CohortStats, context: EvaluationContext
    ) -> Verdict:
        return judge_data_quality(baseline, canary, context, self.params)
