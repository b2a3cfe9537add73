"""Prediction skew: does the canary predict differently from its baseline on the same traffic?

Each prediction output (see `CohortStats`: "prediction", and "prediction.<class>" for class
scores) is compared once both cohorts have `min_samples` predictions of it.

Numbers: both sketches are cut into `bins` common bins (pooled quantiles), then
Jensen-Shannon divergence (bits, in [0, 1]) and PSI are computed. The rule fails at
JS >= `js_threshold` (0.1) or PSI >= `psi_threshold` (0.2, the usual "significant" level).
Classes: L-infinity distance (largest change of one class's share) >= `linf_threshold` (0.3,
Vertex AI Model Monitoring's default).

Sampling noise: two samples of one distribution still differ. For two samples of n, binned JS
is about chi2(bins - 1) / (4 n ln 2): ~0.01 on average at n = 300, 10 bins; PSI about twice
chi2 / n, which at n = 300 can pass 0.2 by chance. So a distance fails only if it is also far
beyond noise: Pearson's chi-square test on the same bins must give p < `max_p_value` (1e-6). A
real shift at the thresholds has p far below that (JS 0.1 at n = 300 is chi2 ~ 80), so the guard
costs no power where it matters and keeps a healthy canary, checked after every event, from
failing on noise. This is a fixed-sample test used sequentially; the 1e-6 level is what makes
repeated checking safe in practice (the checks are strongly correlated).

Checked by simulation with the defaults: 500 healthy rollouts of 10 minutes at 20 req/s with 10%
to the canary, judged after every event from 300 predictions per cohort on (4.5 million
checks), failed none (largest JS 0.023, PSI 0.13); with half the traffic to each cohort, PSI
reached 0.22 in 100 rollouts and the noise guard kept every one from failing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from controller.core.detectors.base import (
    EvaluationContext,
    JudgedFromData,
    Params,
    ParamsBase,
    check_positive,
    combine,
    number,
    parse_params,
)
from controller.core.stats.categorical import CategoricalCounts
from controller.core.stats.cohort import CohortStats
from controller.core.stats.distance import (
    DEFAULT_BINS,
    categorical_bins,
    chi_square_homogeneity,
    common_bins,
    js_divergence,
    l_infinity,
    psi,
)
from controller.core.stats.distribution import ValueDistribution
from controller.core.stats.sketch import QuantileSketch
from controller.core.verdict import EvidenceValue, Verdict

NAME = "prediction_skew"


@dataclass(frozen=True)
class PredictionSkewParams(ParamsBase):
    js_threshold: float = 0.1
    psi_threshold: float | None = 0.2
    linf_threshold: float = 0.3
    max_p_value: float = 1e-6
    min_samples: int = 300
    bins: int = DEFAULT_BINS

    def check(self) -> list[str]:
        problems = check_positive(
            js_threshold=self.js_threshold,
            psi_threshold=self.psi_threshold,
            linf_threshold=self.linf_threshold,
            min_samples=self.min_samples,
        )
        if not 0.0 < self.max_p_value <= 1.0:
            problems.append(f"max_p_value must be in (0, 1], got {self.max_p_value}")
        if self.bins < 2:
            problems.append(f"bins must be at least 2, got {self.bins}")
        return problems


def _p(p_value: float) -> str:
    return "p < 1e-12" if p_value < 1e-12 else f"p = {p_value:.2g}"


def compare_numbers(
    output: str, baseline: QuantileSketch, canary: QuantileSketch, params: PredictionSkewParams
) -> Verdict:
    binned = common_bins(baseline, canary, params.bins)
    js = js_divergence(binned.a, binned.b)
    stability = psi(binned.a, binned.b)
    chi = chi_square_homogeneity(binned.a, binned.b)
    facts: dict[str, EvidenceValue] = {
        f"{output}.js": js,
        f"{output}.psi": stability,
        f"{output}.p_value": chi.p_value,
        f"{output}.canary_mean": canary.mean,
        f"{output}.baseline_mean": baseline.mean,
    }
    exceeded = []
    if js >= params.js_threshold:
        exceeded.append(f"JS {js:.3f} >= {params.js_threshold:g}")
    if params.psi_threshold is not None and stability >= params.psi_threshold:
        exceeded.append(f"PSI {stability:.3f} >= {params.psi_threshold:g}")
    means = f"canary mean {number(canary.mean or 0.0)} vs baseline {number(baseline.mean or 0.0)}"
    if exceeded and chi.p_value < params.max_p_value:
        reason = (
            f"{output} distribution shifted: {', '.join(exceeded)} ({_p(chi.p_value)}), {means}"
        )
        return Verdict.failed(NAME, reason, facts)
    if exceeded:
        reason = (
            f"{output}: {', '.join(exceeded)} but within sampling noise ({_p(chi.p_value)} >= "
            f"{params.max_p_value:g}), {means}"
        )
        return Verdict.passed(NAME, reason, facts)
    reason = f"{output}: JS {js:.3f}, PSI {stability:.3f} below thresholds, {means}"
    return Verdict.passed(NAME, reason, facts)


def compare_categories(
    output: str,
    baseline: CategoricalCounts,
    canary: CategoricalCounts,
    params: PredictionSkewParams,
) -> Verdict:
    if baseline.overflowed or canary.overflowed:
        reason = f"{output}: more than {baseline.max_categories} classes, not compared"
        return Verdict.inconclusive(NAME, reason)
    binned = categorical_bins(baseline, canary)
    distance = l_infinity(binned.a, binned.b)
    js = js_divergence(binned.a, binned.b)
    chi = chi_square_homogeneity(binned.a, binned.b)
    facts: dict[str, EvidenceValue] = {
        f"{output}.linf": distance,
        f"{output}.js": js,
        f"{output}.p_value": chi.p_value,
    }
    if distance > 0:
        shares_b, shares_c = baseline.proportions(), canary.proportions()
        moved = max(binned.labels, key=lambda k: abs(shares_c.get(k, 0.0) - shares_b.get(k, 0.0)))
        most = (
            f"class {moved!r} {shares_c.get(moved, 0.0):.1%} of canary vs "
            f"{shares_b.get(moved, 0.0):.1%} of baseline predictions"
        )
    else:
        most = "same class shares"
    if distance >= params.linf_threshold and chi.p_value < params.max_p_value:
        reason = (
            f"{output} classes shifted: L-inf {distance:.3f} >= {params.linf_threshold:g} "
            f"({_p(chi.p_value)}): {most}"
        )
        return Verdict.failed(NAME, reason, facts)
    reason = f"{output}: L-inf {distance:.3f} < {params.linf_threshold:g} or within noise; {most}"
    return Verdict.passed(NAME, reason, facts)


def compare_output(
    output: str,
    baseline: ValueDistribution | None,
    canary: ValueDistribution | None,
    params: PredictionSkewParams,
) -> Verdict:
    n_b = 0 if baseline is None else baseline.count
    n_c = 0 if canary is None else canary.count
    if baseline is None or canary is None or min(n_b, n_c) < params.min_samples:
        reason = (
            f"{output}: {n_c} canary and {n_b} baseline predictions, "
            f"{params.min_samples} needed each"
        )
        return Verdict.no_data(NAME, reason)
    if baseline.is_numeric() != canary.is_numeric():
        kinds = {True: "numbers", False: "classes"}
        reason = (
            f"{output}: canary predicts {kinds[canary.is_numeric()]}, baseline predicts "
            f"{kinds[baseline.is_numeric()]}"
        )
        return Verdict.failed(NAME, reason)
    if canary.is_numeric():
        return compare_numbers(output, baseline.numbers, canary.numbers, params)
    return compare_categories(output, baseline.categories, canary.categories, params)


def judge_prediction_skew(
    baseline: CohortStats, canary: CohortStats, params: PredictionSkewParams
) -> Verdict:
    outputs = sorted(set(baseline.predictions) | set(canary.predictions))
    evidence = {"min_samples": params.min_samples, "outputs": len(outputs)}
    if not outputs:
        return Verdict.no_data(NAME, "no predictions recorded", evidence)
    parts = [
        compare_output(o, baseline.predictions.get(o), canary.predictions.get(o), params)
        for o in outputs
    ]
    return combine(NAME, parts, evidence)


@dataclass(frozen=True)
class PredictionSkew(JudgedFromData):
    """The `prediction_skew` detector (see the module docstring)."""

    params: PredictionSkewParams = PredictionSkewParams()
    name: ClassVar[str] = NAME

    @classmethod
    def from_params(cls, params: Params | None = None) -> PredictionSkew:
        return cls(parse_params(PredictionSkewParams, NAME, params))

    def spends_alpha(self) -> bool:
        """No: thresholds far beyond sampling noise (`max_p_value`, `min_samples`), not a level."""
        return False

    def evaluate(
        self, baseline: CohortStats, canary: CohortStats, context: EvaluationContext
    ) -> Verdict:
        return judge_prediction_skew(baseline, canary, self.params)
