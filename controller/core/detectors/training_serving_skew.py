"""Training-serving skew: does the traffic the canary serves look like its training data?

For each feature with a profile in `context.training_profile` (and the prediction, with
`context.prediction_profile`), the canary's serving distribution is compared with the profile
once it has `min_samples` values:

- numeric: the canary's sketch is re-binned onto the profile's edges (tails included) and the
  Jensen-Shannon divergence (bits) is compared with `js_threshold` (0.1);
- categorical: the L-infinity distance between category shares (categories missing on one side
  count as 0) is compared with `linf_threshold` (0.3).

`threshold.<feature>` parameters override the threshold of one feature. The profile is a fixed
reference, so noise comes from the canary alone: binned JS is about chi2(bins - 1) / (8 n ln 2),
~0.005 at n = 300 with 10 bins, far below the defaults. The baseline's distance to the same
profile is reported as evidence: when it is as large as the canary's, the traffic itself has
drifted from the training data (still a risk for the new model, hence not excused).

A feature whose serving values are of the other kind (strings for a numeric profile) fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from controller.core.detectors.base import (
    EvaluationContext,
    JudgedFromData,
    Params,
    ParamsBase,
    check_positive,
    parse_params,
)
from controller.core.stats.cohort import PREDICTION, CohortStats
from controller.core.stats.distance import js_divergence, l_infinity, sketch_on_edges
from controller.core.stats.distribution import ValueDistribution
from controller.core.stats.profile import FeatureProfile
from controller.core.verdict import EvidenceValue, Outcome, Verdict
from controller.errors import InvariantError

NAME = "training_serving_skew"
MAX_LISTED = 5


@dataclass(frozen=True)
class TrainingServingSkewParams(ParamsBase):
    PREFIXED: ClassVar[Mapping[str, str]] = {"thresholds": "threshold."}

    js_threshold: float = 0.1
    linf_threshold: float = 0.3
    min_samples: int = 300
    thresholds: Mapping[str, float] = field(default_factory=dict, hash=False)

    def check(self) -> list[str]:
        return check_positive(
            js_threshold=self.js_threshold,
            linf_threshold=self.linf_threshold,
            min_samples=self.min_samples,
            **{f"threshold.{k}": v for k, v in self.thresholds.items()},
        )


@dataclass(frozen=True)
class FeatureSkew:
    """The distance of one feature's serving distribution to its profile."""

    feature: str
    measure: str  # "JS" or "L-inf"
    distance: float | None  # None: not enough data, or the wrong kind of values
    threshold: float
    samples: int
    wrong_kind: bool = False
    baseline_distance: float | None = None

    @property
    def exceeded(self) -> bool:
        return self.wrong_kind or (self.distance is not None and self.distance >= self.threshold)

    def describe(self) -> str:
        if self.wrong_kind:
            return f"{self.feature} serves values of the wrong kind for its profile"
        if self.distance is None:  # only the judged and the exceeded are described
            raise InvariantError(f"{self.feature} was not judged: it has no distance to describe")
        sign = ">=" if self.exceeded else "<"
        return f"{self.feature} {self.measure} {self.distance:.3f} {sign} {self.threshold:g}"


def profile_distance(distribution: ValueDistribution, profile: FeatureProfile) -> float | None:
    """Distance of a serving distribution to a profile: JS for numbers, L-inf for categories.

    None when the distribution has no values of the profile's kind.
    """
    if profile.is_numeric:
        if distribution.numbers.is_empty():
            return None
        histogram = sketch_on_edges(distribution.numbers, profile.bin_edges)
        return js_divergence(histogram.counts, profile.proportions)
    counts = distribution.categories
    if counts.total == 0 or counts.overflowed:
        return None
    shares = counts.proportions()
    labels = sorted(set(shares) | set(profile.categories))
    return l_infinity(
        [shares.get(k, 0.0) for k in labels], [profile.categories.get(k, 0.0) for k in labels]
    )


def feature_skew(
    name: str,
    canary: ValueDistribution | None,
    baseline: ValueDistribution | None,
    profile: FeatureProfile,
    params: TrainingServingSkewParams,
) -> FeatureSkew:
    default = params.js_threshold if profile.is_numeric else params.linf_threshold
    threshold = params.thresholds.get(name, default)
    measure = "JS" if profile.is_numeric else "L-inf"
    if canary is None:
        return FeatureSkew(name, measure, None, threshold, 0)
    matching = canary.numbers.count if profile.is_numeric else canary.categories.total
    other = canary.count - matching
    if matching < params.min_samples:
        wrong_kind = other >= params.min_samples
        return FeatureSkew(name, measure, None, threshold, matching, wrong_kind=wrong_kind)
    baseline_distance = None
    if baseline is not None and baseline.count >= params.min_samples:
        baseline_distance = profile_distance(baseline, profile)
    return FeatureSkew(
        name,
        measure,
        profile_distance(canary, profile),
        threshold,
        matching,
        baseline_distance=baseline_distance,
    )


def judge_training_serving_skew(
    baseline: CohortStats,
    canary: CohortStats,
    context: EvaluationContext,
    params: TrainingServingSkewParams,
) -> Verdict:
    jobs: list[tuple[str, ValueDistribution | None, ValueDistribution | None, FeatureProfile]]
    jobs = [
        (name, canary.features.get(name), baseline.features.get(name), profile)
        for name, profile in sorted(context.training_profile.items())
    ]
    if context.prediction_profile is not None:
        jobs.append(
            (
                PREDICTION,
                canary.predictions.get(PREDICTION),
                baseline.predictions.get(PREDICTION),
                context.prediction_profile,
            )
        )
    evidence: dict[str, EvidenceValue] = {"min_samples": params.min_samples}
    if not jobs:
        return Verdict.no_data(NAME, "no training profile to compare with", evidence)
    skews = [feature_skew(n, c, b, p, params) for n, c, b, p in jobs]
    for skew in skews:
        evidence[f"{skew.feature}.samples"] = skew.samples
        if skew.distance is not None:
            evidence[f"{skew.feature}.{skew.measure.lower()}"] = skew.distance
        if skew.baseline_distance is not None:
            evidence[f"{skew.feature}.baseline_{skew.measure.lower()}"] = skew.baseline_distance
    failed = sorted(
        (s for s in skews if s.exceeded),
        key=lambda s: (not s.wrong_kind, -((s.distance or 0.0) / s.threshold)),
    )
    judged = [s for s in skews if s.distance is not None]
    if failed:
        listed = ", ".join(s.describe() for s in failed[:MAX_LISTED])
        more = f" and {len(failed) - MAX_LISTED} more" if len(failed) > MAX_LISTED else ""
        reason = f"training-serving skew in {len(failed)} of {len(skews)} fields: {listed}{more}"
        return Verdict(NAME, Outcome.FAIL, reason, evidence)
    waiting = [s.feature for s in skews if s.distance is None]
    note = ""
    if waiting:
        more = f" and {len(waiting) - MAX_LISTED} more" if len(waiting) > MAX_LISTED else ""
        note = (
            f"; not judged (fewer than {params.min_samples} canary values): "
            f"{', '.join(waiting[:MAX_LISTED])}{more}"
        )
    if not judged:
        reason = f"no field has {params.min_samples} canary values yet"
        return Verdict.no_data(NAME, reason, evidence)
    worst = max(judged, key=lambda s: (s.distance or 0.0) / s.threshold)
    reason = f"{len(judged)} fields within their thresholds (closest: {worst.describe()}){note}"
    return Verdict.passed(NAME, reason, evidence)


@dataclass(frozen=True)
class TrainingServingSkew(JudgedFromData):
    """The `training_serving_skew` detector (see the module docstring)."""

    params: TrainingServingSkewParams = TrainingServingSkewParams()
    name: ClassVar[str] = NAME

    @classmethod
    def from_params(cls, params: Params | None = None) -> TrainingServingSkew:
        return cls(parse_params(TrainingServingSkewParams, NAME, params))

    def spends_alpha(self) -> bool:
        """No: distances to a fixed profile against thresholds far beyond sampling noise."""
        return False

    def evaluate(
        self, baseline: CohortStats, canary: CohortStats, context: EvaluationContext
    ) -> Verdict:
        return judge_training_serving_skew(baseline, canary, context, self.params)
